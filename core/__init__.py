"""What `streams/`, `models/` and `pipeline/` share: the messages (`Frame`, `Detections`, `Tracks`), the name registry,
paths, devices and ground-plane geometry. `core` imports none of the three; `streams` and `models` import only `core`;
`pipeline` imports all of them. Dependencies point one way: core <- streams, models <- pipeline."""
