"""`DetectionEmbedder`: one appearance embedding per detection, for trackers with an appearance cost.

Used only when the tracker asks for it (`Tracker.wants_embeddings`, e.g. mcsa with `appearance_weight` > 0). The
detections of every camera's current frame go through the Re-ID-AR model in ONE batch as single-frame clips (T = 1);
detections below `min_score` or `min_box_height` get a NaN row (the tracker keeps their IoU-only cost).
"""

from __future__ import annotations

import numpy as np

from pipeline.reid.cropper import crop_resize
from core.types import Detections, Frame


class DetectionEmbedder:
    """Embeds the detections of a step of frames (all cameras) with a `ClipEncoder`-like object.

    min_score: detections scoring below this get no embedding (use the tracker's first-stage threshold);
    min_box_height: px; max_batch: crops per model call.
    """

    def __init__(self, encoder, min_score: float = 0.3, min_box_height: float = 24.0, max_batch: int = 64) -> None:
        self.encoder = encoder
        self.min_score = float(min_score)
        self.min_box_height = float(min_box_height)
        self.max_batch = int(max_batch)
        self.crops_embedded = 0

    def embed(self, frames: list[Frame], detections: list[Detections]) -> list[np.ndarray]:
        """For each (frame, detections) pair, float32 (N_i, D) embeddings; rows of skipped detections are NaN."""
        dim = int(self.encoder.embedding_dim)
        out = [np.full((len(d), dim), np.nan, np.float32) for d in detections]
        crops, where = [], []
        for k, (frame, dets) in enumerate(zip(frames, detections)):
            heights = dets.xyxy[:, 3] - dets.xyxy[:, 1]
            for j in np.flatnonzero((dets.scores >= self.min_score) & (heights >= self.min_box_height)):
                crops.append(crop_resize(frame.image, dets.xyxy[j], self.encoder.input_size, self.encoder.resize))
                where.append((k, int(j)))
        for start in range(0, len(crops), self.max_batch):
            chunk = np.stack(crops[start:start + self.max_batch])[:, None]  # (B, 1, H, W, 3)
            emb, _ = self.encoder.encode(chunk)
            for (k, j), e in zip(where[start:start + self.max_batch], emb):
                out[k][j] = e
        self.crops_embedded += len(crops)
        return out
