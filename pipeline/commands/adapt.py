"""`adapt` command: learn the site's cameras without labels (pipeline/adapt/site.py)."""

from __future__ import annotations

import argparse
import logging
import sys

ORDER = 42
log = logging.getLogger("mcsa.adapt")

EPILOG = """\
how it works (README 'Adapt Re-ID-AR to your site'):
  1. tracks every camera (or reuses --run DIR of a finished `run`)
  2. splits the recording in time: the first part trains, the last adapt.val_fraction validates
  3. cuts each camera's tracks where a tracker can swap people (two people meet, or the feet jump farther than a
     walker gets), then mines pseudo-identities from geometry and time: one person = the same ground spot in two
     overlapping views at the same moment, or a track continuing another where it ended; people seen together are
     different
  4. labels each track standing / walking / running from its ground speed (the action branch learns these)
  5. trains Re-ID-AR from the recipe's pretrained backbone (adapt.recipe, configs/adapt/) and compares it with the
     pretrained model on the held-out part; prints which one to use

outputs (DIR = --output): model_adapted.pth (reid.checkpoint), adapt_report.json, tracklets/ (mined crops),
  train/ (checkpoints), run/ (the tracking run, unless --run)

examples:
  python run_pipeline.py adapt --config configs/epfl_terrace.yaml --output runs/terrace_site
  python run_pipeline.py adapt --config configs/epfl_terrace.yaml --run out --output runs/terrace_site \\
      --gt c0=../shared/data/epfl_terrace1/gt_c0/gt.txt --gt c1=../shared/data/epfl_terrace1/gt_c1/gt.txt
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "adapt", help="adapt Re-ID-AR to your cameras without labels (mined identities + motion action labels)",
        description="Site adaptation: mine training identities from the cameras' geometry and time (overlapping "
        "calibrated views, track continuity), label actions from ground speed, and train Re-ID-AR on them. Needs "
        "a config with the cameras, their homographies (association.homographies) and which views overlap "
        "(association.topology).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", required=True, help="the site's pipeline config (cameras, homographies, "
                   "topology; the adapt: section tunes mining and training)")
    p.add_argument("--output", "-o", required=True, help="output folder (model_adapted.pth, adapt_report.json, ...)")
    p.add_argument("--run", default=None, metavar="DIR", help="reuse this finished run's mot_local/ (or mot/) tracks "
                   "instead of tracking again")
    p.add_argument("--max-frames", type=int, default=None, help="use only each camera's first N frames")
    p.add_argument("--max-minutes", type=float, default=None, help="override adapt.max_minutes (training time)")
    p.add_argument("--recipe", default=None, help="override adapt.recipe (a Re-ID-AR training YAML)")
    p.add_argument("--gt", action="append", default=[], metavar="CAM=MOT", help="ground truth of a camera (MOT "
                   "file): reports how pure the mined identities are; never used to mine or train")
    p.add_argument("--mine-only", action="store_true", help="stop after mining and exporting (no training)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
        if args.max_minutes is not None:
            cfg.adapt.max_minutes = args.max_minutes
        if args.recipe:
            cfg.adapt.recipe = args.recipe
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.max_frames is not None and args.max_frames < 1:
        print(f"error: --max-frames must be >= 1, got {args.max_frames}", file=sys.stderr)
        return 2
    gt = {}
    for item in args.gt:
        cam, sep, path = item.partition("=")
        if not sep or cam not in {c.id for c in cfg.cameras}:
            print(f"error: --gt {item!r}: expected CAM=PATH with a camera id of the config", file=sys.stderr)
            return 2
        gt[cam] = path
    from models.reid.backbones import CheckpointError
    from models.reid.config import ReIDConfigError
    from pipeline.adapt.site import AdaptError, adapt_site, format_report
    from pipeline.reid_data.datasets import DatasetError

    try:
        report = adapt_site(cfg, args.output, args.run, args.max_frames, gt, progress=not args.no_progress,
                            train=not args.mine_only)
    except (AdaptError, CheckpointError, ReIDConfigError, DatasetError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0
