#!/usr/bin/env python3
"""End-to-end pipeline speed against a detector-only loop over the same frames, in the same process.

    python bench/pipeline_speed.py [--frames 795] [--repeats 2]

Both loops use the config's detector (default: the shipped YOLO11n INT8 OpenVINO model). The detector-only loop runs
on frames decoded into memory beforehand; the pipeline run does everything else too (decode, detect, track, store, MOT
files). The Re-ID stage is off unless --reid: its own cost is measured by bench/reid_throughput.py.
Goal (issue #2): everything that is not detection costs under 10 % of the detector's time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402

from models.detector import PersonDetector  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.paths import REPO_ROOT  # noqa: E402
from pipeline.runner import Pipeline  # noqa: E402


def decode(path: str, n: int) -> list:
    cap = cv2.VideoCapture(path)
    frames = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO_ROOT / "configs" / "pets09.yaml"))
    ap.add_argument("--frames", type=int, default=795)
    ap.add_argument("--reid", action="store_true",
                    help="keep the Re-ID stage on (off by default: bench/reid_throughput.py measures its cost)")
    ap.add_argument("--repeats", type=int, default=2, help="alternate the two loops this many times; best is kept")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cfg = load_config(args.config)
    cam = cfg.cameras[0]
    frames = decode(str(cam.source), args.frames)
    n = len(frames)
    detector = PersonDetector.from_config(cfg.detector)
    detector.detect(frames[:2])  # warm-up (compiles the OpenVINO graph)

    data = cfg.model_dump()
    data["cameras"] = [dict(data["cameras"][0], max_frames=n)]
    data["run"]["progress"] = False
    data["reid"]["enabled"] = args.reid  # the foundation's goal is about decode/track/store/outputs
    run_cfg = type(cfg).model_validate(data)

    det_times, e2e_times = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        for f in frames:
            detector.detect([f])
        det_times.append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            summary = Pipeline(run_cfg, out).run()
            e2e_times.append(time.perf_counter() - t)
            assert summary.cameras[0].frames == n, summary.table()

    det, e2e = min(det_times), min(e2e_times)
    print(f"\nPipeline speed on {cam.id} ({n} frames, detector {Path(cfg.detector.weights).name}, best of "
          f"{args.repeats})")
    print(f"{'loop':<28} {'seconds':>8} {'fps':>7} {'ratio':>7}")
    print(f"{'detector only (peer)':<28} {det:>8.2f} {n / det:>7.2f} {1.0:>7.3f}")
    label = "full pipeline" + (" + Re-ID" if args.reid else " (Re-ID off)")
    print(f"{label:<28} {e2e:>8.2f} {n / e2e:>7.2f} {e2e / det:>7.3f}")
    overhead = (e2e - det) / det * 100
    verdict = "OK" if overhead < 10 else "OVER GOAL"
    print(f"non-detection overhead: {overhead:+.1f} % of detector time (goal < 10 %): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
