"""Picklable messages a camera actor sends to the Ray engine's driver (`pipeline/engines/ray_engine.py`).

Per processed frame one `CameraFrame`; when the camera stops one `CameraDone`. Both travel through Ray's object
store, a batch of them per call (`CameraWorker.take`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.types import Tracks


@dataclass
class CameraFrame:
    """One frame after detection, tracking and tracklet cropping on the camera's actor.

    index: 0-based frame number of the camera; timestamp_s: run clock (s); size: (width, height) px;
    image: BGR uint8 (H, W, 3) when the driver's stages need pixels (annotated video, sinks), else None;
    tracks: the tracker's output; clips: the Re-ID `ClipRequest`s due at this frame (crops uint8 (T, H, W, 3));
    n_detections: detector boxes; received_wall_s: wall clock when the frame was decoded (live lag);
    det_crops: (indices (K,) into tracks.detections, crops uint8 (K, H, W, 3)) of the detections the driver embeds one
    by one for the ground-plane fusion (`association.fusion.appearance: detections`), else None.
    """

    camera_id: str
    index: int
    timestamp_s: float
    size: tuple[int, int]
    image: np.ndarray | None
    tracks: Tracks
    clips: list = field(default_factory=list)
    n_detections: int = 0
    received_wall_s: float = 0.0
    det_crops: tuple | None = None


@dataclass
class CameraDone:
    """The camera stopped. status: completed | failed | truncated | stopped; clips: the final clips of every
    buffered track (the Re-ID flush); dropped / reconnects: the reader's counters; clips_skipped: periodic Re-ID
    clips the clip schedule skipped (`reid.schedule`)."""

    camera_id: str
    status: str
    frames: int
    error: str | None = None
    clips: list = field(default_factory=list)
    dropped: int = 0
    reconnects: int = 0
    clips_skipped: int = 0


__all__ = ["CameraDone", "CameraFrame"]
