"""mcsa pipeline: multi-camera person detection, tracking, re-identification and action logging."""

__version__ = "0.1.0"
