"""Scale-out benchmark: N recorded camera streams, local engine vs Ray engine, in one run.

N = 1, 2, 4, 8 streams cycle through copies of PETS09, EPFL Terrace c0 and c1 with distinct camera ids (full
pipeline: detection, tracking, Re-ID, association, events, MOT files, store). Per engine and N it prints the
aggregate frames/s of the frame loop (all cameras' frames / time from the moment the cameras start decoding, the
local engine's readers or Ray's camera actors, to the last processed frame; model start-up and Ray actor start-up
not counted), the mean
per-camera frames/s, the Re-ID mean batch size and hand-off cost, and for Ray the driver's wait for camera
messages; then the ratio Ray / local. One local Ray cluster (`--ray-cpus`, no dashboard) serves every Ray run.

Engines: `local`, `ray` (Re-ID in one actor fed by the driver's batcher, `reid.ray_service: actor`) and `ray-serve`
(Re-ID as a Ray Serve deployment whose `@serve.batch` merges the cameras' requests, `reid.ray_service: serve`; its
mean batch is the model's, as Serve formed it). `--sources pets09`: every stream a copy of PETS09 (people in view from
frame 1 in every stream, so every camera sends clips: what batching across cameras needs to be measured); default
`mix` (Terrace's first ~70 frames are empty). `ray-detsvc`: as `ray`, with the detector as a Ray Serve deployment
(`detector.service: true`, `--det-max-batch`, `--det-max-wait-ms`): camera actors load no detector, `@serve.batch`
merges the cameras' frames; its columns give the detector's mean / largest batch and the frame hand-off cost.

    python3 bench/scale_out.py --frames 60 --streams 1 2 4 8
    python3 bench/scale_out.py --frames 60 --streams 1 8 --engines ray ray-serve --sources pets09
    python3 bench/scale_out.py --frames 60 --streams 1 4 --engines ray ray-detsvc

`--live SECONDS`: every stream a live RTSP camera instead (EPFL Terrace c1 played by the test suite's RTSP server,
tests/rtsp_server.py, each connection from the video's start, people in view from ~3 s), each run lasting SECONDS;
Re-ID then batches by time (`reid.max_wait_ms`) under every engine, not per step.

    python3 bench/scale_out.py --live 30 --streams 1 4 --engines ray ray-serve
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.paths import REPO_ROOT, shared_dir  # noqa: E402
from pipeline.config import PipelineConfig, load_config  # noqa: E402

SOURCES = [("pets09", "data/pets09_s2l1/vtest.avi", 7.0),  # first: people from frame 1, so N=1 has Re-ID clips
           ("terrace_c0", "data/epfl_terrace1/terrace1-c0.mp4", None),
           ("terrace_c1", "data/epfl_terrace1/terrace1-c1.mp4", None)]


def make_config(n: int, frames: int, engine: str, sources: str = "mix", live_url: str | None = None,
                live_s: float | None = None, max_wait_ms: float | None = None, det_batch: tuple = (16, 50.0)):
    base = load_config(REPO_ROOT / "configs" / "epfl_terrace_tracks.yaml").model_dump()
    shared = shared_dir()
    cams = []
    pool = SOURCES if sources == "mix" else SOURCES[:1]
    for i in range(n):
        name, rel, fps = pool[i % len(pool)]
        cams.append({"id": f"{name}_{i}", "source": str(shared / rel), "fps": fps, "max_frames": frames})
    if live_url:
        cams = [{"id": f"live_{i}", "source": live_url} for i in range(n)]
        base["run"]["duration_s"] = live_s
    base["cameras"] = cams
    if max_wait_ms is not None:
        base["reid"]["max_wait_ms"] = max_wait_ms
    base["association"].update(topology=[], homographies={})
    base["run"].update(progress=False, engine="local" if engine == "local" else "ray")
    if engine != "local":
        base["reid"]["ray_service"] = "serve" if engine == "ray-serve" else "actor"
    if engine == "ray-detsvc":
        base["detector"].update(service=True, max_batch=det_batch[0], max_wait_ms=det_batch[1])
    base["output"]["overwrite"] = True
    return PipelineConfig.model_validate(base)


def measure(n: int, frames: int, engine: str, out: Path, sources: str = "mix", live_url: str | None = None,
            live_s: float | None = None, max_wait_ms: float | None = None, det_batch: tuple = (16, 50.0)) -> dict:
    from pipeline.engines import build_engine

    cfg = make_config(n, frames, engine, sources, live_url, live_s, max_wait_ms, det_batch)
    t0 = time.monotonic()
    runner = build_engine(cfg, out / f"{engine}_{n}")
    summary = runner.run()
    wall = time.monotonic() - t0
    cams = summary.cameras
    firsts = [c.first_frame_time for c in cams if c.first_frame_time]
    lasts = [c.last_frame_time for c in cams if c.last_frame_time]
    total = sum(c.frames for c in cams)
    # both engines from the moment their cameras start decoding (Ray's actors decode before the driver's first step,
    # so timing from the first processed frame would leave out the local engine's first-frame latency only)
    start = runner.loop_started or min(firsts)
    span = max(lasts) - start if firsts else float("nan")
    reid = summary.reid or {}
    ray_c = summary.counters.get("ray", {})
    det = summary.counters.get("detector_service") or {}
    return {"engine": engine, "n": n, "frames": total, "span_s": span, "fps": total / span, "wall_s": wall,
            "cam_fps": sum(c.fps for c in cams) / len(cams), "batch": reid.get("mean_batch", 0.0),
            "clips": reid.get("processed", 0), "handoff_ms": reid.get("handoff_ms_per_clip", float("nan")),
            "wait_s": ray_c.get("wait_s", float("nan")), "max_batch": reid.get("max_batch", ""),
            "cross": reid.get("cross_camera_batches", ""), "batch_wait_ms": reid.get("batch_wait_ms", ""),
            "det_batch": f"{det['mean_batch']:.2f}" if det else "", "det_max": det.get("max_batch", ""),
            "det_cross": det.get("cross_camera_batches", ""), "det_dropped": det.get("dropped_frames", ""),
            "det_handoff": det.get("handoff_ms_per_frame", ""), "det_wait": det.get("batch_wait_ms", ""),
            "exit": summary.exit_code}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=60, help="frames per camera")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--engines", nargs="+", default=["local", "ray"],
                    choices=["local", "ray", "ray-serve", "ray-detsvc"])
    ap.add_argument("--det-max-batch", type=int, default=16, help="ray-detsvc: detector.max_batch (frames)")
    ap.add_argument("--det-max-wait-ms", type=float, default=50.0, help="ray-detsvc: detector.max_wait_ms")
    ap.add_argument("--sources", choices=["mix", "pets09"], default="mix",
                    help="mix: PETS09, Terrace c0, c1 in turn; pets09: every stream a PETS09 copy")
    ap.add_argument("--live", type=float, default=None, metavar="SECONDS",
                    help="live RTSP streams (Terrace c1 from the test server) for SECONDS per run")
    ap.add_argument("--max-wait-ms", type=float, default=None, help="reid.max_wait_ms (default: the config's, 50)")
    ap.add_argument("--ray-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--threads", type=int, default=None, help="torch threads in the driver (default: torch's)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"load average at start: {os.getloadavg()}, cpus {os.cpu_count()}", flush=True)
    if any(e != "local" for e in args.engines):
        import ray

        from pipeline.engines.ray_engine import ray_init_kwargs

        kw = ray_init_kwargs()
        kw["log_to_driver"] = False
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, **kw)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mcsa_scale_out_") as tmp, ExitStack() as stack:
        live_url = None
        if args.live:
            from tests.rtsp_server import RtspTestServer

            if not RtspTestServer.available():
                sys.exit("--live needs the RTSP test server's Debian packages (see tests/rtsp_server.py)")
            server = stack.enter_context(RtspTestServer(shared_dir() / "data/epfl_terrace1/terrace1-c1.mp4"))
            live_url = server.url()
        for n in args.streams:
            for engine in args.engines:
                r = measure(n, args.frames, engine, Path(tmp), args.sources, live_url, args.live, args.max_wait_ms,
                            (args.det_max_batch, args.det_max_wait_ms))
                rows.append(r)
                print(f"{engine:<6} N={n}: {r['frames']} frames, {r['fps']:.2f} frames/s, Re-ID mean batch "
                      f"{r['batch']:.2f}, exit {r['exit']}, load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"\nload average at end: {os.getloadavg()}")
    print("\n| N | engine | frames | loop s | aggregate fps | per-camera fps | Re-ID clips | mean batch | "
          "largest batch | batches across cameras | driver wait s | Re-ID hand-off ms/clip | Serve batch wait "
          "ms/request | detector mean batch | detector largest batch | detector batches across cameras | detector "
          "dropped frames | detector batch wait ms/frame | detector hand-off ms/frame | Ray/local fps |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    by = {(r["engine"], r["n"]): r for r in rows}
    for r in rows:
        ratio = (f"{r['fps'] / by[('local', r['n'])]['fps']:.2f}" if r["engine"] != "local" and ("local", r["n"]) in by
                 else "")
        print(f"| {r['n']} | {r['engine']} | {r['frames']} | {r['span_s']:.1f} | {r['fps']:.2f} | {r['cam_fps']:.2f} "
              f"| {r['clips']} | {r['batch']:.2f} | {r['max_batch']} | {r['cross']} | {r['wait_s']:.1f} "
              f"| {r['handoff_ms']:.2f} | {r['batch_wait_ms']} | {r['det_batch']} | {r['det_max']} | {r['det_cross']} "
              f"| {r['det_dropped']} | {r['det_wait']} | {r['det_handoff']} | {ratio} |")
    for engine in args.engines:
        one, many = by.get((engine, min(args.streams))), by.get((engine, max(args.streams)))
        if one and many and one["batch"]:
            print(f"{engine}: mean Re-ID batch N={many['n']} / N={one['n']}: {many['batch'] / one['batch']:.2f}x; "
                  f"aggregate fps N={many['n']} / N={one['n']}: {many['fps'] / one['fps']:.2f}x")


if __name__ == "__main__":
    main()
