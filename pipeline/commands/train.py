"""`train` command: train a Re-ID-AR model from a YAML config (configs/reid_ar_*.yaml)."""

from __future__ import annotations

import argparse
import logging
import sys

ORDER = 40
log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the Re-ID-AR re-identification + action model",
        description="Train Re-ID-AR (video re-id with action recognition) on MARS, LPW or exported tracklet folders. "
        "Checkpoints (weights + config + optimizer state) go to --output every train.checkpoint_every epochs and "
        "at the end (model_final.pth); --resume continues from one.",
    )
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/reid_ar_osnet_shared.yaml")
    p.add_argument("--output", default=None, help="output folder (default runs/<config name>)")
    p.add_argument("--resume", default=None, metavar="CKPT", help="checkpoint to continue from")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--max-minutes", type=float, default=None, help="override train.max_minutes (stop + checkpoint)")
    p.add_argument("--device", default=None, help="override train.device (auto, cpu, cuda, cuda:0)")
    p.add_argument("--seed", type=int, default=None, help="override train.seed (random draws of sampling, "
                   "augmentation and initialisation)")
    p.add_argument("--eval", action="store_true", help="evaluate on the query/gallery split at the end")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from models.reid.backbones import CheckpointError
    from core.device import resolve_device
    from models.reid.config import ReIDConfigError, load_reid_config

    try:
        cfg = load_reid_config(args.config)
    except ReIDConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.epochs is not None:
        cfg.train.epochs = args.epochs
    if args.max_minutes is not None:
        cfg.train.max_minutes = args.max_minutes
    if args.device is not None:
        cfg.train.device = args.device
    if args.seed is not None:
        cfg.train.seed = args.seed
    output = args.output or f"runs/{cfg.name}"
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    from pipeline.reid_data.training import evaluate_model, train
    from pipeline.reid_data.datasets import DatasetError, load_dataset

    try:
        ds = load_dataset(cfg.data, cfg.actions)
        summary = train(cfg, output, resume=args.resume, progress=not args.no_progress, dataset=ds)
    except (CheckpointError, DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"trained {len(summary['history'])} epochs in {summary['minutes']:.1f} min -> {summary['checkpoint']}")
    if summary["history"]:
        last = summary["history"][-1]
        print("last epoch: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items() if isinstance(v, float)))
    from pipeline.commands.evaluate_reid import format_results

    if summary.get("val"):
        print(f"validation (data.val_ids, time-split pseudo-cameras):\n{format_results(summary['val'])}")
    if args.eval and ds.query and ds.gallery:
        from models.reid.model import load_checkpoint

        model, _ = load_checkpoint(summary["checkpoint"], resolve_device(cfg.train.device))
        res = evaluate_model(model, ds, cfg.data.seq_len, cfg.data.input_size, cfg.data.test_sampling,
                             cfg.data.test_max_clips, device=resolve_device(cfg.train.device), progress=True,
                             clip_select=cfg.data.test_clip_select, resize=cfg.data.resize)
        print(f"test (query {cfg.data.query_camera or 'all'}, gallery {cfg.data.gallery_camera or 'all'}):")
        print(format_results(res))
    return 0
