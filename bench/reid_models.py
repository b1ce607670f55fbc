#!/usr/bin/env python3
"""Which appearance model is best here: every available re-id model on the EPFL Terrace tracklets, side by side.

    python bench/reid_models.py [--export-root /tmp/reid_export] [--models osnet_msmt17 omz_0288_fp32 ...] [--json F]

Data: the Terrace tracklet export of bench/reid_ar_shared.py (ground-truth boxes of c0 and c1, every 3rd frame,
boxes >= 40 px, tracklets of <= 16 crops; written when missing). Query camera c0, gallery camera c1 (tracklet level).

Accuracy: every crop embedded once through the pipeline's own `ClipEncoder` (crops resized to the model's input with
the pipeline's bilinear resize, RGB, T = 1), a tracklet's feature = mean of its crops' embeddings, L2-normalised;
ranking by cosine distance; rank-1, rank-5, mAP (MARS protocol). For these frame-level models this equals the mean of
dense clip embeddings (what the pipeline's clips do, T crops each). A Re-ID-AR checkpoint (--checkpoint) is
evaluated on dense clips of T = 4 instead (its temporal attention needs clips).

Cost: clips/s at batch 32 (T = 4, i.e. 128 crops per call) on real Terrace clips, best of --repeats calls after a
warm-up, through the same `ClipEncoder` (the backend named in the table). For the default OSNet x0.25 the same
weights run on three backends: PyTorch eager, OpenVINO (compiled at start-up, the pipeline's CPU default) and the
ONNX export on ONNX Runtime, with the ratios against PyTorch eager.

Cross-camera IDF1 (--idf1-run DIR, a finished run of configs/epfl_terrace_tracks.yaml): the run's tracks and the time spans
of its Re-ID clips are kept; each clip is embedded again by each of the best models (T crops of the track spread over
the clip's span) and the configured association is replayed (pipeline.association.replay, as bench/association.py
does), online and with offline refinement. Detector and tracker are the same for every model, so only appearance
differs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.paths import shared_dir  # noqa: E402

OMZ = "models/openvino_reid/person-reidentification-retail-{0}/{1}/person-reidentification-retail-{0}.xml"


def model_specs(shared: Path) -> dict[str, dict]:
    """name -> ClipEncoder keyword arguments (+ `label`), for every appearance model in the shared folder."""
    m = shared / "models"
    specs = {
        "osnet_msmt17": dict(label="OSNet x0.25 MSMT17 (default)", backbone="osnet_x0_25",
                             backbone_weights=str(m / "osnet_x0_25_msmt17.pth"), cpu_backend="openvino"),
        "osnet_market": dict(label="OSNet x0.25 Market-1501", backbone="osnet_x0_25",
                             backbone_weights=str(m / "osnet_x0_25_market1501.pth"), cpu_backend="openvino"),
    }
    for number, precisions in (("0277", ["FP16"]), ("0286", ["FP16"]), ("0287", ["FP32", "FP16", "FP16-INT8"]),
                               ("0288", ["FP32", "FP16"])):
        for precision in precisions:
            specs[f"omz_{number}_{precision.lower().replace('-', '_')}"] = dict(
                label=f"OMZ {number} {precision}", backbone=f"openvino:{shared / OMZ.format(number, precision)}")
    onnx_0267 = m / "openvino_reid/person-reidentification-retail-0287/person-reidentification-retail-0267.onnx"
    # ONNX Runtime 1.32 computes NaN for this opset-9 file (FrameReIDModel refuses it); OpenVINO reads it fine
    specs["omz_0267_onnx"] = dict(label="OMZ 0267 ONNX (OpenVINO)", backbone=f"openvino:{onnx_0267}")
    return specs


def subsample(tracklets, per_tracklet: int | None):
    """Each tracklet cut down to `per_tracklet` crops spread evenly over it (None: all crops)."""
    if not per_tracklet:
        return tracklets
    from dataclasses import replace

    from pipeline.reid_data.sampling import sample_evenly

    def cut(t, idx):
        return replace(t, paths=[t.paths[i] for i in idx], quality=[t.quality[i] for i in idx] if t.quality else None)

    return [cut(t, sample_evenly(len(t), per_tracklet)) if len(t) > per_tracklet
            else t for t in tracklets]


def load_crops(tracklets, size: tuple[int, int]) -> np.ndarray:
    """All crops of the tracklets, in order, resized to size (H, W) as the pipeline does -> uint8 RGB (N, H, W, 3)."""
    out = []
    for t in tracklets:
        for p in t.paths:
            img = cv2.imread(p)
            out.append(cv2.cvtColor(cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR),
                                    cv2.COLOR_BGR2RGB))
    return np.stack(out)


def embed_crops(encoder, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([encoder.encode(crops[i:i + batch, None])[0] for i in range(0, len(crops), batch)])


def tracklet_features(encoder, tracklets, crops: np.ndarray, clip_len: int, dense: bool) -> np.ndarray:
    """Mean of crop embeddings per tracklet (frame models) or of dense T-crop clip embeddings (Re-ID-AR), unit length."""
    from pipeline.reid_data.sampling import dense_clips

    feats, start = [], 0
    if not dense:
        emb = embed_crops(encoder, crops)
    for t in tracklets:
        n = len(t)
        if dense:
            clips = np.stack([crops[start:start + n][idx] for idx in dense_clips(n, clip_len)])
            f = np.concatenate([encoder.encode(clips[i:i + 32])[0] for i in range(0, len(clips), 32)]).mean(0)
        else:
            f = emb[start:start + n].mean(0)
        feats.append(f / max(np.linalg.norm(f), 1e-12))
        start += n
    return np.stack(feats)


def rank(encoder, ds, clip_len: int, dense: bool, usable: bool = False) -> dict:
    """Rank-1 / mAP of query -> gallery tracklets, and `by_identity` (per person: rank-1, mAP, whom they are mixed
    up with). usable: each tracklet's feature from only the crops the pipeline's Re-ID would take (`Tracklet.usable`:
    export quality > 0; every crop where none passes, so both sets keep every tracklet), else from all its crops."""
    from pipeline.reid_data.metrics import evaluate_ranking, identity_breakdown

    query = [t.usable() for t in ds.query] if usable else ds.query
    gallery = [t.usable() for t in ds.gallery] if usable else ds.gallery
    qc, gc = load_crops(query, encoder.input_size), load_crops(gallery, encoder.input_size)
    q = tracklet_features(encoder, query, qc, clip_len, dense)
    g = tracklet_features(encoder, gallery, gc, clip_len, dense)
    dist = 1.0 - q @ g.T
    ids = ([t.pid for t in query], [t.pid for t in gallery], [t.camid for t in query], [t.camid for t in gallery])
    res = evaluate_ranking(dist, *ids)
    res["by_identity"] = identity_breakdown(dist, *ids)
    return res


def clips_per_s(encoder, clips: np.ndarray, repeats: int) -> float:
    encoder.encode(clips)  # warm-up (allocations, lazy compilation)
    best = min(_timed(encoder.encode, clips) for _ in range(repeats))
    return len(clips) / best


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _usable_rows(boxes: np.ndarray, video: str) -> np.ndarray:
    """Which rows of a camera's recorded boxes (frame, t, track, x1, y1, x2, y2, ...) the pipeline's cropper takes
    (`crop_quality` > 0 with the Re-ID defaults: box height, border, at most max_overlap covered by another of the
    frame's boxes) -> bool (N,)."""
    from pipeline.config import ReIDStageConfig
    from pipeline.reid.cropper import frame_crop_quality

    cfg = ReIDStageConfig()
    cap = cv2.VideoCapture(video)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    ok = np.zeros(len(boxes), bool)
    for f in np.unique(boxes[:, 0]):
        idx = np.flatnonzero(boxes[:, 0] == f)  # float32 boxes, as the pipeline's tracks hold them
        ok[idx] = frame_crop_quality(boxes[idx, 3:7].astype(np.float32), w, h, cfg.min_box_height,
                                     cfg.border_margin, cfg.max_overlap) > 0
    return ok


def reembed_run(db: Path, encoder, videos: dict[str, str], clip_len: int):
    """The recorded run of `db` with every Re-ID clip embedded again by `encoder`: each stored clip's T crops are
    the track's boxes spread evenly over the clip's time span (as the pipeline's cropper spreads them over its
    window; only boxes its crop gate takes, `_usable_rows`, where the span has any), cut from the video at the
    encoder's input size. Returns a `RecordedRun` for `replay`."""
    from sqlalchemy import create_engine, text

    from pipeline.association.replay import RecordedRun, load_run
    from pipeline.reid.cropper import crop_resize, sample_indices

    run = load_run(db)
    engine = create_engine(f"sqlite:///{Path(db).resolve()}")
    with engine.connect() as conn:
        run_id = conn.execute(text("SELECT max(id) FROM runs")).scalar()
        spans = conn.execute(text("SELECT camera_id, track_id, t_start, t_end, quality FROM track_clips WHERE "
                                  "run_id=:r ORDER BY t_end"), {"r": run_id}).fetchall()
    engine.dispose()
    usable = {cam: _usable_rows(run.boxes[cam], videos[cam]) for cam in run.cameras}
    wanted: dict[str, dict[int, list]] = {c: {} for c in run.cameras}  # camera -> frame -> [(clip, slot, box)]
    for k, (cam, tid, t0, t1, _q) in enumerate(spans):
        b = run.boxes[cam]
        span = (b[:, 2] == tid) & (b[:, 1] >= t0 - 1e-6) & (b[:, 1] <= t1 + 1e-6)
        rows = b[span & usable[cam]] if (span & usable[cam]).any() else b[span]
        if not len(rows):
            rows = b[b[:, 2] == tid][-1:]
        for slot, i in enumerate(sample_indices(len(rows), clip_len)):
            wanted[cam].setdefault(int(rows[i, 0]), []).append((k, slot, rows[i, 3:7]))
    crops = np.zeros((len(spans), clip_len, *encoder.input_size, 3), np.uint8)
    for cam, frames in wanted.items():
        cap = cv2.VideoCapture(videos[cam])
        last = max(frames) if frames else -1
        for index in range(last + 1):
            ok, image = cap.read()
            if not ok:
                break
            for k, slot, box in frames.get(index, ()):
                crops[k, slot] = crop_resize(image, box, encoder.input_size)
        cap.release()
    emb = np.concatenate([encoder.encode(crops[i:i + 32])[0] for i in range(0, len(crops), 32)])
    out = RecordedRun(run.cameras, run.boxes)
    out.clips = [(float(t1), cam, int(tid), float(q), emb[k].astype(np.float32))
                 for k, (cam, tid, _t0, t1, q) in enumerate(spans)]
    return out, run


def cross_camera_idf1(run, cfg, gt: dict[str, str], out: Path) -> dict[str, float]:
    """Online and offline cross-camera IDF1 of the configured association replayed on `run`."""
    from association import score

    from pipeline.association.offline import refine
    from pipeline.association.replay import replay
    from pipeline.association.topology import build_topology

    online, assoc = replay(run, cfg)
    offline = refine(assoc.all_tracks(), build_topology(cfg), cfg, online)
    return {"online": score(run, online, gt, out / "online")["IDF1"],
            "offline": score(run, offline, gt, out / "offline")["IDF1"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export-root", default="/tmp/reid_export", help="tracklet exports (as bench/reid_ar_shared.py)")
    ap.add_argument("--models", nargs="*", default=None, help="subset of model names (default: all available)")
    ap.add_argument("--checkpoint", default=None, help="also rank a Re-ID-AR checkpoint (dense clips of T)")
    ap.add_argument("--clip-len", type=int, default=4)
    ap.add_argument("--crops-per-tracklet", type=int, default=None, metavar="N",
                    help="use N crops spread evenly over each tracklet (default: all; N = 4 is ~4x faster)")
    ap.add_argument("--batch", type=int, default=32, help="clips per call in the cost column")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of every runtime (this machine: 2 cores)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--idf1-run", default=None, metavar="DIR",
                    help="output folder of `run_pipeline.py run --config configs/epfl_terrace_tracks.yaml`: its tracks' Re-ID "
                    "clips are embedded again with each of the --idf1-top best models and the association replayed "
                    "(cross-camera IDF1, online / offline)")
    ap.add_argument("--idf1-top", type=int, default=3)
    ap.add_argument("--skip-ranking", action="store_true", help="only the IDF1 part (needs --idf1-models)")
    ap.add_argument("--idf1-models", nargs="*", default=None, help="models for the IDF1 part (default: the best "
                    "--idf1-top by mAP, plus the default)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)

    from pipeline.reid import ClipEncoder
    from pipeline.reid_data.sample_clips import terrace_clips
    from reid_ar_shared import terrace_dataset

    shared = shared_dir()
    if not (shared / "data").is_dir():
        print(f"error: shared data folder {shared} not found (set MCSA_SHARED)", file=sys.stderr)
        return 2
    root = Path(args.export_root)
    if not (root / "terrace" / "tracklets.csv").is_file():
        from pipeline.reid_data.export import ExportOptions, export_tracklets
        from reid_ar_shared import export_specs

        for folder, video, boxes, _, kw in export_specs(shared):
            if folder == "terrace":
                export_tracklets(video, boxes, root / folder, ExportOptions(**kw), None)
    ds = terrace_dataset(root)
    ds.query, ds.gallery = subsample(ds.query, args.crops_per_tracklet), subsample(ds.gallery, args.crops_per_tracklet)
    print(f"Terrace tracklets (query c0, gallery c1): {ds.summary()}"
          + (f", {args.crops_per_tracklet} crops per tracklet" if args.crops_per_tracklet else ""))
    specs = model_specs(shared)
    if args.checkpoint:
        specs["checkpoint"] = dict(label=f"Re-ID-AR {Path(args.checkpoint).name}", checkpoint=args.checkpoint,
                                   dense=True)
    names = [] if args.skip_ranking else (args.models or list(specs))
    results: dict[str, dict] = {}
    clip_cache: dict[tuple, np.ndarray] = {}
    for name in names:
        kw = dict(specs[name])
        label, dense = kw.pop("label"), kw.pop("dense", False)
        try:
            enc = ClipEncoder(device="cpu", cpu_threads=args.threads, **kw)
        except Exception as err:  # noqa: BLE001 - one model failing should not stop the table
            print(f"{name}: skipped ({err})")
            continue
        key = tuple(enc.input_size)
        if key not in clip_cache:
            clip_cache[key] = terrace_clips(shared, args.batch, args.clip_len, enc.input_size)
        t0 = time.time()
        res = rank(enc, ds, args.clip_len, dense)
        res.update(label=label, backend=enc.backend, dim=enc.embedding_dim, eval_s=time.time() - t0,
                   clips_per_s=clips_per_s(enc, clip_cache[key], args.repeats))
        results[name] = res
        print(f"{label:<32s} rank-1 {res['rank1']:.3f}  mAP {res['mAP']:.3f}  {res['clips_per_s']:7.1f} clips/s "
              f"({enc.backend})", flush=True)

    # the default's weights on three backends: PyTorch eager, OpenVINO, ONNX Runtime (its ONNX export)
    speed: dict[str, float] = {}
    if "osnet_msmt17" in names:
        from models.reid.export import export_reid_ar

        kw = {k: v for k, v in specs["osnet_msmt17"].items() if k != "label"}
        clips = clip_cache[(256, 128)]
        eager = ClipEncoder(device="cpu", cpu_threads=args.threads, **{**kw, "cpu_backend": "torch"})
        speed["PyTorch eager"] = clips_per_s(eager, clips, args.repeats)
        speed["OpenVINO (start-up compile)"] = results["osnet_msmt17"]["clips_per_s"]
        with tempfile.TemporaryDirectory() as tmp:
            export_reid_ar(eager.model, tmp, "onnx", args.clip_len, source="osnet_x0_25_msmt17.pth")
            for backend in ("onnxruntime", "openvino"):
                enc = ClipEncoder(tmp, device="cpu", cpu_threads=args.threads, cpu_backend=backend)
                speed[f"export on {backend}"] = clips_per_s(enc, clips, args.repeats)

    print(f"\nTerrace c0 -> c1, tracklet level, cosine; cost at batch {args.batch} x T={args.clip_len} "
          f"({args.threads} threads)")
    print(f"{'model':<32s}{'rank-1':>8s}{'rank-5':>8s}{'mAP':>8s}{'dim':>6s}{'clips/s':>9s}  backend")
    order = sorted(results, key=lambda n: (-results[n]["mAP"], -results[n]["rank1"]))
    for n in order:
        r = results[n]
        print(f"{r['label']:<32s}{r['rank1']:>8.3f}{r['rank5']:>8.3f}{r['mAP']:>8.3f}{r['dim']:>6d}"
              f"{r['clips_per_s']:>9.1f}  {r['backend']}")
    if speed:
        base = speed["PyTorch eager"]
        print(f"\nOSNet x0.25 (default weights), clips/s at batch {args.batch} x T={args.clip_len}:")
        for k, v in speed.items():
            print(f"  {k:<30s}{v:>8.1f}  x{v / base:.2f} vs PyTorch eager")
    idf1: dict[str, dict] = {}
    if args.idf1_run:
        from pipeline.association.replay import load_run
        from pipeline.config import load_config

        cfg = load_config(str(ROOT / "configs/epfl_terrace_tracks.yaml"))
        terrace = shared / "data/epfl_terrace1"
        gt = {c.id: str(terrace / f"gt_{c.id}/gt.txt") for c in cfg.cameras}
        videos = {c.id: str(c.source) for c in cfg.cameras}
        db = Path(args.idf1_run) / "events.db"
        out = Path(tempfile.mkdtemp(prefix="reid_models_idf1_"))
        last = max(int(b[:, 0].max()) for b in load_run(db).boxes.values() if len(b)) + 1  # 1-based
        for cam, path in list(gt.items()):  # an interrupted run: score the frames it recorded
            rows = [ln for ln in Path(path).read_text().splitlines() if ln and int(ln.split(",")[0]) <= last]
            gt[cam] = str(out / f"gt_{cam}.txt")
            Path(gt[cam]).write_text("\n".join(rows) + "\n")
        print(f"IDF1: {db}, frames 1..{last} of each camera")
        chosen = args.idf1_models or list(dict.fromkeys(order[: args.idf1_top] + ["osnet_msmt17"]))
        idf1["recorded run (as stored)"] = cross_camera_idf1(load_run(db), cfg.association, gt, out / "stored")
        for name in chosen:
            kw = {k: v for k, v in specs[name].items() if k not in ("label", "dense")}
            enc = ClipEncoder(device="cpu", cpu_threads=args.threads, **kw)
            run, _ = reembed_run(db, enc, videos, args.clip_len)
            idf1[specs[name]["label"]] = cross_camera_idf1(run, cfg.association, gt, out / name)
            print(f"IDF1 {specs[name]['label']}: {idf1[specs[name]['label']]}", flush=True)
        print(f"\nTerrace cross-camera IDF1 (configs/epfl_terrace_tracks.yaml association replayed on {db}; every clip "
              "embedded again by each model)")
        print(f"{'model':<32s}{'online':>8s}{'offline':>9s}")
        for k, v in idf1.items():
            print(f"{k:<32s}{v['online']:>8.3f}{v['offline']:>9.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"models": results, "osnet_backends": speed, "idf1": idf1}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
