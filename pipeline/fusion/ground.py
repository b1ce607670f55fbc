"""Foot points of detection boxes on the ground plane, in metres, with their uncertainty (2x2 covariance, m^2).

The foot point is the box's bottom-centre mapped through the camera's image -> ground homography. Its uncertainty is
the pixel uncertainty of that point (a fraction of the box height, so it scales with how big the person appears)
pushed through the homography's Jacobian: the same pixel error covers more floor far from the camera, along the
viewing direction. A floor term (`calib_sigma_m`) covers the homography's own error.

Cut boxes: a box touching the bottom edge of the frame has its feet outside the image; its foot is placed where a
standing person of the box's width would end (height = `aspect` x width, when that is lower than the box bottom) and
its vertical pixel uncertainty grows to a quarter of that height. A box much squatter than a standing person (height
< `cut_aspect` x width: cut by an occluder, or a person bending) gets the same larger uncertainty, since its bottom
edge may not be the feet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.geometry import MIN_FOOT_PX, homography_jacobian, largest_sd


@dataclass
class CameraGeometry:
    """One camera's ground geometry.

    h: (3, 3) image px -> ground homography in the file's units; units_per_m: ground units per metre (EPFL files:
    40, a 2.5 cm grid); frame_size: (width, height) px when known (cut boxes, field of view of predicted boxes).
    """

    camera_id: str
    h: np.ndarray
    units_per_m: float = 1.0
    frame_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.h = np.asarray(self.h, np.float64).reshape(3, 3)
        if not np.isfinite(self.h).all() or abs(np.linalg.det(self.h)) < 1e-15:
            raise ValueError(f"camera {self.camera_id}: the homography is singular or not finite; recalibrate it "
                             f"(run_pipeline.py calibrate --points CSV)")
        if self.units_per_m <= 0:
            raise ValueError(f"camera {self.camera_id}: units_per_m must be > 0, got {self.units_per_m}")
        self.h_m = np.diag([1.0 / self.units_per_m, 1.0 / self.units_per_m, 1.0]) @ self.h  # image px -> metres
        self.h_inv_m = np.linalg.inv(self.h_m)
        self.w_sign = 0.0  # sign of the homogeneous w of real foot points (learnt from the first boxes seen)

    def image_to_ground(self, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image points (N, 2) px -> ground points (N, 2) m and the Jacobians d(ground)/d(pixel) (N, 2, 2) m/px."""
        g, jac, w = homography_jacobian(self.h_m, px)
        if not self.w_sign and len(w):
            self.w_sign = float(np.sign(np.median(w)))
        return g, jac

    def ground_to_image(self, ground_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground points (N, 2) m -> image points (N, 2) px, and a mask (N,) of points on the camera's side of the
        horizon (the image point maps back with the sign of w that real foot points have)."""
        g = np.asarray(ground_m, np.float64).reshape(-1, 2)
        p = g @ self.h_inv_m[:, :2].T + self.h_inv_m[:, 2]
        ok = np.sign(p[:, 2]) == (self.w_sign or 1.0)
        w = np.where(np.abs(p[:, 2]) < 1e-12, 1e-12, p[:, 2])
        return p[:, :2] / w[:, None], ok

    def in_view(self, px: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Mask (N,) of image points inside the frame (all True when the frame size is unknown)."""
        px = np.asarray(px, np.float64).reshape(-1, 2)
        if self.frame_size is None:
            return np.ones(len(px), bool)
        w, h = self.frame_size
        return (px[:, 0] >= margin) & (px[:, 0] <= w - margin) & (px[:, 1] >= margin) & (px[:, 1] <= h + margin)


def foot_points(geom: CameraGeometry, xyxy: np.ndarray, foot_sigma: float = 0.04, calib_sigma_m: float = 0.15,
                aspect: float = 2.7, cut_aspect: float = 1.6, edge_px: float = 2.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground points (N, 2) m, covariances (N, 2, 2) m^2 and a `cut` mask (N,) for boxes xyxy (N, 4) px.

    foot_sigma: pixel standard deviation of the foot point as a fraction of the box height; calib_sigma_m: isotropic
    floor (homography error), metres; aspect: height/width of a standing person's box; cut_aspect: boxes squatter than
    this are treated as cut; edge_px: a bottom within this many pixels of the frame's bottom edge is cut.
    """
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    w = np.maximum(b[:, 2] - b[:, 0], 1.0)
    hgt = np.maximum(b[:, 3] - b[:, 1], 1.0)
    foot_v = b[:, 3].copy()
    cut = hgt < cut_aspect * w
    if geom.frame_size is not None:
        at_edge = b[:, 3] >= geom.frame_size[1] - edge_px
        cut |= at_edge
        expected = b[:, 1] + aspect * w
        foot_v = np.where(at_edge, np.maximum(foot_v, expected), foot_v)
    full_h = np.where(cut, np.maximum(hgt, aspect * w), hgt)
    sig_u = foot_sigma * full_h
    sig_v = np.where(cut, 0.25 * full_h, foot_sigma * full_h)
    g, jac = geom.image_to_ground(np.stack([(b[:, 0] + b[:, 2]) / 2, foot_v], axis=1))
    # J diag(sig_u^2, sig_v^2) J^T + calib^2 I, written out (a stacked matmul is slow on a few 2x2 matrices)
    ju = jac[:, :, 0] * sig_u[:, None]  # (N, 2): the ground displacement of one sigma along u
    jv = jac[:, :, 1] * sig_v[:, None]
    cov = ju[:, :, None] * ju[:, None, :] + jv[:, :, None] * jv[:, None, :]
    cov[:, 0, 0] += calib_sigma_m ** 2
    cov[:, 1, 1] += calib_sigma_m ** 2
    return g, cov, cut


def placement_sigma(geoms: list[CameraGeometry], points_m: np.ndarray, measurement_covs: np.ndarray,
                    seen: np.ndarray, min_px: float = MIN_FOOT_PX) -> np.ndarray:
    """How surely the views place people standing at points_m (N, 2) m: sigma (N,) m, the standard deviation along
    the least certain direction of each step's ground measurement (`measurement_covs` (N, 2, 2) m^2, the fusion's)
    plus a foot point error of at least min_px pixels in each view that saw the person (`seen` (N, len(geoms))
    bool), pushed through that view's homography Jacobian and combined over those views (information sum). Near a
    camera the floor term is centimetres; far from every camera, where one pixel covers metres, it dominates."""
    pts = np.asarray(points_m, np.float64).reshape(-1, 2)
    cov = np.array(measurement_covs, np.float64).reshape(-1, 2, 2)
    seen = np.asarray(seen, bool).reshape(len(pts), len(geoms)).T  # (C, N)
    h_inv = np.stack([geom.h_inv_m for geom in geoms])  # (C, 3, 3) ground m -> image px
    # every point in every view at once: the image point's homogeneous w (C, N), on the floor's side of the horizon,
    # and the Jacobian G = d(pixel)/d(ground) there (C, N, 2, 2); a pixel error s gives the ground covariance
    # s^2 G^-1 G^-T, whose inverse (the information) is G^T G / s^2: no matrix inverse per view
    _, jac, w = homography_jacobian(h_inv, pts)  # (C, N, 2, 2), (C, N)
    w_sign = np.array([geom.w_sign or 1.0 for geom in geoms])
    seen = seen & (np.sign(w) == w_sign[:, None])
    info = np.einsum("cn,cnki,cnkj->nij", seen / min_px ** 2, jac, jac)  # (N, 2, 2): sum over the views of G^T G
    det = info[:, 0, 0] * info[:, 1, 1] - info[:, 0, 1] ** 2
    det = np.where(det > 0, det, np.inf)  # no view saw the person: no floor term
    cov[:, 0, 0] += info[:, 1, 1] / det  # + the information's inverse
    cov[:, 1, 1] += info[:, 0, 0] / det
    cov[:, 0, 1] -= info[:, 0, 1] / det
    return largest_sd(cov)
