#!/usr/bin/env python3
"""End-to-end pipeline speed against a detector-only loop over the same frames, in the same process.

    python bench/pipeline_speed.py [--frames 795] [--repeats 3]                 # Re-ID off
    python bench/pipeline_speed.py --reid [--int8 DIR] [--reid-threads 1] [--frames 400] [--repeats 2]

All loops use the config's detector (default: the shipped YOLO11n INT8 OpenVINO model). The detector-only loop runs
on frames decoded into memory beforehand; each pipeline run does everything else too (decode, detect, track, store,
MOT files). Without --reid the Re-ID stage is off, and the pipeline runs twice: with `run.overlap_detection: off` (the
detector's time then is a clean part of the loop's, for the goal below) and overlapped (the default). With --reid (the
config's overlap setting, on by default) every repeat runs, back to back: the detector-only
loop, the pipeline with Re-ID on and the clip schedule off (`reid.schedule.enabled: false`: a clip every
`reid.clip_every` frames of every track), with Re-ID on and the schedule on, and with --int8 DIR (an INT8 export
folder, bench/reid_int8.py) Re-ID on that model with the schedule on; the table gives each one's frames/s over the
detector-only loop's (medians over the repeats).
Goals: (issue #2, Re-ID off) everything that is not detection costs under 10 % of the detector's time, measured on the
frame loop (first to last processed frame: decode, detect, track, store, outputs, events); the whole-run time with
start-up (model loading and compiling, opening the store) is printed beside it. (issue #19, --reid) the full pipeline
with Re-ID on runs at >= 0.7x the frames/s of the detector-only loop.
"""

from __future__ import annotations

