#!/usr/bin/env python3
"""Site adaptation (issue #18) on EPFL Terrace: adapt on the first frames, measure on the rest, against the peers.

    python bench/adapt_terrace.py [--run DIR] [--recipes configs/adapt/omz0267.yaml configs/adapt/osnet.yaml]
                                  [--adapt-frames 750] [--out /tmp/adapt_bench] [--json F]

1. A run of configs/epfl_terrace_tracks.yaml (`--run DIR`, made when missing: ~10 min on 2 cores) gives the tracks.
2. `adapt` (pipeline/adapt/site.py) on each camera's first --adapt-frames frames, per recipe: mining, weak action
   labels, training, the held-out validation of adapt itself. Mined-pair precision / recall against the ground
   truth of those frames (reported only; ground truth is never used to mine or train).
3. Re-id on the ground-truth tracklets of the LATER frames (--adapt-frames + 1 .. 1500; every 3rd frame, boxes
   >= 40 px, visible, tracklets <= 16 crops, as bench/reid_ar_shared.py): query camera c0, gallery c1, tracklet
   level, cosine, rank-1 / mAP, side by side in one process: OSNet x0.25 MSMT17 (the pipeline's default), the Open
   Model Zoo models, each recipe's pretrained backbone (frame average) and its adapted checkpoint (dense clips).
   Two tables, the same tracklets: features from every crop of a tracklet (the earlier notes' protocol), and from
   only the crops the pipeline's Re-ID would take (the export's `quality` > 0: not covered more than
   reid.max_overlap by another person's box, not cut by the border; every crop of a tracklet where none passes).
4. Cross-camera IDF1: the run's association replayed (bench/reid_models.py reembed_run; the same tracks, every Re-ID
   clip embedded again) with each recipe's pretrained backbone and with its adapted checkpoint, on the whole
   sequence and on the later frames only (those the adapted model never trained on).
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.paths import shared_dir  # noqa: E402


def late_tracklets(shared: Path, root: Path, first: int):
    """Ground-truth Terrace tracklets of frames >= first (query c0, gallery c1)."""
    from pipeline.reid_data.datasets import load_tracklet_folder
    from pipeline.reid_data.export import ExportOptions, export_tracklets

    if not (root / "tracklets.csv").is_file():
        for cam in ("c0", "c1"):
            d = shared / "data/epfl_terrace1"
            export_tracklets(d / f"terrace1-{cam}.mp4", d / f"gt_{cam}/gt.txt", root,
                             ExportOptions(camera=cam, split="test", frame_step=3, max_len=16, min_len=4,
                                           min_height=40, min_visibility=1, max_gap=3, first_frame=first))
    return load_tracklet_folder(root, None, None, "c0", "c1")


def both_protocols(encoder, ds, dense: bool) -> dict[str, dict[str, float]]:
    """Rank-1 / mAP with each tracklet's feature from all its crops ("all", the protocol of the earlier notes) and
    from the crops the pipeline's Re-ID would take ("usable": the export's crop quality > 0, i.e. not covered more
    than reid.max_overlap by another person's box, not cut by the border; every crop where none passes)."""
    from reid_models import rank

    out = {}
    for proto, usable in (("all", False), ("usable", True)):
        r = rank(encoder, ds, 4, dense=dense, usable=usable)
        out[proto] = {"rank1": r["rank1"], "mAP": r["mAP"], "by_identity": r["by_identity"]}
    return out


def gt_people(gt: dict[str, str], last_frame: int) -> set[int]:
    """Ground-truth ids seen in frames 1..last_frame of any camera (for the report only: which test people the
    adaptation frames held)."""
    seen = set()
    for path in gt.values():
        arr = np.loadtxt(path, delimiter=",", ndmin=2)
        seen |= {int(i) for i in arr[arr[:, 0] <= last_frame, 1]}
    return seen


