"""`calibrate`: a camera's image -> ground homography from >= 4 point pairs, with the reprojection error in metres.

    python run_pipeline.py calibrate --points cam1_points.csv --output configs/cam1_homography.txt
    python run_pipeline.py calibrate --points cam1_points.csv --image cam1.mp4 --check cam1_check.png

The CSV has one row per point on the floor: `x,y,X,Y` (image pixels, ground metres; a header row `x,y,X,Y` is
optional, extra columns are ignored). Use the printed (or written) matrix as `association.homographies.<camera>`
with `association.fusion.ground_units_per_m: 1`. With `--image` (a picture of the camera's view, or a video: its
first frame) a check picture is written: the fitted 1 m floor grid drawn over the frame, each clicked point (green
circle) and where the fit puts its ground point (red cross), so a wrong pair or a bent floor shows at a glance.
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
    parser.add_argument("--image", type=Path, default=None,
                        help="a frame of this camera (image file, or a video: its first frame) to draw the check "
                             "picture on: the fitted 1 m floor grid and the point pairs")
    parser.add_argument("--check", type=Path, default=None,
                        help="where to write the check picture (default: beside --output as NAME_check.png, else "
                             "calibration_check.png)")
    parser.set_defaults(func=main)


def read_frame(path: Path):
    """The picture at path, or the first frame of the video at path (BGR uint8); CalibrationError when neither."""
    import cv2

    from pipeline.fusion.calibration import CalibrationError

    if not path.is_file():
        raise CalibrationError(f"--image {path}: not found; give a picture or a video of this camera's view")
    image = cv2.imread(str(path))
    if image is None:
        cap = cv2.VideoCapture(str(path))
        ok, image = cap.read()
        cap.release()
        if not ok:
            raise CalibrationError(f"--image {path}: not a readable picture or video; give a JPEG / PNG frame or a "
                                   "video file of this camera")
    return image


def draw_check(image, h, image_px, ground_m):
    """The check picture: the 1 m floor grid of homography h (image px -> ground m) over image (BGR), each pair's
    clicked point (green circle) and its ground point put back into the image by the fit (red cross), numbered."""
    import cv2
    import numpy as np

    from pipeline.fusion.ground import CameraGeometry

    out = image.copy()
    geom = CameraGeometry("check", h)
    geom.image_to_ground(np.asarray(image_px, float))  # the clicked floor points tell the floor's side of the horizon
    to_image = geom.ground_to_image

    span = np.ptp(ground_m, axis=0)
    lo = np.floor(ground_m.min(axis=0) - np.maximum(2.0, 0.5 * span))
    hi = np.ceil(ground_m.max(axis=0) + np.maximum(2.0, 0.5 * span))
    big = 4.0 * max(out.shape[:2])
    for axis in (0, 1):
        for m in np.arange(lo[axis], hi[axis] + 1):
            t = np.linspace(lo[1 - axis], hi[1 - axis], 200)
            g = np.c_[np.full_like(t, m), t] if axis == 0 else np.c_[t, np.full_like(t, m)]
            px, ok = to_image(g)
            ok &= np.abs(px).max(axis=1) < big
            colour = (0, 200, 255) if m == 0 else (255, 200, 0)
            for a, b, good in zip(px[:-1], px[1:], ok[:-1] & ok[1:]):
                if good:
                    cv2.line(out, tuple(int(v) for v in a), tuple(int(v) for v in b), colour, 1, cv2.LINE_AA)
    back, _ = to_image(np.asarray(ground_m, float))
    for k, ((x, y), (bx, by)) in enumerate(zip(image_px, back), start=1):
        cv2.circle(out, (int(round(x)), int(round(y))), 6, (0, 200, 0), 2, cv2.LINE_AA)
        cv2.drawMarker(out, (int(round(bx)), int(round(by))), (0, 0, 255), cv2.MARKER_CROSS, 12, 2)
        cv2.putText(out, str(k), (int(x) + 8, int(y) - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 200, 0), 1,
                    cv2.LINE_AA)
    cv2.putText(out, "1 m floor grid (orange: X = 0 and Y = 0)", (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (255, 255, 255), 2, cv2.LINE_AA)
    cv2.putText(out, "1 m floor grid (orange: X = 0 and Y = 0)", (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (40, 40, 40), 1, cv2.LINE_AA)
    return out


def main(args: argparse.Namespace) -> int:
    import numpy as np

    from pipeline.fusion.calibration import CalibrationError, fit_homography, load_point_pairs, reprojection_errors_m

    try:
        image_px, ground_m = load_point_pairs(args.points)
        h = fit_homography(image_px, ground_m)
        frame = read_frame(args.image) if args.image is not None else None
    except CalibrationError as exc:
        where = "" if str(args.points) in str(exc) or str(exc).startswith("--image") else f"{args.points}: "
        print(f"error: {where}{exc}", file=sys.stderr)
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
    if frame is not None:
        import cv2

        check = args.check or (args.output.with_name(args.output.stem + "_check.png") if args.output is not None
                               else Path("calibration_check.png"))
        check.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(check), draw_check(frame, h, image_px, ground_m)):
            print(f"error: cannot write the check picture {check}: give --check a writable .png path", file=sys.stderr)
            return 2
        print(f"check picture: {check} (the 1 m grid should lie flat on the floor; each red cross on its green circle)")
    return 0
