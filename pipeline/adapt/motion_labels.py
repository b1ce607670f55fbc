"""Weak action labels from motion: standing / walking / running from each track's speed on the ground (m/s).

The speed at a box is the displacement of the track's position over `window_s` centred on it (positions in metres:
ground points through the camera's homography, else box heights x the assumed person height), divided by the time
it spans; shorter tracks use what they have. Thresholds are physical: below `standing_mps` standing, from
`running_mps` running, walking in between. These labels train the action branch on the site (`adapt`); where a
dataset has real labels (CAVIAR `movement`), `CAVIAR_TO_MOTION` maps them onto the same three names.
"""

from __future__ import annotations

import numpy as np

MOTION_ACTIONS = ["standing", "walking", "running"]
# CAVIAR `movement`: inactive = not moving, active = moving in place (arms, turning), walking, running
CAVIAR_TO_MOTION = {"inactive": "standing", "active": "standing", "walking": "walking", "running": "running"}


def track_speeds(t_s: np.ndarray, pos_m: np.ndarray, window_s: float) -> np.ndarray:
    """Speeds (N,) m/s of one track: t_s (N,) s ascending, pos_m (N, 2) m."""
    t_s = np.asarray(t_s, np.float64)
    pos_m = np.asarray(pos_m, np.float64)
    n = len(t_s)
    if n < 2:
        return np.zeros(n)
    lo = np.searchsorted(t_s, t_s - window_s / 2, side="left")
    hi = np.searchsorted(t_s, t_s + window_s / 2, side="right") - 1
    # too short a span near the ends: widen to a full window where the track allows
    short = (t_s[hi] - t_s[lo]) < window_s * 0.75
    lo = np.where(short, np.searchsorted(t_s, np.minimum(t_s, t_s[-1] - window_s), side="left"), lo)
    hi = np.where(short, np.searchsorted(t_s, t_s[lo] + window_s, side="right") - 1, hi)
    hi = np.clip(hi, 0, n - 1)
    span = t_s[hi] - t_s[lo]
    dist = np.linalg.norm(pos_m[hi] - pos_m[lo], axis=1)
    return np.where(span > 0, dist / np.maximum(span, 1e-9), 0.0)


def motion_state(speed_mps: np.ndarray, standing_mps: float, running_mps: float) -> list[str]:
    """Action names (one per speed): standing below `standing_mps`, running from `running_mps`, else walking."""
    return ["standing" if s < standing_mps else "running" if s >= running_mps else "walking" for s in speed_mps]
