"""People tracked on the ground plane: one constant-velocity Kalman filter (filterpy) per person, in metres.

State (4): x, y (m), vx, vy (m/s); measurement: the fused ground point (2) with its covariance. The process noise is
a white acceleration of `accel_sigma` m/s^2 (discretised per step from the step's duration in seconds), so a track
unseen for longer widens its gate on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from filterpy.kalman import KalmanFilter


@lru_cache(maxsize=64)
def _transition_cached(dt: float) -> np.ndarray:
    return np.array([[1.0, 0, dt, 0], [0, 1.0, 0, dt], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])


@lru_cache(maxsize=64)
def _process_noise_cached(dt: float, accel_sigma: float) -> np.ndarray:
    g = np.array([[dt ** 4 / 4, dt ** 3 / 2], [dt ** 3 / 2, dt ** 2]]) * accel_sigma ** 2
    q = np.zeros((4, 4))
    q[np.ix_([0, 2], [0, 2])] = g
    q[np.ix_([1, 3], [1, 3])] = g
    return q


def _transition(dt: float) -> np.ndarray:
    """Constant-velocity transition (4, 4) for a step of dt seconds."""
    return _transition_cached(round(dt, 6))


def inv_2x2(m: np.ndarray) -> np.ndarray:
    """Inverse of one 2x2 matrix in closed form: the filter's innovation covariance S (2, 2), a few times faster than
    np.linalg.inv on so small a matrix (filterpy's documented `KalmanFilter.inv` hook)."""
    a, b, c, d = m[0, 0], m[0, 1], m[1, 0], m[1, 1]
    det = a * d - b * c
    return np.array([[d, -b], [-c, a]]) / det


def _process_noise(dt: float, accel_sigma: float) -> np.ndarray:
    """White-acceleration process noise (4, 4) of a dt-second step, accel_sigma in m/s^2."""
    return _process_noise_cached(round(dt, 6), accel_sigma)


@dataclass
class ViewMemory:
    """What one view last saw of a ground track: time s, its box xyxy (4,) px, and the track's ground position (2,) m
    just after that box was folded in (so later boxes in this view move with the track, free of the view's own
    calibration bias). offset: running mean of (this view's foot point - the multi-view fused point), m: where the
    homographies of overlapping views disagree (by up to a metre on the EPFL scenes), a view seeing the person alone
    is corrected by it, so the track does not jump when views come and go."""

    t: float
    xyxy: np.ndarray
    ground: np.ndarray
    offset: np.ndarray = field(default_factory=lambda: np.zeros(2))  # this view's bias for this person (2,) m
    hits: int = 1  # consecutive boxes of this view in this track (a gap over the view memory restarts the count)
    steady: int = 1  # boxes in a row of this view each overlapping the one before (box continuity; until confirmed)


class GroundTrack:
    """One person on the ground plane. `track_id` is internal; `global_id` is given at confirmation."""

    def __init__(self, track_id: int, t: float, point: np.ndarray, cov: np.ndarray, accel_sigma: float,
                 speed_sigma: float) -> None:
        self.track_id = track_id
        self.global_id: int | None = None
        self.kf = KalmanFilter(dim_x=4, dim_z=2)
        self.kf.x = np.array([point[0], point[1], 0.0, 0.0])
        self.kf.P = np.diag([cov[0, 0], cov[1, 1], speed_sigma ** 2, speed_sigma ** 2])
        self.kf.P[:2, :2] = cov
        self.kf.H = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
        self.kf.inv = inv_2x2
        self.accel_sigma = accel_sigma
        self.t = t  # time of the state, s
        self.first_t = t
        self.last_update_t = t
        self.last_measurement_cov = np.asarray(cov, np.float64)  # (2, 2) m^2 of the latest ground measurement
        self.hits = 1
        self.views: dict[str, ViewMemory] = {}
        self.embedding: np.ndarray | None = None
        self.n_embeddings = 0
        self.close_steps: dict[int, int] = {}  # other track id -> consecutive steps spent near it in disjoint views

    @property
    def position(self) -> np.ndarray:
        return self.kf.x[:2].copy()

    @property
    def position_cov(self) -> np.ndarray:
        return self.kf.P[:2, :2].copy()

    def predict(self, t: float) -> None:
        """Advance the state to time t (s); nothing when t is not later than the state."""
        dt = t - self.t
        if dt <= 0:
            return
        self.kf.predict(F=_transition(dt), Q=_process_noise(dt, self.accel_sigma))
        self.t = t

    def update(self, t: float, point: np.ndarray, cov: np.ndarray) -> None:
        """Fold in a ground measurement point (2,) m with covariance (2, 2) m^2 taken at time t (s)."""
        self.predict(t)
        self.kf.update(point, R=cov)
        self.last_measurement_cov = np.asarray(cov, np.float64)
        self.last_update_t = t
        self.hits += 1

    def add_embedding(self, emb: np.ndarray, momentum: float = 0.9) -> None:
        """Running appearance: exponential mean of L2-normalised embeddings (D,), renormalised."""
        if self.embedding is None:
            self.embedding = emb.astype(np.float32).copy()
        else:
            e = momentum * self.embedding + (1 - momentum) * emb
            self.embedding = (e / max(float(np.linalg.norm(e)), 1e-12)).astype(np.float32)
        self.n_embeddings += 1


@dataclass
class TrackBook:
    """The live ground tracks and the id counters."""

    tracks: list[GroundTrack] = field(default_factory=list)
    next_track_id: int = 1
    next_global_id: int = 1