def print_people(rows: dict, proto: str, adapted_on: set[int]) -> None:
    """Per person AP of each model (the `proto` features) and, per model, the person it ranks worst and whom their
    queries are mixed up with."""
    people = sorted({int(p) for v in rows.values() for p in v[proto]["by_identity"]})
    print(f"{'AP per person (* = in the adaptation frames)':<50s}" + "".join(
        f"{str(p) + ('*' if p in adapted_on else ''):>7s}" for p in people) + "  worst person: confused with")
    for label, v in rows.items():
        by = {int(k): x for k, x in v[proto]["by_identity"].items()}
        worst = min(by, key=lambda k: by[k]["mAP"])
        w = by[worst]
        note = (f"{worst}: {w['confused_with']} in {w['confused_count']} of {w['wrong_above']} entries above its "
                f"last match" if w["confused_with"] is not None else f"{worst}: nobody")
        print(f"{label:<50s}" + "".join(f"{by[p]['mAP']:>7.3f}" if p in by else f"{'-':>7s}" for p in people)
              + f"  {note}")


def look_alike_figure(ds, pids: tuple[int, int], path: Path, per_row: int = 14) -> None:
    """One row of crops per (person, camera) of `pids` (the crops the pipeline's Re-ID would take, spread over each
    person's tracklets), 64 x 128 px each, labelled: what a model must tell apart."""
    import cv2

    rows = []
    for pid in pids:
        for cams, name in ((ds.query, "c0"), (ds.gallery, "c1")):
            paths = [p for t in cams if t.pid == pid for p in t.usable().paths]
            if not paths:
                continue
            pick = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(per_row, len(paths)))]
            tiles = [cv2.resize(cv2.imread(p), (64, 128), interpolation=cv2.INTER_AREA) for p in pick]
            tiles += [np.full((128, 64, 3), 255, np.uint8)] * (per_row - len(tiles))
            label = np.full((128, 110, 3), 255, np.uint8)
            cv2.putText(label, f"person {pid}", (4, 56), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
            cv2.putText(label, f"camera {name}", (4, 80), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
            rows.append(np.hstack([label] + tiles))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows))


def fmt(r: dict) -> str:
    return "  ".join(f"{k}: rank-1 {v['rank1']:.3f} mAP {v['mAP']:.3f}" for k, v in r.items())


def score_window(run, ids, gt: dict[str, str], out: Path, first: int) -> dict:
    """Cross-camera IDF1 of `ids` on frames >= first (predictions and ground truth cut alike)."""
    from pipeline.association.replay import write_mot
    from pipeline.evaluation.mot import evaluate_mtmc

    pred = write_mot(run, ids, out)
    cut_pred, cut_gt = {}, {}
    for cam in gt:
        for src, dst, store in ((pred[cam], out / f"cut_{cam}.txt", cut_pred), (gt[cam], out / f"gt_{cam}.txt", cut_gt)):
            rows = [ln for ln in Path(src).read_text().splitlines() if ln.strip() and int(float(ln.split(",")[0])) >= first]
            Path(dst).write_text("\n".join(rows) + "\n")
            store[cam] = str(dst)
    return evaluate_mtmc(cut_gt, cut_pred)


def idf1_pair(run, cfg, gt, out: Path, first: int) -> dict[str, float]:
    from pipeline.association.offline import refine
    from pipeline.association.replay import replay
    from pipeline.association.topology import build_topology

    online, assoc = replay(run, cfg)
    offline = refine(assoc.all_tracks(), build_topology(cfg), cfg, online)
    res = {}
    for name, ids in (("online", online), ("offline", offline)):
        res[f"{name} all"] = score_window(run, ids, gt, out / f"{name}_all", 1)["IDF1"]
        if first <= 1500:
            res[f"{name} late"] = score_window(run, ids, gt, out / f"{name}_late", first)["IDF1"]
    return res


