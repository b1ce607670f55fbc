"""`evaluate mtmc`: cross-camera identity metrics (IDF1 / IDP / IDR, cameras concatenated) and per-camera IDF1."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _pairs(values: list[str], flag: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for v in values:
        cam, sep, path = v.partition("=")
        if not sep or not cam or not path:
            raise ValueError(f"{flag} {v!r}: expected CAM=FILE, e.g. {flag} c0=out/mot/c0.txt")
        if cam in out:
            raise ValueError(f"{flag}: camera {cam!r} given twice")
        out[cam] = Path(path)
    return out


def register_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "mtmc",
        help="cross-camera identity metrics: IDF1, IDP, IDR over all cameras + per-camera IDF1 (TrackEval)",
        description=(
            "Multi-target multi-camera scores (DukeMTMC / AI City protocol): each camera's ground truth and predictions "
            "are concatenated into one sequence, ids being global across cameras in both, so one predicted id on two "
            "different people in two cameras is penalised. Prints IDF1 / IDP / IDR (and HOTA, MOTA, ...) overall and "
            "per camera. Use the mot/ files of a run with association enabled (global ids)."
        ),
    )
    parser.add_argument("--gt", nargs="+", action="extend", required=True, metavar="CAM=GT.txt", help="ground truth per camera")
    parser.add_argument("--pred", nargs="+", action="extend", required=True, metavar="CAM=PRED.txt",
                        help="predictions per camera (a camera without one counts as all misses)")
    parser.add_argument("--min-visibility", type=float, default=0.0,
                        help="gt boxes with visibility (9th column) below this are 'don't care' (default 0)")
    parser.add_argument("--json", type=Path, default=None, help="also write the metrics to this JSON file")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pipeline.evaluation.mot import evaluate_mtmc, format_table

    try:
        gt, pred = _pairs(args.gt, "--gt"), _pairs(args.pred, "--pred")
        result = evaluate_mtmc(gt, pred, min_visibility=args.min_visibility)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = {"cross-camera": result, **{f"camera {c}": r for c, r in result["per_camera"].items()}}
    print(format_table(rows))
    print(f"cross-camera IDF1 {result['IDF1']:.4f} (IDP {result['IDP']:.4f}, IDR {result['IDR']:.4f}); gt "
          f"{result['num_gt_ids']} ids, pred {result['num_pred_ids']} ids over {len(gt)} camera(s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"gt": {c: str(p) for c, p in gt.items()}, "pred": {c: str(p) for c, p in pred.items()},
                   "min_visibility": args.min_visibility, "metrics": result}
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0
