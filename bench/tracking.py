"""Tracker benchmark, run by hand (not in tests).

    python bench/tracking.py                       # cache detections (once), run all trackers, print the table
    python bench/tracking.py --cache-only          # only run the detector and cache its boxes
    python bench/tracking.py --trackers mcsa --set high_thresh=0.6 --set max_age=50   # try other mcsa parameters
    python bench/tracking.py --appearance          # adds `mcsa+app`: the appearance cost on, to compare ID switches
    python bench/tracking.py --perturb 10          # + mean +- std over 10 perturbed copies of the detections

1. Detection cache: the shared YOLO11n INT8 OpenVINO detector (`models.detector.PersonDetector`, conf 0.1, imgsz 640)
   runs ONCE per video; boxes go to bench/cache/<seq>_yolo11n_int8_c0.1.npz (gitignored). Every tracker then sees the
   very same detections.
2. Sequences: PETS09-S2L1 (795 frames), EPFL Terrace-1 c0 and c1 (1500 frames each) on the YOLO detections, and
   PETS09-S2L1 on the MOTChallenge 2015 public ACF detections (det/det.txt). ACF scores are raw detector margins
   (about -0.5..139, median 67), not probabilities: they are mapped to [0, 1] by score = clip(raw / 100, 0, 1). On this
   sequence the precision of ACF boxes at a given mapped score is at least that of YOLO boxes at the same score
   (measured: ACF raw 60-70 -> 0.90 precision, YOLO 0.6-0.7 -> 0.89), so the same thresholds apply to both.
3. Trackers: ours (`mcsa`, `sort`, YAML defaults) and Ultralytics' BYTETracker and BOTSORT (its YAML defaults from
   ultralytics/cfg/trackers, BoT-SORT without ReID and without global motion compensation since the cameras are
   static and ReID weights would need a download). The Ultralytics trackers are also run with OUR score thresholds
   (high / low / new track thresholds read from configs/trackers/mcsa.yaml; suffix `@ours`). When BoxMOT is
   installed (`pip install boxmot`; a bench-only peer, not in requirements.txt), its ByteTrack, OC-SORT and BoT-SORT
   (no ReID, no camera-motion compensation) run too, with their constructor defaults and the sequence's frame rate
   (`boxmot-*`). The best peer row per sequence (by HOTA) is the reference for the ratios.
4. Robustness (`--perturb N`): every tracker also runs on N perturbed copies of each sequence's detections (2 % of the
   boxes dropped, corners moved by N(0, 0.5 px), scores by N(0, 0.02); the same copies for every tracker), and a
   second table prints mean +- std of HOTA / IDF1: a single run's lead of one or two points can come from a few
   borderline matches (Terrace-c1: a 4-tracker spread of 2-6 HOTA from changes this small).
5. Scores: pipeline.evaluation.evaluate_mot (TrackEval) on all gt boxes. Speed: tracker-only frames per second (time
   spent inside `update`, detection decoding and evaluation excluded), one process, 2 CPU cores.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.paths import shared_dir  # noqa: E402
from core.types import Detections  # noqa: E402

CACHE = ROOT / "bench" / "cache"
RESULTS = ROOT / "bench" / "results"
DET_CONF = 0.1


def sequences() -> dict[str, dict]:
    data = shared_dir() / "data"
    pets, terrace = data / "pets09_s2l1", data / "epfl_terrace1"
    return {
        # fps: the recorded frame rate (PETS09: 7, although its container says 10), given to trackers that take one
        "PETS09-S2L1": dict(video=pets / "vtest.avi", gt=pets / "gt" / "gt.txt", size=(576, 768), source="yolo",
                            fps=7.0),
        "Terrace-c0": dict(video=terrace / "terrace1-c0.mp4", gt=terrace / "gt_c0" / "gt.txt", size=(288, 360),
                           source="yolo", fps=25.0),
        "Terrace-c1": dict(video=terrace / "terrace1-c1.mp4", gt=terrace / "gt_c1" / "gt.txt", size=(288, 360),
                           source="yolo", fps=25.0),
        "PETS09-S2L1/public": dict(det=pets / "det" / "det.txt", gt=pets / "gt" / "gt.txt", size=(576, 768),
                                   source="public", n_frames=795, fps=7.0),
    }


def _cache_path(video: Path) -> Path:
    return CACHE / f"{video.stem}_yolo11n_int8_c{DET_CONF}.npz"


def cache_detections(video: Path) -> Path:
    """Run the detector once over `video` and store every frame's boxes; returns the cache file."""
    out = _cache_path(video)
    if out.exists():
        return out
    import cv2

    from models.detector import PersonDetector

    CACHE.mkdir(parents=True, exist_ok=True)
    weights = shared_dir() / "models" / "yolo11n_int8_openvino_model"
    detector = PersonDetector(str(weights), conf=DET_CONF, imgsz=640, device="auto")
    cap = cv2.VideoCapture(str(video))
    frames, boxes, scores = [], [], []
    n, t0 = 0, time.perf_counter()
    while True:
        ok, image = cap.read()
        if not ok:
            break
        n += 1
        det = detector.detect([image])[0]
        frames.extend([n] * len(det))
        boxes.append(det.xyxy)
        scores.append(det.scores)
    cap.release()
    np.savez(out, frames=np.array(frames, np.int32), xyxy=np.concatenate(boxes).astype(np.float32),
             scores=np.concatenate(scores).astype(np.float32), n_frames=n)
    print(f"cached {n} frames of {video.name} in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    return out


def cache_embeddings(video: Path) -> Path:
    """Per-detection appearance embeddings (OSNet x0.25 MSMT17, single crops, as the pipeline's DetectionEmbedder
    computes them) for the cached detections of `video`; rows below score 0.3 / height 24 px are NaN."""
    out = CACHE / f"{video.stem}_yolo11n_int8_c{DET_CONF}_osnet_x0_25_msmt17.npz"
    if out.exists():
        return out
    import cv2

    from pipeline.reid import ClipEncoder
    from pipeline.reid.detection_embedder import DetectionEmbedder
    from core.types import Frame

    encoder = ClipEncoder(None, "osnet_x0_25", str(shared_dir() / "models" / "osnet_x0_25_msmt17.pth"), (256, 128),
                          device="auto")
    embedder = DetectionEmbedder(encoder, min_score=0.3)
    z = np.load(cache_detections(video))
    order = np.argsort(z["frames"], kind="stable")
    fr, xyxy, sc = z["frames"][order], z["xyxy"][order], z["scores"][order]
    bounds = np.searchsorted(fr, np.arange(1, int(z["n_frames"]) + 2))
    emb = np.full((len(fr), encoder.embedding_dim), np.nan, np.float32)
    cap = cv2.VideoCapture(str(video))
    t0 = time.perf_counter()
    for i in range(int(z["n_frames"])):
        ok, image = cap.read()
        if not ok:
            break
        a, b = bounds[i], bounds[i + 1]
        if b > a:
            dets = Detections(xyxy[a:b], sc[a:b], np.zeros(b - a))
            emb[a:b] = embedder.embed([Frame("bench", i, 0.0, image)], [dets])[0]
    cap.release()
    np.savez(out, embeddings=emb.astype(np.float16))
    print(f"embedded {embedder.crops_embedded} detections of {video.name} in {time.perf_counter() - t0:.0f} s -> {out}",
          flush=True)
    return out


def load_embeddings(seq: dict) -> list[np.ndarray] | None:
    """Per-frame (N, D) detection embeddings aligned with `load_frames` (YOLO sequences only), else None."""
    if seq["source"] != "yolo":
        return None
    z = np.load(cache_detections(seq["video"]))
    order = np.argsort(z["frames"], kind="stable")
    fr = z["frames"][order]
    bounds = np.searchsorted(fr, np.arange(1, int(z["n_frames"]) + 2))
    emb = np.load(cache_embeddings(seq["video"]))["embeddings"].astype(np.float32)
    return [emb[bounds[i]:bounds[i + 1]] for i in range(int(z["n_frames"]))]


def load_frames(seq: dict) -> list[Detections]:
    """Per-frame detections (index 0 = frame 1)."""
    if seq["source"] == "public":
        raw = np.loadtxt(seq["det"], delimiter=",", ndmin=2)
        n = int(seq.get("n_frames") or raw[:, 0].max())
        frames = raw[:, 0].astype(int)
        scores = np.clip(raw[:, 6] / 100.0, 0.0, 1.0)
        per = []
        for f in range(1, n + 1):
            m = frames == f
            per.append(Detections.from_xywh(raw[m, 2:6], scores[m]))
        return per
    z = np.load(cache_detections(seq["video"]))
    n = int(z["n_frames"])
    order = np.argsort(z["frames"], kind="stable")
    fr, xyxy, sc = z["frames"][order], z["xyxy"][order], z["scores"][order]
    bounds = np.searchsorted(fr, np.arange(1, n + 2))
    return [Detections(xyxy[bounds[i]:bounds[i + 1]], sc[bounds[i]:bounds[i + 1]], np.zeros(bounds[i + 1] - bounds[i]))
            for i in range(n)]


class _UltralyticsBoxes:
    """The results-like object Ultralytics' trackers read: .conf, .cls, .xyxy, .xywh (centre) and boolean indexing."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xyxy, self.conf, self.cls = xyxy, conf, cls
        wh = xyxy[:, 2:4] - xyxy[:, 0:2]
        self.xywh = np.concatenate([xyxy[:, 0:2] + wh / 2, wh], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index) -> "_UltralyticsBoxes":
        return _UltralyticsBoxes(self.xyxy[index], self.conf[index], self.cls[index])


class UltralyticsAdapter:
    """Wraps BYTETracker / BOTSORT so they take our Detections and give (ids, xyxy)."""

    def __init__(self, kind: str, **overrides) -> None:
        import yaml
        from ultralytics.trackers import BOTSORT, BYTETracker
        from ultralytics.utils import ROOT as UROOT

        cfg = yaml.safe_load((UROOT / "cfg" / "trackers" / f"{kind}.yaml").read_text())
        if kind == "botsort":
            cfg.update(gmc_method="none", with_reid=False)
        cfg.update(overrides)
        args = SimpleNamespace(**cfg)
        self.tracker = BOTSORT(args) if kind == "botsort" else BYTETracker(args)

    def update(self, det: Detections, frame=None):
        boxes = _UltralyticsBoxes(det.xyxy.astype(np.float32), det.scores.astype(np.float32),
                                  det.class_ids.astype(np.float32))
        out = self.tracker.update(boxes, None)
        if len(out) == 0:
            return np.zeros(0, np.int64), np.zeros((0, 4))
        return out[:, 4].astype(np.int64), out[:, :4]


class BoxmotAdapter:
    """Wraps BoxMOT's motion-only trackers (`pip install boxmot`: ByteTrack, OC-SORT, BoT-SORT without ReID and
    without camera-motion compensation, the cameras being static) with their constructor defaults and the sequence's
    frame rate; takes our Detections, gives (ids, xyxy)."""

    def __init__(self, kind: str, fps: float) -> None:
        import logging

        import boxmot

        logging.getLogger("boxmot").setLevel(logging.WARNING)  # it logs every tracker's settings at INFO
        rate = int(round(fps))
        if kind == "bytetrack":
            self.tracker = boxmot.ByteTrack(frame_rate=rate)
        elif kind == "ocsort":
            self.tracker = boxmot.OcSort()
        else:
            self.tracker = boxmot.BotSort(use_embeddings=False, use_cmc=False, frame_rate=rate)

    def update(self, det: Detections, frame=None):
        dets = np.c_[det.xyxy, det.scores, det.class_ids].astype(np.float32).reshape(-1, 6)
        out = self.tracker.update(dets, frame)
        if len(out) == 0:
            return np.zeros(0, np.int64), np.zeros((0, 4))
        return out[:, 4].astype(np.int64), out[:, :4]


def boxmot_available() -> bool:
    try:
        importlib.import_module("boxmot")
    except Exception:  # noqa: BLE001 - any import failure: the peer is skipped
        return False
    return True


class OursAdapter:
    def __init__(self, name: str, overrides: dict, frame_rate: float | None = None) -> None:
        from pipeline.tracking import build_tracker_from_config

        self.tracker = build_tracker_from_config(name, overrides, frame_rate=frame_rate)

    def update(self, det: Detections, frame=None, embeddings=None):
        if embeddings is not None and self.tracker.wants_embeddings:
            tracks = self.tracker.update(det, frame, embeddings=embeddings)
        else:
            tracks = self.tracker.update(det, frame)
        return tracks.track_ids, tracks.xyxy


def run_tracker(adapter, frames: list[Detections], image: np.ndarray, out_path: Path,
                embeddings: list[np.ndarray] | None = None) -> float:
    """Track every frame, write a MOT file, return tracker-only frames per second (embedding time excluded)."""
    lines = []
    spent = 0.0
    for i, det in enumerate(frames, 1):
        t0 = time.perf_counter()
        if embeddings is not None and isinstance(adapter, OursAdapter):
            ids, boxes = adapter.update(det, image, embeddings[i - 1])
        else:
            ids, boxes = adapter.update(det, image)
        spent += time.perf_counter() - t0
        for tid, b in zip(ids, boxes):
            lines.append(f"{i},{int(tid)},{b[0]:.2f},{b[1]:.2f},{b[2] - b[0]:.2f},{b[3] - b[1]:.2f},1,-1,-1,-1\n")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("".join(lines))
    return len(frames) / max(spent, 1e-9)


def perturb(frames: list[Detections], seed: int, drop: float = 0.02, box_px: float = 0.5,
            score_sd: float = 0.02) -> list[Detections]:
    """A perturbed copy of a sequence's detections: each box dropped with probability `drop`, corners moved by
    N(0, box_px) px, scores by N(0, score_sd) (clipped to [0, 1]). Same seed -> same copy for every tracker."""
    rng = np.random.default_rng(seed)
    out = []
    for d in frames:
        keep = rng.random(len(d)) >= drop
        xyxy = d.xyxy[keep] + rng.normal(0.0, box_px, (int(keep.sum()), 4)).astype(np.float32)
        xyxy[:, 2:] = np.maximum(xyxy[:, 2:], xyxy[:, :2] + 1.0)
        sc = np.clip(d.scores[keep] + rng.normal(0.0, score_sd, int(keep.sum())), 0.0, 1.0).astype(np.float32)
        out.append(Detections(xyxy, sc, d.class_ids[keep]))
    return out


def perturbed_table(seqs: dict, names: list[str], makers: dict, runs: int) -> None:
    """Mean +- std of HOTA / IDF1 over `runs` perturbed copies of each sequence's detections (the same copies for
    every tracker): how much of a single-run difference is the luck of a few borderline matches."""
    from pipeline.evaluation.mot import evaluate_mot

    names = [n for n in names if n != "mcsa+app"]
    print(f"\nperturbed detections ({runs} copies per sequence: 2 % of boxes dropped, corners +- 0.5 px, scores "
          f"+- 0.02): mean +- std")
    header = f"{'sequence':<19} {'tracker':<15} {'HOTA':>13} {'IDF1':>13} {'HOTA/pr':>8} {'IDF1/pr':>8} {'HOTA wins':>10}"
    print(header)
    print("-" * len(header))
    for seq_name, seq in seqs.items():
        base = load_frames(seq)
        image = np.zeros((*seq["size"], 3), np.uint8)
        scores: dict[str, np.ndarray] = {n: np.zeros((runs, 2)) for n in names}
        for k in range(runs):
            frames = perturb(base, seed=1000 + k)
            for name in names:
                out = RESULTS / "perturbed" / seq_name.replace("/", "_") / f"{name}.txt"
                run_tracker(makers[name](seq["fps"]), frames, image, out)
                r = evaluate_mot(seq["gt"], out, num_frames=len(frames))
                scores[name][k] = (r["HOTA"], r["IDF1"])
        ul = [n for n in names if n.split("@")[0] in ("bytetrack", "botsort") or n.startswith("boxmot-")]
        best = max(ul, key=lambda n: scores[n][:, 0].mean()) if ul else None
        for name in names:
            m, sd = 100 * scores[name].mean(0), 100 * scores[name].std(0)
            ratio = (scores[name].mean(0) / scores[best].mean(0)) if best else None
            wins = (f"{int((scores[name][:, 0] >= scores[best][:, 0]).sum())}/{runs}" if best and name != best
                    else "-")
            mark = "*" if name == best else " "
            rtxt = f"{ratio[0]:8.3f} {ratio[1]:8.3f}" if ratio is not None else f"{'-':>8} {'-':>8}"
            print(f"{seq_name:<19} {name + mark:<15} {m[0]:6.2f} +-{sd[0]:4.2f} {m[1]:6.2f} +-{sd[1]:4.2f} {rtxt}"
                  f" {wins:>10}")
    print("* = best peer tracker (Ultralytics or BoxMOT) by mean HOTA; HOTA wins = copies on which the row's HOTA >= "
          "the best's")


def parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-only", action="store_true", help="only run the detector and cache its boxes")
    parser.add_argument("--trackers", default=None,
                        help="comma-separated: mcsa, sort, bytetrack, botsort, bytetrack@ours, botsort@ours, and when "
                             "BoxMOT is installed boxmot-bytetrack, boxmot-ocsort, boxmot-botsort (default: all)")
    parser.add_argument("--seqs", default=None, help="comma-separated sequence names (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an mcsa parameter")
    parser.add_argument("--appearance", action="store_true",
                        help="also run `mcsa+app`: mcsa with the appearance cost on per-detection OSNet x0.25 MSMT17 "
                             "embeddings (cached once per video), to compare ID switches with it on and off")
    parser.add_argument("--app-weight", type=float, default=0.3, help="appearance_weight of mcsa+app")
    parser.add_argument("--app-gate", type=float, default=0.5, help="appearance_gate (cosine distance) of mcsa+app")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tracker for timing (best fps kept)")
    parser.add_argument("--perturb", type=int, default=0, metavar="N",
                        help="also run every tracker on N perturbed copies of each sequence's detections and print "
                             "mean +- std (robustness of the comparison; 0 = off)")
    args = parser.parse_args(argv)

    from pipeline.evaluation.mot import evaluate_mot

    seqs = sequences()
    if args.seqs:
        seqs = {k: v for k, v in seqs.items() if k in args.seqs.split(",")}
    if args.cache_only:
        for seq in seqs.values():
            if seq["source"] == "yolo":
                cache_detections(seq["video"])
                if args.appearance:
                    cache_embeddings(seq["video"])
        return 0
    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    import yaml

    mcsa_defaults = yaml.safe_load((ROOT / "configs" / "trackers" / "mcsa.yaml").read_text())
    ours_thresholds = dict(track_high_thresh=mcsa_defaults["high_thresh"], track_low_thresh=mcsa_defaults["low_thresh"],
                           new_track_thresh=mcsa_defaults["new_track_thresh"])
    # maker(fps) -> adapter; our trackers get the sequence's frame rate (time-based parameters), Ultralytics' take none
    # (its track_buffer is in frames: 30)
    makers = {
        "mcsa": lambda fps: OursAdapter("mcsa", overrides, fps),
        "sort": lambda fps: OursAdapter("sort", {}, fps),
        "bytetrack": lambda fps: UltralyticsAdapter("bytetrack"),
        "botsort": lambda fps: UltralyticsAdapter("botsort"),
        "bytetrack@ours": lambda fps: UltralyticsAdapter("bytetrack", **ours_thresholds),
        "botsort@ours": lambda fps: UltralyticsAdapter("botsort", **ours_thresholds),
        "boxmot-bytetrack": lambda fps: BoxmotAdapter("bytetrack", fps),
        "boxmot-ocsort": lambda fps: BoxmotAdapter("ocsort", fps),
        "boxmot-botsort": lambda fps: BoxmotAdapter("botsort", fps),
    }
    makers["mcsa+app"] = lambda fps: OursAdapter("mcsa", {**overrides, "appearance_weight": args.app_weight,
                                                          "appearance_gate": args.app_gate}, fps)
    default = "mcsa,sort,bytetrack,botsort,bytetrack@ours,botsort@ours"
    if boxmot_available():
        default += ",boxmot-bytetrack,boxmot-ocsort,boxmot-botsort"
    else:
        print("BoxMOT not installed (pip install boxmot): its trackers are not compared")
    names = (args.trackers or default).split(",")
    if args.appearance and "mcsa+app" not in names:
        names.insert(names.index("mcsa") + 1 if "mcsa" in names else 0, "mcsa+app")
    rows = []
    for seq_name, seq in seqs.items():
        frames = load_frames(seq)
        image = np.zeros((*seq["size"], 3), np.uint8)  # gives the trackers the image size, nothing else
        embeddings = load_embeddings(seq) if "mcsa+app" in names else None
        results = {}
        for name in names:
            if name == "mcsa+app" and embeddings is None:
                continue  # public detections come without images to embed
            fps = 0.0
            out = RESULTS / seq_name.replace("/", "_") / f"{name}.txt"
            for _ in range(max(1, args.repeat)):
                fps = max(fps, run_tracker(makers[name](seq["fps"]), frames, image, out,
                                           embeddings if name == "mcsa+app" else None))
            r = evaluate_mot(seq["gt"], out, num_frames=len(frames))
            r["fps"] = fps
            results[name] = r
        ul = [n for n in results if n.split("@")[0] in ("bytetrack", "botsort") or n.startswith("boxmot-")]
        best = max(ul, key=lambda n: results[n]["HOTA"]) if ul else None
        bt_fps = max([results[n]["fps"] for n in results if n.startswith("bytetrack")], default=None)
        for name, r in results.items():
            rows.append((seq_name, name, r, best and results[best], bt_fps, name == best))

    header = (f"{'sequence':<19} {'tracker':<15} {'HOTA':>6} {'IDF1':>6} {'MOTA':>6} {'IDSW':>5} {'fps':>7}"
              f" {'HOTA/pr':>8} {'IDF1/pr':>8} {'fps/BT':>7}")
    print(header)
    print("-" * len(header))
    for seq_name, name, r, ref, bt_fps, is_best in rows:
        ratio = lambda k: f"{r[k] / ref[k]:8.3f}" if ref and ref[k] > 0 else f"{'-':>8}"  # noqa: E731
        fps_ratio = f"{r['fps'] / bt_fps:7.2f}" if bt_fps else f"{'-':>7}"
        mark = "*" if is_best else " "
        print(f"{seq_name:<19} {name + mark:<15} {100 * r['HOTA']:6.2f} {100 * r['IDF1']:6.2f} {100 * r['MOTA']:6.2f}"
              f" {r['IDSW']:5d} {r['fps']:7.0f} {ratio('HOTA')} {ratio('IDF1')} {fps_ratio}")
    print("* = best peer tracker (Ultralytics or BoxMOT) on that sequence (by HOTA), the reference of the /pr ratios; "
          "fps/BT = tracker-only speed over Ultralytics ByteTrack's (fastest of its two settings)")
    if args.perturb > 0:
        perturbed_table(seqs, names, makers, args.perturb)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
