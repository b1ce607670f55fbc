"""`evaluate reid`: CMC rank-1/5/10/20 + mAP (MARS protocol) and per-action metrics for a Re-ID-AR checkpoint, or
for raw backbone weights (baseline: frame features averaged over each clip, no temporal attention)."""

from __future__ import annotations

import argparse
import json
import sys


def register_evaluate(subparsers) -> None:
    p = subparsers.add_parser(
        "reid",
        help="re-id ranking (CMC, mAP) and action metrics on tracklets",
        description="Rank gallery tracklets for each query tracklet by Euclidean distance of tracklet features (mean "
        "of dense T-frame clips). Gallery entries with the query's pid AND camera are excluded (MARS protocol). "
        "--checkpoint is a Re-ID-AR checkpoint from `train`, or raw backbone weights (e.g. osnet_x0_25_msmt17.pth) "
        "for the frame-average baseline.",
    )
    p.add_argument("--checkpoint", required=True, help="Re-ID-AR checkpoint or raw backbone weights file")
    p.add_argument("--data", required=True, help="dataset root (tracklet folder from export_tracklets, MARS or LPW)")
    p.add_argument("--format", choices=["tracklets", "mars", "lpw"], default="tracklets")
    p.add_argument("--query-camera", default=None, help="tracklets format: query camera (default all)")
    p.add_argument("--gallery-camera", default=None, help="tracklets format: gallery camera (default all)")
    p.add_argument("--backbone", default=None, help="raw weights: backbone name (default: guessed from the file name)")
    p.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="default: the checkpoint's; 256 128 for raw OSNet weights, 224 112 otherwise")
    p.add_argument("--seq-len", type=int, default=4, help="clip length T (default 4)")
    p.add_argument("--sampling", choices=["dense", "evenly"], default="dense")
    p.add_argument("--max-clips", type=int, default=None, help="cap dense clips per tracklet")
    p.add_argument("--clip-select", choices=["evenly", "first"], default="evenly",
                   help="which dense clips --max-clips keeps (the official Re-ID-AR test: --max-clips 41 "
                        "--clip-select first)")
    p.add_argument("--resize", choices=["bilinear", "bicubic"], default="bilinear",
                   help="interpolation of the resize to the input size (official Re-ID-AR: bicubic)")
    p.add_argument("--gallery-junk", choices=["drop", "keep"], default="drop",
                   help="MARS: junk tracklets (id -1) in the gallery: dropped (MARS protocol, official) or kept")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--action-file-test", default=None, help="MARS: action labels parallel to test_name.txt")
    p.add_argument("--actions", nargs="*", default=None, help="tracklets format: action names (default: from the checkpoint)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=main)


def format_results(res: dict) -> str:
    lines = [
        f"queries {res['num_query']} (skipped without match: {res['num_skipped']})",
        "rank-1 {rank1:.4f}  rank-5 {rank5:.4f}  rank-10 {rank10:.4f}  rank-20 {rank20:.4f}  mAP {mAP:.4f}".format(**res),
    ]
    from pipeline.reid_data.metrics import hardest_identities

    hard = hardest_identities(res.get("by_identity") or {})
    if hard:
        lines.append("hardest identities: " + hard[0])
        lines += ["                    " + h for h in hard[1:]]
    acts = res.get("actions") or {}
    for name, m in acts.items():
        if name == "_overall":
            lines.append(f"actions: accuracy {m['accuracy']:.4f} on {m['support']} labelled tracklets")
        else:
            lines.append(f"  {name:>12s}: acc {m['accuracy']:.3f} P {m['precision']:.3f} R {m['recall']:.3f} "
                         f"F1 {m['f1']:.3f} (support {m['support']})")
    return "\n".join(lines)


def load_model_for_eval(path: str, backbone: str | None, input_size, device):
    """-> (model, input_size). A Re-ID-AR checkpoint, or raw backbone weights wrapped as a frame-average model."""
    from models.reid.backbones import BACKBONES, CheckpointError, read_torch_file
    from models.reid.model import ReIDAR, is_reid_ar_checkpoint, load_checkpoint

    obj = read_torch_file(path)
    if is_reid_ar_checkpoint(obj):
        model, _ = load_checkpoint(path, device)
        return model, tuple(input_size or model.input_size)
    name = backbone
    if name is None:
        from pathlib import Path

        stem = Path(path).name.lower()
        hits = [n for n in BACKBONES.names() if n in stem]
        if not hits:
            raise CheckpointError(
                f"{path}: raw weights but the backbone cannot be guessed from the file name; pass --backbone "
                f"({', '.join(BACKBONES.names())})"
            )
        name = max(hits, key=len)
    size = tuple(input_size or ((256, 128) if name.startswith("osnet") else (224, 112)))
    model = ReIDAR(name, num_classes=1, action_names=[], input_size=size, pretrained=path, temporal_attention=False)
    return model.to(device).eval(), size


def main(args: argparse.Namespace) -> int:
    from models.reid.backbones import CheckpointError
    from core.device import resolve_device
    from pipeline.reid_data.training import evaluate_model
    from pipeline.reid_data.datasets import DatasetError, load_lpw, load_mars, load_tracklet_folder

    device = resolve_device(args.device)
    try:
        model, size = load_model_for_eval(args.checkpoint, args.backbone, args.input_size, device)
        names = args.actions if args.actions is not None else model.action_names
        if args.format == "mars":
            ds = load_mars(args.data, None, args.action_file_test, gallery_junk=args.gallery_junk)
        elif args.format == "lpw":
            ds = load_lpw(args.data)
        else:
            ds = load_tracklet_folder(args.data, names or None, None, args.query_camera, args.gallery_camera)
    except (CheckpointError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not ds.query or not ds.gallery:
        print(f"error: {args.data}: empty query or gallery ({ds.summary()})", file=sys.stderr)
        return 2
    print(f"data: {ds.summary()}")
    res = evaluate_model(model, ds, args.seq_len, size, args.sampling, args.max_clips, device,
                         batch_size=args.batch_size, progress=True, clip_select=args.clip_select, resize=args.resize)
    print(format_results(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0
