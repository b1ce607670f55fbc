"""`export`: the whole Re-ID-AR model to ONNX / OpenVINO IR / a TensorRT engine, with a parity report."""

from __future__ import annotations

import argparse
import json
import sys

ORDER = 46

# parity goals: fp32 exports within these of PyTorch (cosine distance of embeddings, |action probability difference|)
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 5e-3  # TensorRT builds FP16 kernels


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export Re-ID-AR to ONNX / OpenVINO / TensorRT (+ metadata and a parity report)",
        description="Write the whole Re-ID-AR model (backbone, temporal attention, identity and action heads) into "
        "DIR: model.onnx (always), model.xml/.bin (openvino, fp32) or model.engine (tensorrt, fp16, CUDA machines "
        "only), metadata.json (input size, mean/std, T, embedding dim, action names) and parity.json (max abs / "
        "cosine difference of embeddings and action probabilities against PyTorch on real clips from the shared "
        "EPFL Terrace video at batch 1, 8 and 64, and both sides' clips/s). Input `clips` float32 (B, T, 3, H, W), "
        "normalised RGB; B and T dynamic. Run the folder with `reid.checkpoint: DIR`. Exit 1 when the export "
        "cannot be built here or misses the parity tolerance.",
    )
    p.add_argument("--checkpoint", required=True,
                   help="Re-ID-AR checkpoint from `train`, or raw backbone weights (frame-average model, no actions)")
    p.add_argument("--format", required=True, choices=["onnx", "openvino", "tensorrt"])
    p.add_argument("--output", required=True, help="export folder (created)")
    p.add_argument("--backbone", default=None, help="raw weights: backbone name (default: guessed from the file name)")
    p.add_argument("--clip-len", type=int, default=4, help="T of the parity clips and the TensorRT profile's optimum")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64], help="parity batch sizes")
    p.add_argument("--tolerance", type=float, default=None,
                   help=f"largest cosine distance / |prob difference| accepted (default {FP32_TOLERANCE:g}; "
                   f"{FP16_TOLERANCE:g} for tensorrt fp16)")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (no shared data needed)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of both sides in the parity check")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import torch

    from core.paths import shared_dir
    from models.reid.backbones import CheckpointError
    from models.reid.export import ExportError, check_export, export_reid_ar, tensorrt_unavailable_reason
    from pipeline.commands.evaluate_reid import load_model_for_eval

    if args.format == "tensorrt" and tensorrt_unavailable_reason():
        print(f"TensorRT engine not built: {tensorrt_unavailable_reason()}; run this on a CUDA machine with tensorrt, "
              "or use --format onnx / openvino here", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, _ = load_model_for_eval(args.checkpoint, args.backbone, None, torch.device("cpu"))
        meta = export_reid_ar(model, args.output, args.format, args.clip_len, source=str(args.checkpoint))
    except (CheckpointError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ExportError) else 2
    print(f"exported {meta.backbone} (embedding {meta.embedding_dim}, actions {meta.action_names or 'none'}, input "
          f"{meta.input_size[0]}x{meta.input_size[1]}, B and T dynamic) -> {args.output}: {', '.join(meta.files.values())}")
    if args.no_parity:
        return 0
    from pipeline.reid_data.sample_clips import terrace_clips

    try:
        clips = terrace_clips(shared_dir(), max(args.batches), args.clip_len, meta.input_size)
    except (OSError, ValueError) as exc:
        print(f"error: parity clips: {exc} (use --no-parity without the shared data)", file=sys.stderr)
        return 1
    try:
        report = check_export(model, args.output, args.format, clips, tuple(args.batches), args.threads)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    tol = args.tolerance if args.tolerance is not None else (
        FP16_TOLERANCE if args.format == "tensorrt" else FP32_TOLERANCE)
    print(f"parity vs PyTorch fp32 on {len(clips)} real Terrace clips (T={args.clip_len}), {report['runtime']}:")
    print(f"  {'batch':>5s} {'max|d emb|':>11s} {'max cos dist':>13s} {'max|d prob|':>12s} {'torch clips/s':>14s} "
          f"{'export clips/s':>15s}")
    for b, row in report["batches"].items():
        print(f"  {b:>5s} {row['max_abs_embedding']:>11.2e} {row['max_cosine_distance']:>13.2e} "
              f"{row['max_abs_action_probs']:>12.2e} {row.get('torch_clips_per_s', 0):>14.1f} "
              f"{row.get('export_clips_per_s', 0):>15.1f}")
    ok = report["max_cosine_distance"] <= tol and report["max_abs_action_probs"] <= tol
    print(f"parity {'OK' if ok else 'FAILED'} (tolerance {tol:g}); report: {args.output}/parity.json")
    report["tolerance"], report["ok"] = tol, ok
    with open(f"{args.output}/parity.json", "w") as f:
        json.dump(report, f, indent=2)
    return 0 if ok else 1
