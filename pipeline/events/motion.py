"""Motion-based action source: standing / walking / running from a track's speed, for runs without a trained action
branch.

Speed is the least-squares slope of the box's bottom-centre position over the last `window_s` seconds:
  - with a homography (image -> ground plane, 3x3) for the camera: ground units/s divided by `ground_units_per_m`
    -> m/s, compared with `walk_mps` / `run_mps`; except while the box stands where the homography cannot place it
    (far from the camera, `MIN_FOOT_PX` of foot point error covers more than `RELIABLE_SIGMA_M` of floor: a few
    pixels of the box's bottom are metres there, and a walker reads as a runner): then as without one;
  - without one: pixels/s divided by the median box height over the window -> box-heights/s (scale-free), compared
    with `walk_hps` / `run_hps`. Motion along the viewing direction barely moves the box but scales it: with a focal
    length `focal_px` (default: the image height, i.e. a ~53 degree vertical field of view) the depth speed is
    focal / box height x |d ln(box height) / dt| box-heights/s, added in quadrature to the image-plane speed.
Scores (3,) are soft memberships that sum to 1: a logistic ramp (width `softness` x threshold) around each threshold.
"""

from __future__ import annotations

import math

from collections import deque
from dataclasses import dataclass

import numpy as np

from core.geometry import MIN_FOOT_PX, RELIABLE_SIGMA_M, homography_jacobian, largest_sd

MOTION_ACTIONS = ["standing", "walking", "running"]


@dataclass(frozen=True)
class MotionParams:
    """Speed thresholds (box-heights/s without a homography, m/s with one) and the speed window (s)."""

    walk_hps: float = 0.2
    run_hps: float = 1.5
    walk_mps: float = 0.4
    run_mps: float = 2.5
    ground_units_per_m: float = 1.0
    window_s: float = 1.0
    min_span_s: float = 0.3
    softness: float = 0.25
    focal_px: float | None = None  # None: the image height when known; 0: no depth term


def _ramp(x: float, threshold: float, softness: float) -> float:
    width = max(threshold * softness, 1e-6)
    return float(1.0 / (1.0 + np.exp(-(x - threshold) / width)))


class MotionSource:
    """Per-track speed estimates of one camera -> scores over `MOTION_ACTIONS` (NaN until enough history)."""

    def __init__(self, params: MotionParams = MotionParams(), homography: np.ndarray | None = None,
                 image_height: int | None = None) -> None:
        self.params = params
        self.focal = params.focal_px if params.focal_px is not None else float(image_height or 0)
        self.homography = None if homography is None else np.asarray(homography, np.float64).reshape(3, 3)
        self._history: dict[int, deque] = {}

    def _points(self, xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bottom-centre points (N, 2) px, their ground points (N, 2) in ground units (the pixels without a
        homography), and which of them the homography cannot place (N,) bool: `MIN_FOOT_PX` of foot point error
        there covers more than `RELIABLE_SIGMA_M` of floor (the Jacobian's larger singular value)."""
        pts = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, xyxy[:, 3]], axis=1).astype(np.float64)
        if self.homography is None or len(pts) == 0:
            return pts, pts, np.zeros(len(pts), bool)
        ground, jac, _ = homography_jacobian(self.homography, pts)  # jac: ground units / px
        m_per_px = largest_sd(jac @ np.swapaxes(jac, -1, -2)) / self.params.ground_units_per_m
        return pts, ground, m_per_px * MIN_FOOT_PX > RELIABLE_SIGMA_M

    def speed(self, track_id: int) -> float | None:
        """The track's current speed (m/s with a homography that places it, else box-heights/s: `on_ground`); None
        without enough history."""
        return self._speed(track_id)[0]

    def _speed(self, track_id: int) -> tuple[float | None, bool]:
        """(speed, on the ground plane: m/s, else box-heights/s).

        Least-squares slopes over the window, in plain Python: the window holds a few to a few tens of points, where
        NumPy's per-call overhead would cost more than the arithmetic (this runs for every track on every frame).
        """
        hist = self._history.get(int(track_id))
        if not hist or hist[-1][0] - hist[0][0] < self.params.min_span_s or len(hist) < 3:
            return None, False
        on_ground = self.homography is not None and not any(h[6] for h in hist)
        ix, iy = (1, 2) if on_ground else (4, 5)  # ground points, or the pixels
        n = len(hist)
        t_mean = sum(h[0] for h in hist) / n
        x_mean = sum(h[ix] for h in hist) / n
        y_mean = sum(h[iy] for h in hist) / n
        denom = sxt = syt = 0.0
        for h in hist:
            dt = h[0] - t_mean
            denom += dt * dt
            sxt += dt * (h[ix] - x_mean)
            syt += dt * (h[iy] - y_mean)
        v = math.hypot(sxt / denom, syt / denom)
        if on_ground:
            return v / self.params.ground_units_per_m, True
        heights = sorted(max(h[3], 1.0) for h in hist)
        mid = n // 2
        height = max(heights[mid] if n % 2 else 0.5 * (heights[mid - 1] + heights[mid]), 1.0)
        v /= height
        if self.focal > 0:
            logs = [math.log(max(h[3], 1.0)) for h in hist]
            l_mean = sum(logs) / n
            slt = sum((h[0] - t_mean) * (lg - l_mean) for h, lg in zip(hist, logs))
            v = math.hypot(v, self.focal / height * abs(slt / denom))
        return v, False

    def scores_for(self, speed: float | None, on_ground: bool | None = None) -> np.ndarray:
        """Soft (standing, walking, running) memberships for a speed (m/s on the ground plane, else box-heights/s;
        on_ground None: whether the camera has a homography); NaN for None."""
        if speed is None:
            return np.full(3, np.nan, np.float32)
        p = self.params
        on_ground = self.homography is not None if on_ground is None else on_ground
        walk, run = (p.walk_mps, p.run_mps) if on_ground else (p.walk_hps, p.run_hps)
        moving = _ramp(speed, walk, p.softness)
        fast = _ramp(speed, run, p.softness)
        return np.asarray([1.0 - moving, moving * (1.0 - fast), moving * fast], np.float32)

    def update(self, timestamp_s: float, track_ids: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        """Add one frame's boxes (N, 4) px; returns scores (N, 3) (NaN rows: not enough history yet)."""
        xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
        px, ground, far = self._points(xyxy)
        out = np.full((len(xyxy), 3), np.nan, np.float32)
        for i, tid in enumerate(np.asarray(track_ids).tolist()):
            hist = self._history.setdefault(int(tid), deque())
            # (t, ground x, y, box height, pixel x, y, not placeable)
            hist.append((float(timestamp_s), ground[i, 0], ground[i, 1], float(xyxy[i, 3] - xyxy[i, 1]), px[i, 0],
                         px[i, 1], bool(far[i])))
            while hist and hist[0][0] < timestamp_s - self.params.window_s:
                hist.popleft()
            out[i] = self.scores_for(*self._speed(tid))
        return out

    def forget(self, track_id: int) -> None:
        self._history.pop(int(track_id), None)


__all__ = ["MOTION_ACTIONS", "MotionParams", "MotionSource"]
