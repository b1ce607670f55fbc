"""Typed dataclasses that flow between the pipeline's stages.

One frame per camera goes in (`Frame`), the detector turns it into `Detections`, the per-camera tracker turns those
into `Tracks`. Boxes are always pixel coordinates ``(x1, y1, x2, y2)`` in the frame's own resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One decoded image of one camera.

    camera_id: the camera's id from the config.
    index: 0-based frame number within this camera's stream (file sources: position in the file).
    timestamp_s: seconds on the run's shared clock (file: start offset + index / fps; live: wall clock at receipt).
    image: BGR uint8 array of shape (H, W, 3).
    """

    camera_id: str
    index: int
    timestamp_s: float
    image: np.ndarray

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


def _as_boxes(xyxy: np.ndarray | list | None) -> np.ndarray:
    arr = np.asarray(xyxy if xyxy is not None else np.zeros((0, 4)), dtype=np.float32)
    return arr.reshape(-1, 4)


@dataclass
class Detections:
    """Detections of one frame.

    xyxy: float32 (N, 4) pixel boxes; scores: float32 (N,) confidences in [0, 1]; class_ids: int32 (N,).
    embeddings: optional float32 (N, D) appearance of each box (NaN rows: not embedded), attached by the engine when
    the tracker or the ground-plane fusion uses per-detection appearance; None otherwise.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    embeddings: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        self.xyxy = _as_boxes(self.xyxy)
        n = len(self.xyxy)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(n)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int32).reshape(n)
        if self.embeddings is not None:
            self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
            if self.embeddings.ndim != 2 or len(self.embeddings) != n:
                raise ValueError(f"Detections.embeddings must be (N, D) with N = {n} boxes, got "
                                 f"{self.embeddings.shape}")

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index) -> "Detections":
        """Select rows with a boolean mask, an index array or a slice."""
        return Detections(self.xyxy[index], self.scores[index], self.class_ids[index],
                          self.embeddings[index] if self.embeddings is not None else None)

    @classmethod
    def from_xywh(cls, xywh: np.ndarray, scores: np.ndarray, class_ids: np.ndarray | None = None) -> "Detections":
        """Build from top-left (x, y, w, h) boxes, as MOTChallenge files store them."""
        xywh = np.asarray(xywh, dtype=np.float32).reshape(-1, 4)
        xyxy = xywh.copy()
        xyxy[:, 2:] += xyxy[:, :2]
        if class_ids is None:
            class_ids = np.zeros(len(xyxy), np.int32)
        return cls(xyxy, scores, class_ids)


@dataclass
class Tracks:
    """Tracks a tracker reports for one frame (confirmed tracks that were updated or are still output).

    track_ids: int64 (N,) ids unique per camera per run, never reused; xyxy: float32 (N, 4); scores: float32 (N,)
    (score of the matched detection); class_ids: int32 (N,). embeddings: optional float32 (N, D) appearance vectors.
    action_probs: optional float32 (N, A) latest Re-ID-AR action probabilities (NaN rows: no clip result yet; names
    from the Re-ID-AR checkpoint, `ReIDStage.action_names`). Both are attached by the Re-ID stage after tracking.
    view_ids: optional int64 (N,) the camera tracker's own track ids when `track_ids` are tracklet ids
    (`TrackletSplitter`): per-view continuity for action episodes across tracklet cuts; None otherwise.
    global_ids: optional int64 (N,) cross-camera identity of each track at this step (-1: not linked yet), written by
    the association stage. current_actions: optional list of N confirmed current action names (None: none) and
    current_action_scores float32 (N,) their smoothed scores, written by the events stage.
    detections: optional, the frame's whole detector output (`Detections`, every box the tracker was given, tracked or
    not), attached by the engine after tracking: ground-plane fusion (`association.mode: fused`) fuses detections, not
    only the tracker's confirmed boxes. predicted: optional bool (N,), True for a box the fused association projected
    from a ground track into this camera because its detector missed a person another camera sees (score 0,
    `association.fusion.predict_boxes`); None: no such rows.
    """

    track_ids: np.ndarray
    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    embeddings: np.ndarray | None = field(default=None)
    action_probs: np.ndarray | None = field(default=None)
    view_ids: np.ndarray | None = field(default=None)
    global_ids: np.ndarray | None = field(default=None)
    current_actions: list | None = field(default=None)
    current_action_scores: np.ndarray | None = field(default=None)
    detections: "Detections | None" = field(default=None)
    predicted: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        self.xyxy = _as_boxes(self.xyxy)
        n = len(self.xyxy)
        self.track_ids = np.asarray(self.track_ids, dtype=np.int64).reshape(n)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(n)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int32).reshape(n)

    @classmethod
    def empty(cls) -> "Tracks":
        return cls(np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    def __len__(self) -> int:
        return len(self.track_ids)

    def keep_rows(self, keep: np.ndarray) -> None:
        """Keep only the rows `keep` (bool (N,)) of every per-row field, in place (`detections`, the frame's whole
        detector output, is not per row and stays)."""
        for f in fields(self):
            a = getattr(self, f.name)
            if f.name == "detections" or a is None:
                continue
            setattr(self, f.name, [v for v, k in zip(a, keep) if k] if isinstance(a, list) else a[keep])