def caviar_actions(shared: Path, root: Path, checkpoints: dict[str, Path]) -> dict[str, dict]:
    """Action F1 on CAVIAR OneLeaveShop1 (both views, every person: none of them was trained on), its `movement`
    labels mapped to standing / walking / running: each adapted checkpoint's action branch (arg-max of the mean clip
    scores) against the motion rule the pipeline uses without a trained branch (box speed in box heights / s, the
    events.motion thresholds, over the tracklet)."""
    import csv

    from pipeline.adapt.motion_labels import CAVIAR_TO_MOTION, MOTION_ACTIONS
    from pipeline.config import MotionConfig
    from pipeline.reid_data.datasets import load_tracklet_folder
    from pipeline.reid_data.export import ExportOptions, export_tracklets, read_action_labels
    from pipeline.reid_data.metrics import action_metrics
    from pipeline.reid_data.video import extract_tracklet_features

    cav = shared / "data/caviar_oneleaveshop1"
    if not (root / "tracklets.csv").is_file():
        for cam, stem in (("caviar_cor", "cols1gt"), ("caviar_front", "fols1gt")):
            labels = {k: CAVIAR_TO_MOTION.get(v, "") for k, v in read_action_labels(cav / f"{stem}_labels_derived.csv").items()}
            video = cav / ("OneLeaveShop1cor.mpg" if cam == "caviar_cor" else "OneLeaveShop1front.mpg")
            export_tracklets(video, cav / f"{stem}_mot_derived.txt", root,
                             ExportOptions(camera=cam, split="test", split_on_action=True, max_len=16, min_len=4,
                                           max_gap=3, id_offset=100 if cam == "caviar_cor" else 200), labels)
    ds = load_tracklet_folder(root, list(MOTION_ACTIONS))
    tracks = [t for t in ds.query if t.action > 0]
    labels = np.array([t.action for t in tracks])
    boxes: dict[str, list] = {}
    with open(root / "tracklets.csv", newline="") as f:
        for row in csv.DictReader(f):
            key = f"{row['split']}/{row['pid']}/{row['camera']}/{row['tracklet']}"
            boxes.setdefault(key, []).append((int(row["frame"]), float(row["y"]) + float(row["h"]),
                                              float(row["x"]) + float(row["w"]) / 2, float(row["h"])))
    motion = MotionConfig()
    rule = []
    for t in tracks:
        b = np.array(sorted(boxes[_key_of(t)]))
        dt = max((b[-1, 0] - b[0, 0]) / 25.0, 1e-6)
        hps = np.hypot(b[-1, 2] - b[0, 2], b[-1, 1] - b[0, 1]) / np.median(b[:, 3]) / dt
        state = 0 if hps < motion.walk_hps else 2 if hps >= motion.run_hps else 1
        rule.append(np.eye(3)[state])
    out = {"motion rule (box speed)": action_metrics(np.array(rule), labels, MOTION_ACTIONS)}
    from models.reid.model import load_checkpoint

    for name, ckpt in checkpoints.items():
        model, payload = load_checkpoint(ckpt)
        _, probs = extract_tracklet_features(model, tracks, 4, tuple(model.input_size), "dense")
        out[name] = action_metrics(probs.numpy(), labels, list(model.action_names))
    return out


