"""`calibrate`: a camera's image -> ground homography from >= 4 point pairs, with the reprojection error in metres.

    python run_pipeline.py calibrate --points cam1_points.csv --output configs/cam1_homography.txt

The CSV has one row per point on the floor: `x,y,X,Y` (image pixels, ground metres; a header row `x,y,X,Y` is
optional, extra columns are ignored). Use the printed (or written) matrix as `association.homographies.<camera>`
with `association.fusion.ground_units_per_m: 1`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ORDER = 60


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit a camera's image->ground homography from point pairs (prints it and its error in metres)",
        description=("Fit a camera's image -> ground-plane homography from four or more point pairs: image pixels "
                     "(x, y) -> ground metres (X, Y), read from a CSV with columns x,y,X,Y. Prints the 3x3 matrix "
                     "and the reprojection error of every pair in metres. Exit 2 on bad input."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--points", required=True, type=Path, help="CSV of point pairs x,y,X,Y (px, m)")
    parser.add_argument("--output", type=Path, default=None,
                        help="also write the matrix here (9 numbers, 3 rows), for association.homographies")
    parser.add_argument("--max-error-m", type=float, default=0.25,
                        help="warn when a pair's reprojection error exceeds this, metres (default 0.25)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import numpy as np

    from pipeline.fusion.calibration import CalibrationError, fit_homography, load_point_pairs, reprojection_errors_m

    try:
        image_px, ground_m = load_point_pairs(args.points)
        h = fit_homography(image_px, ground_m)
    except CalibrationError as exc:
        print(f"error: {args.points}: {exc}" if str(args.points) not in str(exc) else f"error: {exc}", file=sys.stderr)
        return 2
    err = reprojection_errors_m(h, image_px, ground_m)
    print("homography (image px -> ground m):")
    for row in h:
        print("  " + "  ".join(f"{v: .10g}" for v in row))
    print(f"reprojection error over {len(err)} pairs: mean {err.mean():.3f} m, max {err.max():.3f} m")
    for k, ((x, y), (gx, gy), e) in enumerate(zip(image_px, ground_m, err), start=1):
        flag = "  <-- check this pair" if e > args.max_error_m else ""
        print(f"  pair {k}: ({x:.1f}, {y:.1f}) px -> ({gx:.3f}, {gy:.3f}) m  error {e:.3f} m{flag}")
    if len(err) == 4:
        print("note: 4 pairs fit exactly (error 0); add more points to measure the real error")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(args.output, h, fmt="%.12g")
        print(f"written to {args.output} (association.homographies; association.fusion.ground_units_per_m: 1)")
    return 0
