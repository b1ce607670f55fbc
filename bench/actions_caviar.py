"""Per-view action state vs CAVIAR `movement` labels: frame-level macro-F1, motion source and (optionally) the trained
Re-ID-AR action branch.

Run by hand (both OneLeaveShop1 views, 295 frames each):
    python3 bench/actions_caviar.py                                   # motion source only
    python3 bench/actions_caviar.py --checkpoint runs/osnet_shared/model_final.pth   # + model source

Per view: the CAVIAR ground-truth boxes are the detections of our tracker (`tracker.name`, default mcsa), the tracks
feed the `ActionEventStage` exactly as in a run (hysteresis, min duration, smoothing from the config defaults), and the
per-view action state of a track at a frame is the finished event covering that frame (highest mean confidence when
several do; `none` when none does). Each labelled ground-truth person-frame is matched to a track box (IoU >= 0.5,
Hungarian); unmatched person-frames count as `none`. Labels and predictions are mapped onto one vocabulary:
walking -> walking, running -> running, active / inactive -> standing (CAVIAR `active` = moving in place).
Macro-F1 averages the per-class F1 of the classes present in the labels.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import EventsConfig, ReIDStageConfig  # noqa: E402
from pipeline.events.stage import ActionEventStage  # noqa: E402
from pipeline.stages import CameraInfo, RunEnd, RunInfo  # noqa: E402
from core.paths import shared_dir  # noqa: E402
from core.types import Detections, Frame  # noqa: E402

VIEWS = {"cor": ("OneLeaveShop1cor.mpg", "cols1gt_labels_derived.csv"),
         "front": ("OneLeaveShop1front.mpg", "fols1gt_labels_derived.csv")}
TO_COMMON = {"walking": "walking", "running": "running", "active": "standing", "inactive": "standing",
             "standing": "standing"}
CLASSES = ["standing", "walking", "running"]


def load_labels(path: Path) -> dict[int, list[tuple[int, np.ndarray, str]]]:
    """frame0 -> [(person id, xyxy (4,), movement)]."""
    out: dict[int, list] = defaultdict(list)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            xc, yc, w, h = (float(r[k]) for k in ("xc", "yc", "w", "h"))
            out[int(r["frame0"])].append((int(r["id"]), np.array([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2]),
                                          r["movement"]))
    return out


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def run_view(video: Path, labels: dict, source: str, events_cfg: EventsConfig, tracker_name: str,
             checkpoint: str | None, people: set[int] | None = None) -> tuple[list[tuple[str, str]], dict]:
    """Returns [(label, prediction)] per labelled person-frame (common vocabulary) and counters."""
    from pipeline.tracking import build_tracker_from_config

    tracker = build_tracker_from_config(tracker_name, {})
    reid, names = None, None
    if source == "model":
        from pipeline.reid import ReIDStage

        reid = ReIDStage(ReIDStageConfig(checkpoint=checkpoint, max_wait_ms=0))
        if not reid.encoder.actions_trained:
            raise SystemExit(f"{checkpoint} has no trained action branch")
        names = reid.action_names
        reid.open(RunInfo(None, None, all_files=True, action_names=tuple(names)))
        reid.open_camera(CameraInfo("v", str(video)))
    sink = ActionEventStage(events_cfg.model_copy(update={"source": source, "jsonl": False}), keep_events=True)
    sink.open(RunInfo(None, None, action_names=tuple(names or ())))
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    track_boxes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    k = 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frame = Frame("v", k, k / fps, image)
        gt = labels.get(k, [])
        dets = Detections(np.array([g[1] for g in gt]).reshape(-1, 4), np.ones(len(gt)), np.zeros(len(gt)))
        tracks = tracker.update(dets, image)
        if reid is not None:
            reid.on_frame(frame, tracks)
            reid.results_now()  # wait for this frame's clips: deterministic
            tracks.action_probs = reid.appearances["v"].action_probs_for(tracks.track_ids, len(names))
        sink.on_frame(frame, tracks)
        track_boxes[k] = (tracks.track_ids.copy(), tracks.xyxy.copy())
        k += 1
    cap.release()
    sink.close(RunEnd("completed"))
    if reid is not None:
        reid.close(RunEnd("completed"))
    spans: dict[int, list] = defaultdict(list)
    for e in sink.events:
        spans[e.track_id].append(e)
    pairs = []
    matched = 0
    for f, gt in labels.items():
        ids, boxes = track_boxes.get(f, (np.zeros(0, np.int64), np.zeros((0, 4))))
        pred_of = {}
        if len(gt) and len(ids):
            m = iou(np.array([g[1] for g in gt]), boxes)
            rows, cols = linear_sum_assignment(-m)
            pred_of = {r: int(ids[c]) for r, c in zip(rows, cols) if m[r, c] >= 0.5}
        for j, (pid, _box, movement) in enumerate(gt):
            label = TO_COMMON.get(movement)
            if label is None or (people is not None and pid not in people):
                continue
            pred = "none"
            if j in pred_of:
                matched += 1
                cover = [e for e in spans[pred_of[j]] if e.start_frame <= f <= e.end_frame]
                if cover:
                    pred = TO_COMMON.get(max(cover, key=lambda e: e.mean_conf).action, "none")
            pairs.append((label, pred))
    return pairs, dict(frames=k, events=len(sink.events), matched=matched, labelled=len(pairs))


def f1_table(pairs: list[tuple[str, str]]) -> tuple[dict[str, float], float]:
    present = [c for c in CLASSES if any(lab == c for lab, _ in pairs)]
    per = {}
    for c in CLASSES:
        tp = sum(1 for lab, p in pairs if lab == c and p == c)
        fp = sum(1 for lab, p in pairs if lab != c and p == c)
        fn = sum(1 for lab, p in pairs if lab == c and p != c)
        per[c] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    macro = float(np.mean([per[c] for c in present])) if present else float("nan")
    return per, macro


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="CAVIAR folder (default ${SHARED}/data/caviar_oneleaveshop1)")
    ap.add_argument("--checkpoint", default=None, help="Re-ID-AR checkpoint with a trained action branch")
    ap.add_argument("--tracker", default="mcsa")
    ap.add_argument("--people", action="append", default=[], metavar="VIEW=ID,ID",
                    help="score only these people (CSV ids), e.g. the ids held out of the checkpoint's training: "
                         "--people cor=3,5 --people front=2 (configs/reid_ar_osnet_shared.yaml holds out MOT ids "
                         "4,6 and 3 = CSV ids + 1)")
    args = ap.parse_args()
    people = {v: {int(i) for i in ids.split(",")} for v, _, ids in (p.partition("=") for p in args.people)}
    data = args.data or shared_dir() / "data" / "caviar_oneleaveshop1"
    if not data.is_dir():
        print(f"CAVIAR data not found at {data}")
        return 2
    cfg = EventsConfig()
    sources = ["motion"] + (["model"] if args.checkpoint else [])
    results = []
    for source in sources:
        all_pairs = []
        for view, (video, labels_csv) in VIEWS.items():
            t0 = time.perf_counter()
            if people and view not in people:
                continue
            pairs, info = run_view(data / video, load_labels(data / labels_csv), source, cfg, args.tracker,
                                   args.checkpoint, people.get(view))
            per, macro = f1_table(pairs)
            results.append((source, view, per, macro, info, time.perf_counter() - t0))
            all_pairs += pairs
        per, macro = f1_table(all_pairs)
        results.append((source, "both", per, macro, dict(labelled=len(all_pairs)), 0.0))
    print(f"\nCAVIAR OneLeaveShop1, per-view action state vs `movement` (frame level, {args.tracker} tracker on the "
          f"ground-truth boxes; enter {cfg.enter} exit {cfg.exit} min {cfg.min_duration_s} s smoothing "
          f"{cfg.smoothing_s} s)\n")
    head = (f"{'source':<8} {'view':<6} {'F1 standing':>11} {'F1 walking':>10} {'F1 running':>10} {'macro-F1':>8} "
            f"{'labelled':>8} {'matched':>8} {'events':>6}")
    print(head + "\n" + "-" * len(head))
    fmt = lambda v: "   -" if v != v else f"{v:.3f}"  # noqa: E731
    for source, view, per, macro, info, _secs in results:
        print(f"{source:<8} {view:<6} {fmt(per['standing']):>11} {fmt(per['walking']):>10} {fmt(per['running']):>10} "
              f"{fmt(macro):>8} {info.get('labelled', 0):>8} {info.get('matched', '-'):>8} {info.get('events', '-'):>6}")
    print("\nmacro-F1 over the classes present in the labels (no `running` in this clip); label counts: "
          + ", ".join(f"{c} {sum(1 for lab, _ in all_pairs if lab == c)}" for c in CLASSES))
    if not args.checkpoint:
        print("model source not measured: give --checkpoint with a trained action branch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