def _key_of(t) -> str:
    """The tracklets.csv key of a tracklet read from its folder <root>/<split>/<pid>/<camera>/<tracklet>/."""
    parts = Path(t.paths[0]).parts
    return "/".join(parts[-5:-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="/tmp/adapt_bench/terrace_run", help="finished run of configs/epfl_terrace_tracks.yaml")
    ap.add_argument("--recipes", nargs="+", default=[str(ROOT / "configs/adapt/omz0267.yaml")])
    ap.add_argument("--adapt-frames", type=int, default=750)
    ap.add_argument("--out", default="/tmp/adapt_bench")
    ap.add_argument("--peers", nargs="*", default=["osnet_msmt17", "omz_0287_fp32", "omz_0267_onnx"],
                    help="off-the-shelf models of bench/reid_models.py to rank alongside")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-idf1", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="reuse OUT/adapt_<recipe>/model_adapted.pth of an earlier "
                    "run of this bench (same --adapt-frames) instead of adapting again")
    ap.add_argument("--json", default=None)
    ap.add_argument("--figure", default=None, help="write a PNG of the best off-the-shelf model's worst-ranked person "
                    "beside the person it is mixed up with (crops of the test frames, both cameras)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    shared = shared_dir()
    if not (shared / "data/epfl_terrace1").is_dir():
        print(f"error: {shared}/data/epfl_terrace1 not found (set MCSA_SHARED)", file=sys.stderr)
        return 2
    from reid_models import model_specs, reembed_run

    from pipeline.adapt.site import AdaptReport, adapt_site, baseline_model, format_report
    from pipeline.config import load_config
    from pipeline.reid import ClipEncoder

    out = Path(args.out)
    cfg = load_config(str(ROOT / "configs/epfl_terrace_tracks.yaml"))
    terrace = shared / "data/epfl_terrace1"
    gt = {c: str(terrace / f"gt_{c}/gt.txt") for c in ("c0", "c1")}
    run_dir = Path(args.run)
    if not (run_dir / "events.db").is_file():
        from pipeline.engines import build_engine

        data = cfg.model_dump()
        data["output"].update(dir=str(run_dir), overwrite=True)
        data["run"]["progress"] = True
        from pipeline.config import parse_config

        print(f"running configs/epfl_terrace_tracks.yaml into {run_dir} ...", flush=True)
        build_engine(parse_config(data), run_dir).run()

    first = args.adapt_frames + 1
    late = first <= 1500 - 100  # with --adapt-frames 1500 only the IDF1 part runs (the whole sequence)
    if late:
        ds = late_tracklets(shared, out / f"late_gt_{first}", first)
        print(f"test: Terrace ground-truth tracklets of frames {first}-1500: {ds.summary()}")
    rows: dict[str, dict] = {}
    specs = model_specs(shared)
    for name in args.peers if late else []:
        kw = dict(specs[name])
        label = kw.pop("label")
        enc = ClipEncoder(device="cpu", cpu_threads=args.threads, **kw)
        rows[label] = both_protocols(enc, ds, dense=False)
        print(f"  {label:<44s} {fmt(rows[label])}", flush=True)

    adapted: dict[str, Path] = {}
    reports = {}
    for recipe in args.recipes:
        rname = Path(recipe).stem
        cfg.adapt.recipe = recipe
        t0 = time.time()
        done = out / f"adapt_{rname}"
        if args.reuse and (done / "model_adapted.pth").is_file() and (done / "adapt_report.json").is_file():
            rep = AdaptReport(done, checkpoint=done / "model_adapted.pth")  # an earlier bench run's adaptation
            reports[rname] = json.loads((done / "adapt_report.json").read_text())
            print(f"{rname}: reusing {done}/model_adapted.pth (--reuse)")
        else:
            rep = adapt_site(cfg, done, run_dir, args.adapt_frames, gt, progress=False)
            print(format_report(rep), flush=True)
            reports[rname] = rep.to_json()
        adapted[rname] = rep.checkpoint
        from pipeline.adapt.site import _recipe

        base = baseline_model(_recipe(cfg, out / "unused", out))
        with tempfile.TemporaryDirectory() as tmp:
            from models.reid.model import save_checkpoint

            base_ckpt = save_checkpoint(Path(tmp) / "base.pth", base)
            for label, ckpt, dense in ((f"{rname}: pretrained backbone (frame average)", base_ckpt, True),
                                       (f"{rname}: adapted on frames 1-{args.adapt_frames}", rep.checkpoint, True)):
                if not late:
                    break
                enc = ClipEncoder(checkpoint=str(ckpt), device="cpu", cpu_threads=args.threads)
                rows[label] = both_protocols(enc, ds, dense=dense)
                print(f"  {label:<44s} {fmt(rows[label])}  ({time.time() - t0:.0f} s)", flush=True)
            if not args.skip_idf1:
                idf1 = {}
                videos = {c.id: str(c.source) for c in cfg.cameras}
                for label, ckpt in (("pretrained", base_ckpt), ("adapted", rep.checkpoint)):
                    enc = ClipEncoder(checkpoint=str(ckpt), device="cpu", cpu_threads=args.threads)
                    run, _ = reembed_run(run_dir / "events.db", enc, videos, 4)
                    idf1[label] = idf1_pair(run, cfg.association, gt, out / f"idf1_{rname}_{label}", first)
                    print(f"  IDF1 {rname} {label}: {idf1[label]}", flush=True)
                reports[rname]["idf1"] = idf1

    for proto, title in (("all", "every crop of a tracklet"), ("usable", "the crops the pipeline's Re-ID would take")):
        if not rows:
            break
        print(f"\nTerrace re-id, ground-truth tracklets of frames {first}-1500, query c0 -> gallery c1, cosine, "
              f"features from {title} (adaptation used frames 1-{args.adapt_frames} only, no labels)")
        base = rows.get("OSNet x0.25 MSMT17 (default)")
        best_peer = max((v[proto] for k, v in rows.items() if k.startswith("OMZ")), key=lambda v: v["mAP"],
                        default=None)
        print(f"{'model':<50s}{'rank-1':>8s}{'mAP':>8s}{'mAP / OSNet':>13s}{'mAP / best OMZ':>16s}")
        for label, v in rows.items():
            r = v[proto]
            ratio = f"{r['mAP'] / base[proto]['mAP']:.3f}" if base else ""
            ratio2 = f"{r['mAP'] / best_peer['mAP']:.3f}" if best_peer else ""
            print(f"{label:<50s}{r['rank1']:>8.3f}{r['mAP']:>8.3f}{ratio:>13s}{ratio2:>16s}")
    if rows:
        adapted_on = gt_people(gt, args.adapt_frames)
        print(f"\nper person, the pipeline's crops (people 1-{args.adapt_frames} held: "
              f"{', '.join(map(str, sorted(adapted_on))) or 'none'})")
        print_people(rows, "usable", adapted_on)
        best = max((k for k in rows if k.startswith("OMZ")), key=lambda k: rows[k]["usable"]["mAP"], default=None)
        if args.figure and best:
            by = rows[best]["usable"]["by_identity"]
            worst = min(by, key=lambda k: by[k]["mAP"])
            if by[worst]["confused_with"] is not None:
                look_alike_figure(ds, (int(worst), int(by[worst]["confused_with"])), Path(args.figure))
                print(f"figure: {args.figure} (person {worst}, {best}'s worst, beside person "
                      f"{by[worst]['confused_with']})")
    for rname, rep in reports.items():
        if "idf1" in rep:
            print(f"\ncross-camera IDF1, {rname} (configs/epfl_terrace_tracks.yaml association replayed, clips re-embedded)")
            keys = list(next(iter(rep["idf1"].values())))
            print(f"{'':<12s}" + "".join(f"{k:>14s}" for k in keys))
            for label, v in rep["idf1"].items():
                print(f"{label:<12s}" + "".join(f"{v[k]:>14.3f}" for k in keys))
    actions = caviar_actions(shared, out / "caviar_motion", {f"adapted {k}": v for k, v in adapted.items() if v})
    print("\nactions on CAVIAR OneLeaveShop1 (people never trained on; `movement` -> standing / walking / running), "
          "tracklet level")
    print(f"{'source':<36s}{'accuracy':>9s}" + "".join(f"{'F1 ' + a:>14s}" for a in ("standing", "walking", "running"))
          + f"{'macro F1':>10s}")
    for name, m in actions.items():
        f1 = [m.get(a, {}).get("f1", 0.0) for a in ("standing", "walking", "running")]
        present = [m.get(a, {}).get("support", 0) > 0 for a in ("standing", "walking", "running")]
        macro = float(np.mean([f for f, p in zip(f1, present) if p])) if any(present) else float("nan")
        print(f"{name:<36s}{m['_overall']['accuracy']:>9.3f}" + "".join(f"{f:>14.3f}" for f in f1) + f"{macro:>10.3f}")
    print("support: " + ", ".join(f"{a} {next(iter(actions.values())).get(a, {}).get('support', 0)}"
                                  for a in ("standing", "walking", "running")))
    if args.json:
        Path(args.json).write_text(json.dumps({"reid": rows, "adapt": reports, "caviar_actions": actions}, indent=2,
                                              default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
