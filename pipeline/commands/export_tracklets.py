"""`export_tracklets`: cut person crops from a video with MOT boxes into the mcsa tracklet folder format."""

from __future__ import annotations

import argparse
import sys

ORDER = 45


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export_tracklets",
        help="write re-id training/test tracklets (crops) from a video + MOT boxes",
        description="Crop every box of a MOTChallenge file (ground truth or the pipeline's MOT output) out of the "
        "video into <output>/<split>/<pid>/<camera>/<tracklet>/<frame>.jpg and append one row per crop to "
        "<output>/tracklets.csv (split,pid,camera,tracklet,frame,action,x,y,w,h,quality; quality is what the "
        "pipeline's Re-ID cropper makes of the box, 0 where it would not crop it: too small, cut by the frame border, "
        "or covered more than reid.max_overlap by another box of that frame). Run it once per camera into the "
        "same output folder (running it again for a camera replaces that camera's earlier crops of the same ids). "
        "Use --id-offset when ids are not shared between videos.",
    )
    p.add_argument("--video", required=True)
    p.add_argument("--boxes", "--gt", dest="boxes", required=True, help="MOT file frame,id,x,y,w,h,conf,...")
    p.add_argument("--output", required=True, help="tracklet folder (keep it out of git, e.g. /tmp/...)")
    p.add_argument("--camera", required=True, help="camera name, e.g. c0")
    p.add_argument("--split", default="train", choices=["train", "test", "query", "gallery"])
    p.add_argument("--test-ids", default="", help="comma-separated source ids written to split `test` instead")
    p.add_argument("--test-every", type=int, default=0, metavar="N",
                   help="every N-th tracklet of each id goes to split `test` (held-out tracklets; 0: off)")
    p.add_argument("--ids", default="", help="comma-separated source ids to keep (default all)")
    p.add_argument("--id-offset", type=int, default=0, help="added to every id")
    p.add_argument("--min-height", type=int, default=0, help="skip boxes lower than this (pixels)")
    p.add_argument("--frame-step", type=int, default=1, help="keep every N-th frame")
    p.add_argument("--max-len", type=int, default=0, help="cut tracklets into pieces of at most N crops (0: off)")
    p.add_argument("--min-len", type=int, default=1, help="drop tracklets with fewer crops")
    p.add_argument("--max-gap", type=int, default=1, help="new tracklet after more than N missing sampled frames")
    p.add_argument("--min-visibility", type=float, default=None,
                   help="skip boxes whose 9th column (visibility) is below this (EPFL gt; not for MOT15 files)")
    p.add_argument("--margin", type=float, default=0.0, help="enlarge boxes by this fraction per side")
    p.add_argument("--labels", default=None, help="per-frame action CSV (e.g. CAVIAR *_labels_derived.csv)")
    p.add_argument("--label-column", default="movement")
    p.add_argument("--split-on-action", action="store_true", help="start a new tracklet where the action changes")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--skip-unusable", action="store_true", help="leave out crops the pipeline's Re-ID would not "
                   "take (quality 0), so a model trains on the crops it will be shown")
    p.add_argument("--context", default=None, metavar="MOT", help="more boxes that can cover the exported ones "
                   "(e.g. every track of the camera when --boxes holds only some)")
    p.add_argument("--max-overlap", type=float, default=0.6, help="the crop gate's reid.max_overlap (default 0.6)")
    p.add_argument("--first-frame", type=int, default=1, help="skip boxes before this 1-based frame (with "
                   "--max-frames: a time window, e.g. train on early frames and test on later ones)")
    p.set_defaults(func=main)


def _ids(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def main(args: argparse.Namespace) -> int:
    from pipeline.reid_data.export import ExportOptions, export_tracklets, read_action_labels

    opts = ExportOptions(
        camera=args.camera, split=args.split, test_ids=_ids(args.test_ids), test_every=args.test_every,
        id_offset=args.id_offset,
        min_height=args.min_height, frame_step=args.frame_step, max_len=args.max_len, max_gap=args.max_gap,
        min_len=args.min_len, min_visibility=args.min_visibility, split_on_action=args.split_on_action,
        margin=args.margin, ids=_ids(args.ids), max_frames=args.max_frames, first_frame=args.first_frame,
        skip_unusable=args.skip_unusable, context=args.context, gate_max_overlap=args.max_overlap,
    )
    try:
        labels = read_action_labels(args.labels, args.label_column) if args.labels else None
        counts = export_tracklets(args.video, args.boxes, args.output, opts, labels, progress=True)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.camera}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" -> {args.output}")
    return 0
