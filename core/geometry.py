"""Image -> ground-plane geometry shared by the association, the events and the fusion: homographies in files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

RELIABLE_SIGMA_M = 1.0  # a floor position less sure than this (sigma, metres) is approximate: shown so, and left out of
# metres walked, speeds and "who came near" (a step is ~0.7 m, a person's shoulders ~0.5 m wide); on Terrace the foot
# points of people in the calibrated area are sure to 0.3-0.4 m (median), those of a person walking away beyond it
# to 9 m
MIN_FOOT_PX = 2.0  # a detector's box edge wanders by a pixel or two whatever the box's size: the least pixel error of a
# foot point (4 % of a 30 px box's height, the fusion's model, is 1.2 px)


def load_homography(path: str | Path) -> np.ndarray:
    """Read a 3x3 image -> ground homography (9 numbers, row-major, whitespace- or comma-separated)."""
    try:
        values = np.array(Path(path).read_text().replace(",", " ").split(), dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: not a homography file of 9 numbers ({exc})") from None
    if values.size != 9:
        raise ValueError(f"{path}: expected 9 numbers (a 3x3 homography), got {values.size}")
    return values.reshape(3, 3)


def to_ground(h: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    """Ground points (N, 2) of boxes xyxy (N, 4) px: the bottom-centre mapped through homography `h` (3, 3)."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    pts = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, xyxy[:, 3], np.ones(len(xyxy))], axis=1) @ h.T
    w = pts[:, 2:3]
    w = np.where(np.abs(w) < 1e-12, 1e-12, w)
    return pts[:, :2] / w


def homography_jacobian(h: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points (N, 2) through homographies h (..., 3, 3) -> (the mapped points (..., N, 2), the Jacobians
    d(mapped)/d(point) (..., N, 2, 2), the homogeneous w (..., N), kept away from 0 with its sign)."""
    h = np.asarray(h, np.float64)
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    p = pts @ np.swapaxes(h[..., :, :2], -1, -2) + h[..., None, :, 2]
    w = np.where(np.abs(p[..., 2]) < 1e-12, 1e-12, p[..., 2])
    out = p[..., :2] / w[..., None]
    jac = (h[..., None, :2, :2] - out[..., :, None] * h[..., None, 2:3, :2]) / w[..., None, None]
    return out, jac, w


def largest_sd(cov: np.ndarray) -> np.ndarray:
    """The square root of the larger eigenvalue of symmetric 2x2 matrices (..., 2, 2): the standard deviation along
    the least certain direction of a covariance (or the larger singular value of J from J J^T)."""
    half_tr = (cov[..., 0, 0] + cov[..., 1, 1]) / 2
    half_diff = (cov[..., 0, 0] - cov[..., 1, 1]) / 2
    return np.sqrt(np.maximum(half_tr + np.sqrt(half_diff ** 2 + cov[..., 0, 1] ** 2), 0.0))
