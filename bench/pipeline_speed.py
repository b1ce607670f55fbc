#!/usr/bin/env python3
"""End-to-end pipeline speed against a detector-only loop over the same frames, in the same process.

    python bench/pipeline_speed.py [--frames 795] [--repeats 3]

Both loops use the config's detector (default: the shipped YOLO11n INT8 OpenVINO model). The detector-only loop runs
on frames decoded into memory beforehand; the pipeline run does everything else too (decode, detect, track, store, MOT
files). The Re-ID stage is off unless --reid: its own cost is measured by bench/reid_throughput.py.
Goal (issue #2): everything that is not detection costs under 10 % of the detector's time, measured on the frame loop
(first to last processed frame: decode, detect, track, store, outputs, events); the whole-run time with start-up
(model loading and compiling, opening the store) is printed beside it.
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
import numpy as np  # noqa: E402

from models.detector import PersonDetector  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from core.paths import REPO_ROOT  # noqa: E402
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
    ap.add_argument("--repeats", type=int, default=3,
                    help="run the two loops back to back this many times; medians of the pairs are printed")
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

    # time spent inside the detector during the pipeline run (a timing wrapper around the real method)
    spent = {"s": 0.0, "calls": 0}
    real_detect = PersonDetector.detect

    def timed_detect(self, images):
        t0 = time.perf_counter()
        try:
            return real_detect(self, images)
        finally:  # the run's first call (a warm-up, or frame 0 building the backend) precedes the frame loop's clock
            spent["calls"] += 1
            if spent["calls"] > 1:
                spent["s"] += time.perf_counter() - t0

    rows = []  # per repeat, back to back: (detector-only s, pipeline frame loop s, detect s in it, whole run s)
    for _ in range(args.repeats):
        t = time.perf_counter()
        for f in frames:
            detector.detect([f])
        det = time.perf_counter() - t
        spent["s"], spent["calls"] = 0.0, 0
        PersonDetector.detect = timed_detect
        try:
            with tempfile.TemporaryDirectory() as out:
                t = time.perf_counter()
                summary = Pipeline(run_cfg, out).run()
                e2e = time.perf_counter() - t
        finally:
            PersonDetector.detect = real_detect
        assert summary.cameras[0].frames == n, summary.table()
        rows.append((det, n / summary.cameras[0].fps, spent["s"], e2e))  # loop: first to last processed frame

    med = lambda values: float(np.median(values))  # noqa: E731
    det, loop, inside, e2e = (med([r[k] for r in rows]) for k in range(4))
    ratio = med([r[1] / r[0] for r in rows])
    rest = med([(r[1] - r[2]) / r[2] for r in rows])
    print(f"\nPipeline speed on {cam.id} ({n} frames, detector {Path(cfg.detector.weights).name}, median of "
          f"{args.repeats} back-to-back pairs)")
    print(f"{'loop':<34} {'seconds':>8} {'fps':>7} {'ratio':>7}")
    print(f"{'detector only (peer)':<34} {det:>8.2f} {n / det:>7.2f} {1.0:>7.3f}")
    label = "pipeline" + (" + Re-ID" if args.reid else " (Re-ID off)")
    print(f"{label + ', frame loop':<34} {loop:>8.2f} {n / loop:>7.2f} {ratio:>7.3f}")
    print(f"{'  of which inside the detector':<34} {inside:>8.2f}")
    print(f"{label + ', whole run':<34} {e2e:>8.2f} {n / e2e:>7.2f} {e2e / det:>7.3f}")
    for name, value in (("frame loop over the detector-only loop", (ratio - 1) * 100),
                        ("non-detection time inside the run over its detection time", rest * 100)):
        print(f"non-detection cost, {name}: {value:+.1f} % (goal < 10 %): {'OK' if value < 10 else 'OVER GOAL'}")
    print(f"whole run, start-up included (loading and compiling the models, opening the store): "
          f"{(e2e / det - 1) * 100:+.1f} %")
    print("per pair (detector only s, frame loop s): " + ", ".join(f"({r[0]:.2f}, {r[1]:.2f})" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
