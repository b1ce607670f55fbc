"""`evaluate mot`: HOTA / CLEAR / Identity metrics of one camera's MOT file against its ground truth (TrackEval)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "mot",
        help="single-camera tracking metrics: HOTA, IDF1, MOTA, ... (TrackEval)",
        description=(
            "Score a MOTChallenge-format tracking file (frame,id,x,y,w,h,...) against ground truth with TrackEval: "
            "HOTA, DetA, AssA, IDF1, IDP, IDR, MOTA, MOTP, IDSW, FP, FN. Reads MOTChallenge, PETS09-S2L1 and EPFL "
            "Terrace (frame,id,x,y,w,h,1,1,visibility) ground truth; gt rows marked 0 in column 7 are ignored."
        ),
    )
    parser.add_argument("--gt", required=True, type=Path, help="ground-truth MOT file")
    parser.add_argument("--pred", required=True, type=Path, help="predicted tracks (e.g. out/mot/<camera>.txt)")
    parser.add_argument("--json", type=Path, default=None, help="also write the metrics to this JSON file")
    parser.add_argument(
        "--min-visibility", type=float, default=0.0,
        help="gt boxes with visibility (9th column) below this are 'don't care' (default 0: every box counts, as in "
             "the GNN-CCA evaluation of EPFL Terrace)",
    )
    parser.add_argument("--frame-step", type=int, default=1,
                        help="evaluate gt frames 1, 1+k, ... only (predictions made on every k-th frame)")
    parser.add_argument("--num-frames", type=int, default=None, help="sequence length (default: last frame seen)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pipeline.evaluation.mot import evaluate_mot, format_table

    try:
        result = evaluate_mot(args.gt, args.pred, min_visibility=args.min_visibility, frame_step=args.frame_step,
                              num_frames=args.num_frames)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table({args.pred.name: result}))
    print(f"gt: {result['num_gt_ids']} ids / {result['num_gt_dets']} boxes; pred: {result['num_pred_ids']} ids / "
          f"{result['num_pred_dets']} boxes; {result['num_frames']} frames")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"gt": str(args.gt), "pred": str(args.pred), "min_visibility": args.min_visibility,
                   "frame_step": args.frame_step, "metrics": result}
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0
