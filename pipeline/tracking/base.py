"""The per-camera tracker interface and its registry.

A tracker owns the state of ONE camera: create one instance per camera. Trackers are chosen by name in the config
(`tracker.name`) and built with `build_tracker(name, **params)`. A tracker whose parameters are set in seconds takes a
`frame_rate` keyword (frames/s); `build_tracker_from_config` passes each camera's own rate to it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from core.registry import Registry
from core.types import Detections, Tracks

TRACKERS: Registry["Tracker"] = Registry("tracker")


class Tracker(ABC):
    """Associates each frame's detections with tracks of one camera."""

    @abstractmethod
    def update(self, detections: Detections, frame: np.ndarray | None = None) -> Tracks:
        """Advance one frame. `frame` is the BGR image (H, W, 3), used for image bounds and appearance cues.

        Returns the tracks to report for this frame (confirmed tracks matched in this frame).
        """

    @property
    def wants_embeddings(self) -> bool:
        """Whether `update` uses per-detection appearance embeddings (`update(dets, frame, embeddings=(N, D))`)."""
        return False

    @property
    def embedding_min_score(self) -> float:
        """Detections below this score get no appearance embedding (NaN row): the tracker matches them on motion
        only (its high-score threshold)."""
        return 0.3

    @abstractmethod
    def reset(self) -> None:
        """Forget every track; ids keep increasing (they are never reused within a run)."""


def build_tracker(name: str, **params) -> Tracker:
    """Build a registered tracker by name; `params` are its constructor keywords."""
    import pipeline.tracking  # noqa: F401  (registers the built-in trackers)

    return TRACKERS.get(name)(**params)
