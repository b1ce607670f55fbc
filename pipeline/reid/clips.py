"""Dataclasses that cross the Re-ID stage's boundaries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ClipRequest:
    """T crops of one track, ready for the model.

    crops: uint8 (T, H, W, 3) RGB at the model's input size; timestamps_s: float64 (T,); boxes: float32 (T, 4) xyxy px;
    quality: mean crop quality in [0, 1]; reason: 'periodic' or 'end'; has_embedding: the track already has an
    appearance (such clips are dropped first under back-pressure); cut_frame / cut_t_s: the camera's 0-based frame
    count and the time (s) of the frame the clip was cut at (-1 / NaN: unknown); the result carries them back to the
    clip schedule.
    """

    camera_id: str
    track_id: int
    crops: np.ndarray
    timestamps_s: np.ndarray
    boxes: np.ndarray
    quality: float
    reason: str = "periodic"
    has_embedding: bool = False
    cut_frame: int = -1
    cut_t_s: float = float("nan")

    @property
    def key(self) -> tuple[str, int]:
        return (self.camera_id, self.track_id)

    def result(self, embedding: np.ndarray, action_probs: np.ndarray) -> "ClipResult":
        """This clip's `ClipResult` from the model's outputs for it: embedding (D,), action_probs (A,)."""
        return ClipResult(self.camera_id, self.track_id, embedding, action_probs, float(self.timestamps_s[0]),
                          float(self.timestamps_s[-1]), self.quality, self.reason, self.cut_frame, self.cut_t_s)


@dataclass
class ClipResult:
    """The model's output for one `ClipRequest`: embedding float32 (D,), action_probs float32 (A,); cut_frame /
    cut_t_s: the request's."""

    camera_id: str
    track_id: int
    embedding: np.ndarray
    action_probs: np.ndarray
    t_start: float
    t_end: float
    quality: float
    reason: str = "periodic"
    cut_frame: int = -1
    cut_t_s: float = float("nan")

    @property
    def key(self) -> tuple[str, int]:
        return (self.camera_id, self.track_id)


@dataclass
class AppearanceUpdate:
    """A clip result applied to its track, as the Re-ID stage sends it on (`Step.appearance`).

    result: the clip's own output; embedding float32 (D,): the track's running appearance after it (L2-normalised);
    action_probs float32 (A,): the track's latest action probabilities; n_clips: clips folded into the track so far.
    """

    result: ClipResult
    embedding: np.ndarray
    action_probs: np.ndarray
    n_clips: int

    @property
    def key(self) -> tuple[str, int]:
        return self.result.key