import argparse
import logging
import os
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
                    help="Re-ID on: schedule off and on side by side (off by default: bench/reid_throughput.py "
                    "measures the model's cost)")
    ap.add_argument("--int8", default=None, help="with --reid: also an INT8 export folder (reid.checkpoint)")
    ap.add_argument("--reid-threads", type=int, default=None,
                    help="with --reid: also the schedule-on run with the Re-ID model on this many threads "
                    "(reid.cpu_threads; default: the runtime's, all cores)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="run the loops back to back this many times; medians of the pairs are printed")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cfg = load_config(args.config)
    cam = cfg.cameras[0]
    frames = decode(str(cam.source), args.frames)
    n = len(frames)
    detector = PersonDetector.from_config(cfg.detector)
    detector.detect(frames[:2])  # warm-up (compiles the OpenVINO graph)

    def variant(reid: bool, schedule: bool = False, checkpoint: str | None = None, threads: int | None = None,
                overlap: str | None = None):
        data = cfg.model_dump()
        data["cameras"] = [dict(data["cameras"][0], max_frames=n)]
        data["run"]["progress"] = False
        if overlap:  # off: the detector's time is a clean part of the loop's; None: the config's (default: on)
            data["run"]["overlap_detection"] = overlap
        data["reid"]["enabled"] = reid
        data["reid"]["schedule"]["enabled"] = schedule
        if checkpoint:
            data["reid"]["checkpoint"] = checkpoint
        data["reid"]["cpu_threads"] = threads or data["reid"]["cpu_threads"]
        return type(cfg).model_validate(data)

    if not args.reid:  # the goal is measured without overlap; the default (overlapped) loop beside it
        variants = {"pipeline (Re-ID off)": variant(False, overlap="off"),
                    "pipeline (Re-ID off), overlapped": variant(False, overlap="on")}
    else:
        variants = {"Re-ID on, schedule off": variant(True, False), "Re-ID on, schedule on": variant(True, True)}
        if args.int8:
            variants["Re-ID on INT8, schedule on"] = variant(True, True, args.int8)
        if args.reid_threads:
            variants[f"Re-ID on {args.reid_threads} thr, schedule on"] = variant(True, True, None, args.reid_threads)

    # time spent inside the detector during the pipeline run (a timing wrapper around the real method), and the
    # process's CPU time (all threads) from the start of the second detector call to the end of the last one
    spent = {"s": 0.0, "calls": 0, "cpu0": 0.0, "cpu1": 0.0}
    real_detect = PersonDetector.detect

    def timed_detect(self, images):
        t0 = time.perf_counter()
        if spent["calls"] == 1:
            spent["cpu0"] = time.process_time()
        try:
            return real_detect(self, images)
        finally:  # the run's first call (a warm-up, or frame 0 building the backend) precedes the frame loop's clock
            spent["calls"] += 1
            if spent["calls"] > 1:
                spent["s"] += time.perf_counter() - t0
                spent["cpu1"] = time.process_time()

    # per repeat: detector-only s, and per variant (frame loop s, detect s in it, whole run s, clips)
    rows: list[tuple[float, dict]] = []
    for _ in range(args.repeats):
        t, cpu = time.perf_counter(), time.process_time()
        for f in frames:
            detector.detect([f])
        det = time.perf_counter() - t
        det_cpu = (time.process_time() - cpu) / n  # CPU s per frame, all threads
        runs = {}
        for label, run_cfg in variants.items():
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
            clips = (summary.reid or {}).get("processed", 0)
            cpu_per_frame = (spent["cpu1"] - spent["cpu0"]) / max(spent["calls"] - 1, 1)
            runs[label] = (n / summary.cameras[0].fps, spent["s"], e2e, clips, cpu_per_frame)  # loop: first to last
        rows.append((det, runs, det_cpu))

    med = lambda values: float(np.median(values))  # noqa: E731
    det = med([r[0] for r in rows])
    print(f"\nPipeline speed on {cam.id} ({n} frames, detector {Path(cfg.detector.weights).name}, median of "
          f"{args.repeats} back-to-back repeats)")
    print("(cpu ms/frame: the process's CPU time per frame, all threads; cpu ratio: the detector-only loop's over the "
          "run's, i.e. the fps ratio on cores the run has to itself if both loops keep them busy: less sensitive to "
          "other jobs on the machine than the wall-clock fps ratio)")
    print(f"{'loop':<40} {'seconds':>8} {'fps':>7} {'time ratio':>10} {'fps ratio':>9} {'clips':>6} "
          f"{'cpu ms/frame':>12} {'cpu ratio':>9}")
    det_cpu = med([r[2] for r in rows])
    print(f"{'detector only (peer)':<40} {det:>8.2f} {n / det:>7.2f} {1.0:>10.3f} {1.0:>9.3f} {'':>6} "
          f"{det_cpu * 1000:>12.1f} {1.0:>9.3f}")
    for label in variants:
        loop = med([r[1][label][0] for r in rows])
        ratio = med([r[1][label][0] / r[0] for r in rows])
        fps_ratio = med([r[0] / r[1][label][0] for r in rows])
        clips = int(med([r[1][label][3] for r in rows]))
        cpu = med([r[1][label][4] for r in rows])
        cpu_ratio = med([r[2] / r[1][label][4] for r in rows])
        print(f"{label + ', frame loop':<40} {loop:>8.2f} {n / loop:>7.2f} {ratio:>10.3f} {fps_ratio:>9.3f} "
              f"{clips if args.reid else '':>6} {cpu * 1000:>12.1f} {cpu_ratio:>9.3f}")
        inside = med([r[1][label][1] for r in rows])
        e2e = med([r[1][label][2] for r in rows])
        print(f"{'  of which inside the detector':<40} {inside:>8.2f}")
        print(f"{label + ', whole run':<40} {e2e:>8.2f} {n / e2e:>7.2f} {e2e / det:>10.3f} {det / e2e:>9.3f}")
    for label in variants:
        fps_ratio = med([r[0] / r[1][label][0] for r in rows])
        if variants[label].run.overlap_detection != "off" and not args.reid:  # no non-detection share then
            print(f"{label}: frames/s over the detector-only loop's {fps_ratio:.3f}")
            continue
        if args.reid:
            cpu_ratio = med([r[2] / r[1][label][4] for r in rows])
            print(f"{label}: frames/s over the detector-only loop's {fps_ratio:.3f} (goal >= 0.7): "
                  f"{'OK' if fps_ratio >= 0.7 else 'UNDER GOAL'}; by CPU time {cpu_ratio:.3f}: "
                  f"{'OK' if cpu_ratio >= 0.7 else 'UNDER GOAL'}")
            continue
        rest = med([(r[1][label][0] - r[1][label][1]) / r[1][label][1] for r in rows])
        ratio = med([r[1][label][0] / r[0] for r in rows])
        for name, value in (("frame loop over the detector-only loop", (ratio - 1) * 100),
                            ("non-detection time inside the run over its detection time", rest * 100)):
            print(f"non-detection cost, {name}: {value:+.1f} % (goal < 10 %): {'OK' if value < 10 else 'OVER GOAL'}")
    print("per repeat (detector only s; frame loop s per variant): " + "; ".join(
        f"{r[0]:.2f}: " + ", ".join(f"{r[1][label][0]:.2f}" for label in variants) for r in rows))
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
