"""People tracked on the ground plane: one constant-velocity Kalman filter (filterpy) per person, in metres.

State (4): x, y (m), vx, vy (m/s); measurement: the fused ground point (2) with its covariance. The process noise is
a white acceleration of `accel_sigma` m/s^2 (discretised per step from the step's duration in seconds), so a track
unseen for longer widens its gate on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from filterpy.kalman import KalmanFilter


@dataclass
class ViewMemory:
    """What one view last saw of a ground track: time s, box xyxy (4,) px, and whether it was a real detection."""

    t: float
    xyxy: np.ndarray


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
        self.accel_sigma = accel_sigma
        self.t = t  # time of the state, s
        self.first_t = t
        self.last_update_t = t
        self.hits = 1
        self.views: dict[str, ViewMemory] = {}
        self.embedding: np.ndarray | None = None
        self.n_embeddings = 0

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
        self.kf.F = np.array([[1.0, 0, dt, 0], [0, 1.0, 0, dt], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
        q = self.accel_sigma ** 2
        g = np.array([[dt ** 4 / 4, dt ** 3 / 2], [dt ** 3 / 2, dt ** 2]]) * q
        Q = np.zeros((4, 4))
        Q[np.ix_([0, 2], [0, 2])] = g
        Q[np.ix_([1, 3], [1, 3])] = g
        self.kf.Q = Q
        self.kf.predict()
        self.t = t

    def update(self, t: float, point: np.ndarray, cov: np.ndarray) -> None:
        """Fold in a ground measurement point (2,) m with covariance (2, 2) m^2 taken at time t (s)."""
        self.predict(t)
        self.kf.update(point, R=cov)
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
