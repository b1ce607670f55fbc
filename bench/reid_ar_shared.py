#!/usr/bin/env python3
"""Re-ID-AR on the shared data (issue #4): frame-average OSNet baseline (a) against a trained Re-ID-AR checkpoint (b).

    python bench/reid_ar_shared.py [--checkpoint runs/osnet_shared/model_final.pth] [--export-root /tmp/reid_export]

1. Writes the tracklet exports of configs/reid_ar_osnet_shared.yaml (header comment) when they are missing:
   <export-root>/terrace (EPFL Terrace-1 c0 + c1, split test) and <export-root>/train (PETS09-S2L1 + CAVIAR
   OneLeaveShop1 corridor/front with `movement` labels; CAVIAR people 4, 6 (corridor) and 3 (front) and every 4th
   tracklet of the other CAVIAR people are held out in split `test` for the action evaluation).
2. Re-id on Terrace, query camera c0 vs gallery camera c1, tracklet features = mean of dense T-frame clip features:
   (a) OSNet x0.25 MSMT17 weights, no training: per-frame 512-d features averaged over each clip/tracklet, ranked
       by Euclidean distance, and (a cos) the same features L2-normalised (cosine), the stronger of the two;
   (b) the checkpoint (attention-pooled bottleneck features).
   (b) ranks with the checkpoint's own embedding (model.embedding / normalize_embedding of its config).
3. When the checkpoint was trained with `data.val_ids` (people held out of training, their tracklets split in time
   into two pseudo-cameras; see pipeline/reid_data/datasets.py hold_out_validation), (a) and (b) on that validation
   split as well: the split the recipe was chosen on, Terrace being the test set.
4. Per-action precision/recall/F1 of (b) on the held-out CAVIAR tracklets (arg-max over the action scores).
Prints rank-1 / rank-5 / mAP side by side with the ratio (b)/(a); `--json` writes everything.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.paths import REPO_ROOT, shared_dir  # noqa: E402

ACTIONS = ["walking", "active", "inactive", "running"]
QUERY_CAM, GALLERY_CAM = "c0", "c1"
HELD_OUT_PEOPLE = {104, 106, 203}  # CAVIAR corridor ids 4, 6 (+100) and front id 3 (+200)


def export_specs(shared: Path) -> list[tuple[str, str, str, str | None, dict]]:
    """(folder, video, boxes, labels, ExportOptions kwargs) per export; the same as the config header's commands."""
    d = shared / "data"
    terrace = dict(split="test", frame_step=3, max_len=16, min_len=4, min_height=40, min_visibility=1, max_gap=3)
    caviar = dict(split_on_action=True, max_len=16, min_len=4, max_gap=3, test_every=4)
    cav = d / "caviar_oneleaveshop1"
    return [
        ("terrace", str(d / "epfl_terrace1/terrace1-c0.mp4"), str(d / "epfl_terrace1/gt_c0/gt.txt"), None,
         dict(camera="c0", **terrace)),
        ("terrace", str(d / "epfl_terrace1/terrace1-c1.mp4"), str(d / "epfl_terrace1/gt_c1/gt.txt"), None,
         dict(camera="c1", **terrace)),
        ("train", str(d / "pets09_s2l1/vtest.avi"), str(d / "pets09_s2l1/gt/gt.txt"), None,
         dict(camera="pets", frame_step=2, max_len=16, min_len=4, min_height=40, max_gap=3)),
        ("train", str(cav / "OneLeaveShop1cor.mpg"), str(cav / "cols1gt_mot_derived.txt"),
         str(cav / "cols1gt_labels_derived.csv"), dict(camera="caviar_cor", id_offset=100, test_ids=(4, 6), **caviar)),
        ("train", str(cav / "OneLeaveShop1front.mpg"), str(cav / "fols1gt_mot_derived.txt"),
         str(cav / "fols1gt_labels_derived.csv"), dict(camera="caviar_front", id_offset=200, test_ids=(3,), **caviar)),
    ]


