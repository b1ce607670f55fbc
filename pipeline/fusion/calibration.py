"""Image -> ground homography of one camera from >= 4 point pairs (pixels -> metres), with its reprojection error.

A user clicks four or more points on the floor in the camera image (x, y in pixels) and measures the same points on
the ground (X, Y in metres, any fixed origin shared by the cameras of one site). `fit_homography` solves the
normalised direct linear transform (least squares over all pairs) and `reprojection_errors_m` reports how far each
image point lands from its measured ground point, in metres.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


class CalibrationError(ValueError):
    """Bad calibration input (too few or degenerate point pairs, unreadable CSV)."""


def _normaliser(pts: np.ndarray) -> np.ndarray:
    """3x3 similarity moving `pts` (N, 2) to zero mean and mean distance sqrt(2) from the origin (Hartley)."""
    mean = pts.mean(axis=0)
    scale = np.sqrt(2.0) / max(float(np.mean(np.linalg.norm(pts - mean, axis=1))), 1e-12)
    return np.array([[scale, 0, -scale * mean[0]], [0, scale, -scale * mean[1]], [0, 0, 1.0]])


def _collinear(pts: np.ndarray, tol: float = 1e-6) -> bool:
    """True when the points (N, 2) span less than a 2-D area (all on one line, or repeated)."""
    centred = pts - pts.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    return s.size < 2 or s[1] <= tol * max(s[0], 1e-12)


def fit_homography(image_px: np.ndarray, ground_m: np.ndarray) -> np.ndarray:
    """3x3 homography H with ground ~ H @ [x, y, 1] from pairs image_px (N, 2) pixels -> ground_m (N, 2) metres,
    N >= 4 spread over the floor (not all on one line). Normalised DLT, least squares; H[2, 2] = 1 when possible. Raises CalibrationError naming the problem."""
    img = np.asarray(image_px, np.float64)
    gnd = np.asarray(ground_m, np.float64)
    if img.ndim != 2 or img.shape[1:] != (2,) or gnd.shape != img.shape:
        raise CalibrationError(f"point pairs must be two (N, 2) arrays of the same length, got image {img.shape} and "
                               f"ground {gnd.shape}")
    if len(img) < 4:
        raise CalibrationError(f"a homography needs at least 4 point pairs, got {len(img)}: add points on the floor "
                               f"seen by the camera")
    if not (np.isfinite(img).all() and np.isfinite(gnd).all()):
        raise CalibrationError("point pairs contain NaN or infinite values")
    if _collinear(img) or _collinear(gnd):
        raise CalibrationError("the calibration points lie on one line (or repeat): choose points spread over the "
                               "floor, at least 4 with no 3 on a line")
    ti, tg = _normaliser(img), _normaliser(gnd)
    a = np.c_[img, np.ones(len(img))] @ ti.T
    b = np.c_[gnd, np.ones(len(gnd))] @ tg.T
    rows = []
    for (x, y, w), (u, v, s) in zip(a, b):
        rows.append([0, 0, 0, -s * x, -s * y, -s * w, v * x, v * y, v * w])
        rows.append([s * x, s * y, s * w, 0, 0, 0, -u * x, -u * y, -u * w])
    _, sv, vt = np.linalg.svd(np.asarray(rows))
    hn = vt[-1].reshape(3, 3)
    if len(img) == 4 and sv[-2] < 1e-9 * sv[0]:
        raise CalibrationError("the 4 calibration points are degenerate (3 on a line): add or move points")
    h = np.linalg.inv(tg) @ hn @ ti
    if abs(h[2, 2]) > 1e-12:
        h = h / h[2, 2]
    if abs(np.linalg.det(h)) < 1e-15:
        raise CalibrationError("the fitted homography is singular: check the point pairs (mixed up rows?)")
    return h


def apply_homography(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map points (N, 2) through homography h (3, 3) -> (N, 2)."""
    p = np.c_[np.asarray(pts, np.float64).reshape(-1, 2), np.ones(len(np.asarray(pts).reshape(-1, 2)))] @ h.T
    w = np.where(np.abs(p[:, 2:3]) < 1e-12, 1e-12, p[:, 2:3])
    return p[:, :2] / w


def reprojection_errors_m(h: np.ndarray, image_px: np.ndarray, ground_m: np.ndarray) -> np.ndarray:
    """Per pair (N,): distance in metres between H(image point) and the measured ground point."""
    return np.linalg.norm(apply_homography(h, image_px) - np.asarray(ground_m, np.float64), axis=1)


def load_point_pairs(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a CSV of point pairs: header `x,y,X,Y` (image pixels, ground metres; extra columns ignored, a `camera`
    column allowed) or four numbers a row without header. Returns (image_px (N, 2), ground_m (N, 2))."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: point-pairs file not found (CSV with columns x,y,X,Y: image px, ground m)")
    rows = [r for r in csv.reader(path.read_text().splitlines()) if r and not r[0].lstrip().startswith("#")]
    if not rows:
        raise CalibrationError(f"{path}: no point pairs (CSV with columns x,y,X,Y: image px, ground m)")
    head = [c.strip() for c in rows[0]]
    if {"x", "y", "X", "Y"} <= set(head):
        cols = [head.index(k) for k in ("x", "y", "X", "Y")]
        rows = rows[1:]
    else:
        cols = [0, 1, 2, 3]
    values = []
    for r in rows:
        try:
            values.append([float(r[c]) for c in cols])
        except (ValueError, IndexError):
            raise CalibrationError(f"{path}: row {r!r} is not four numbers x,y,X,Y (image px, ground m)") from None
    arr = np.asarray(values, np.float64).reshape(-1, 4)
    return arr[:, :2], arr[:, 2:]