def ensure_exports(root: Path, shared: Path, force: bool = False) -> None:
    """Export the tracklet folders that are missing (all of them with `force`; a re-run replaces, never appends)."""
    from pipeline.reid_data.export import ExportOptions, export_tracklets, read_action_labels

    import csv

    for folder, video, boxes, labels, kw in export_specs(shared):
        out = root / folder
        done = out / "tracklets.csv"
        if done.is_file() and not force:
            with open(done, newline="") as f:
                if any(row["camera"] == kw["camera"] for row in csv.DictReader(f)):
                    continue
        lab = read_action_labels(labels, "movement") if labels else None
        counts = export_tracklets(video, boxes, out, ExportOptions(**kw), lab)
        print(f"export {kw['camera']:>12s}: {counts} -> {out}")


def terrace_dataset(root: Path, names: list[str] | None = None):
    from pipeline.reid_data.datasets import load_tracklet_folder

    return load_tracklet_folder(root / "terrace", names, None, QUERY_CAM, GALLERY_CAM)


def validation_dataset(root: Path, val_ids: list[int], val_gap: int = 1):
    """The validation split of a checkpoint trained with `data.val_ids` (training people held out, time-split)."""
    from pipeline.reid_data.datasets import hold_out_validation, load_tracklet_folder

    ds = hold_out_validation(load_tracklet_folder(root / "train", ACTIONS), list(val_ids), val_gap)
    return ds.validation()


def held_out_actions(model, root: Path, seq_len: int, size: tuple[int, int], device) -> dict[str, dict]:
    """Per-action metrics of `model` on the held-out CAVIAR tracklets (split `test` of <root>/train): all of them,
    the held-out people only, and the held-out tracklets of training people."""
    from pipeline.reid_data.datasets import read_tracklet_folder
    from pipeline.reid_data.metrics import action_metrics
    from pipeline.reid_data.video import extract_tracklet_features

    tracks, _ = read_tracklet_folder(root / "train", list(model.action_names))
    test = [t for t in tracks.get("test", []) if t.action > 0]
    if not test or not model.action_names:
        return {}
    _, probs = extract_tracklet_features(model, test, seq_len, size, "dense", device=device)
    probs = probs.numpy()
    labels = np.array([t.action for t in test])
    people = np.array([t.pid in HELD_OUT_PEOPLE for t in test])
    return {
        "all": action_metrics(probs, labels, model.action_names),
        "held-out people": action_metrics(probs[people], labels[people], model.action_names),
        "held-out tracklets of training people": action_metrics(probs[~people], labels[~people], model.action_names),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(REPO_ROOT / "runs/osnet_shared/model_final.pth"),
                    help="trained Re-ID-AR checkpoint for (b); skipped when the file is missing")
    ap.add_argument("--baseline-weights", default=None, help="default: <shared>/models/osnet_x0_25_msmt17.pth")
    ap.add_argument("--export-root", default="/tmp/reid_export")
    ap.add_argument("--force-export", action="store_true", help="write the exports again (replacing them)")
    ap.add_argument("--baseline-json", default=None,
                    help="reuse (a) from the --json file of an earlier run instead of evaluating it again")
    ap.add_argument("--seq-len", type=int, default=4, help="clip length T of the test clips")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", default=None, help="also write all results to this JSON file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    from models.reid.backbones import read_torch_file
    from core.device import resolve_device
    from pipeline.reid_data.training import evaluate_model
    from pipeline.commands.evaluate_reid import load_model_for_eval

    shared = shared_dir()
    if not (shared / "data").is_dir():
        print(f"error: shared data folder {shared} not found (set MCSA_SHARED)", file=sys.stderr)
        return 2
    root = Path(args.export_root)
    ensure_exports(root, shared, args.force_export)
    device = resolve_device(args.device)
    results: dict[str, dict] = {}

    baseline_weights = args.baseline_weights or str(shared / "models/osnet_x0_25_msmt17.pth")
    ds = terrace_dataset(root)
    print(f"Terrace (query {QUERY_CAM}, gallery {GALLERY_CAM}): {ds.summary()}")
    if args.baseline_json:
        old = json.loads(Path(args.baseline_json).read_text())
        results["a"], results["a_cos"] = old["a"], old.get("a_cos")
    else:
        weights = baseline_weights
        model_a, size_a = load_model_for_eval(weights, "osnet_x0_25", None, device)
        t0 = time.time()
        results["a"] = evaluate_model(model_a, ds, args.seq_len, size_a, "dense", None, device)
        results["a"]["seconds"] = time.time() - t0
        results["a"]["weights"] = weights
        model_a.embedding_kind, model_a.normalize_embedding = "global", True  # the frame average, unit length
        results["a_cos"] = evaluate_model(model_a, ds, args.seq_len, size_a, "dense", None, device)

    ckpt = Path(args.checkpoint)
    model_b = None
    if ckpt.is_file():
        model_b, size_b = load_model_for_eval(str(ckpt), None, None, device)
        payload_b = read_torch_file(str(ckpt))
        ds_b = terrace_dataset(root, list(model_b.action_names) or None)
        t0 = time.time()
        # test-time resize as trained (data.resize: bilinear, or bicubic for the official recipe)
        resize_b = ((payload_b.get("train_config") or {}).get("data") or {}).get("resize", "bilinear")
        results["b"] = evaluate_model(model_b, ds_b, args.seq_len, size_b, "dense", None, device, resize=resize_b)
        results["b"]["seconds"] = time.time() - t0
        results["b"]["checkpoint"] = str(ckpt)
        results["actions_held_out"] = held_out_actions(model_b, root, args.seq_len, size_b, device)
        val_ids = ((payload_b.get("train_config") or {}).get("data") or {}).get("val_ids") or []
        if val_ids:
            val_gap = payload_b["train_config"]["data"].get("val_gap", 1)
            vds = validation_dataset(root, val_ids, val_gap)
            model_a, size_a = load_model_for_eval(baseline_weights, "osnet_x0_25", None, device)
            results["val"] = {
                "val_ids": val_ids,
                "a": evaluate_model(model_a, vds, args.seq_len, size_a, "dense", None, device),
            }
            model_a.embedding_kind, model_a.normalize_embedding = "global", True
            results["val"]["a_cos"] = evaluate_model(model_a, vds, args.seq_len, size_a, "dense", None, device)
            results["val"]["b"] = evaluate_model(model_b, vds, args.seq_len, size_b, "dense", None, device,
                                                 resize=resize_b)
    else:
        print(f"note: {ckpt} not found; only the baseline is evaluated")

    def table(title: str, res: dict) -> None:
        """(a) Euclidean, (a cos), (b) and (b) over the better (a)."""
        a, ac, b = res["a"], res.get("a_cos"), res.get("b")
        print(f"{title:<18s}{'(a) OSNet avg':>15s}{'(a) cosine':>12s}{'(b) Re-ID-AR':>15s}{'(b)/best(a)':>13s}")
        for key, label in (("rank1", "rank-1"), ("rank5", "rank-5"), ("mAP", "mAP")):
            best = max(a[key], ac[key]) if ac else a[key]
            cells = f"{a[key]:>15.4f}" + (f"{ac[key]:>12.4f}" if ac else f"{'-':>12s}")
            cells += (f"{b[key]:>15.4f}{(b[key] / best if best else float('nan')):>13.3f}" if b
                      else f"{'-':>15s}{'-':>13s}")
            print(f"{label:<18s}{cells}")
        print(f"{'queries':<18s}{a['num_query']:>15d}{'':>12s}" + (f"{b['num_query']:>15d}" if b else ""))

    print()
    table("Terrace c0 -> c1", results)
    if "val" in results:
        print(f"\nvalidation (training pids {results['val']['val_ids']} held out, early/late halves)")
        table("validation", results["val"])
    for subset, metrics in results.get("actions_held_out", {}).items():
        if not metrics:
            continue
        overall = metrics.get("_overall", {})
        print(f"\nactions, held-out CAVIAR tracklets ({subset}): accuracy {overall.get('accuracy', 0):.3f} "
              f"on {overall.get('support', 0)} tracklets")
        print(f"  {'action':<10s}{'P':>7s}{'R':>7s}{'F1':>7s}{'support':>9s}{'predicted':>11s}")
        for name, m in metrics.items():
            if name == "_overall":
                continue
            cells = [m["precision"] if m.get("predicted", 1) else None, m["recall"] if m["support"] else None,
                     m["f1"] if m["support"] or m.get("predicted", 1) else None]  # None: undefined (0 / 0)
            text = "".join(f"{v:>7.3f}" if v is not None else f"{'n/a':>7s}" for v in cells)
            print(f"  {name:<10s}{text}{m['support']:>9d}{m.get('predicted', 0):>11d}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
