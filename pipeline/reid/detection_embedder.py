"""`DetectionEmbedder`: one appearance embedding per detection, for the tracker and the ground-plane fusion.

Used only when someone reads them: a tracker with an appearance cost (`Tracker.wants_embeddings`, e.g. mcsa with
`appearance_weight` > 0), or the ground-plane fusion with `association.fusion.appearance: detections`, the default
of `association.mode: fused`, for the fused cameras (`fusion_embedded_cameras`). The detections of every camera's current frame go through
the Re-ID-AR model in ONE batch as single-frame clips (T = 1); detections below `min_score` or `min_box_height` get a
NaN row (their costs keep the geometric terms only). Under Ray the camera actors cut the crops (`detection_crops`) and
the driver embeds them (`DetectionEmbedder.embed_crops`).
"""

from __future__ import annotations

import numpy as np

from pipeline.reid.cropper import crop_resize
from core.types import Detections, Frame


MIN_BOX_HEIGHT_PX = 24.0  # shorter boxes get no embedding (too few pixels for the model's input)


def fusion_embedded_cameras(config) -> set[str]:
    """The cameras whose detections the ground-plane fusion reads each with its own embedding (`association.mode:
    fused` with `fusion.appearance: detections` and Re-ID on): the fused cameras, none otherwise."""
    a = config.association
    if config.reid.enabled and a.enabled and a.mode == "fused" and a.fusion.appearance == "detections":
        return a.fused_cameras
    return set()


def detection_embedding_min_score(config, tracker) -> float:
    """The lowest detection score anyone reading the embeddings uses: the tracker's first-stage threshold when it has
    an appearance cost, the fusion's `high_score` (the boxes that start tracks and feed their appearance) when it
    reads detections' appearance; the lower of the two when both do."""
    scores = []
    if tracker is not None and tracker.wants_embeddings:
        scores.append(float(tracker.embedding_min_score))
    if fusion_embedded_cameras(config):
        scores.append(float(config.association.fusion.high_score))
    return min(scores) if scores else 1.0


def detection_crops(image: np.ndarray, dets: Detections, input_size: tuple[int, int], resize: str = "bilinear",
                    min_score: float = 0.3, min_box_height: float = MIN_BOX_HEIGHT_PX) -> tuple[np.ndarray, np.ndarray]:
    """The crops to embed of one frame's detections: (indices (K,) into dets, crops uint8 (K, H, W, 3) RGB at the
    model's input_size (H, W)); detections below min_score or shorter than min_box_height px are left out."""
    heights = dets.xyxy[:, 3] - dets.xyxy[:, 1]
    idx = np.flatnonzero((dets.scores >= min_score) & (heights >= min_box_height))
    h, w = int(input_size[0]), int(input_size[1])
    crops = np.zeros((len(idx), h, w, 3), np.uint8)
    for k, j in enumerate(idx.tolist()):
        crops[k] = crop_resize(image, dets.xyxy[j], (h, w), resize)
    return idx, crops


class DetectionEmbedder:
    """Embeds the detections of a step of frames (all cameras) with a `ClipEncoder`-like object (`encode`,
    `embedding_dim`, `input_size`, `resize`: a local encoder, or the Ray engine's remote one).

    min_score: detections scoring below this get no embedding (`detection_embedding_min_score`); min_box_height: px;
    max_batch: crops per model call.
    """

    def __init__(self, encoder, min_score: float = 0.3, min_box_height: float = MIN_BOX_HEIGHT_PX,
                 max_batch: int = 64) -> None:
        self.encoder = encoder
        self.min_score = float(min_score)
        self.min_box_height = float(min_box_height)
        self.max_batch = int(max_batch)
        self.crops_embedded = 0
        warm_up = getattr(encoder, "warm_up", None)  # CUDA: every padded size of T = 1 clips once, on this thread
        if warm_up is not None:  # (the caller's, which embeds from now on: cuDNN's plans are kept per thread)
            warm_up(self.max_batch, 1)

    def crops(self, image: np.ndarray, dets: Detections) -> tuple[np.ndarray, np.ndarray]:
        """`detection_crops` of one frame with this embedder's model input and thresholds."""
        return detection_crops(image, dets, tuple(self.encoder.input_size), self.encoder.resize, self.min_score,
                               self.min_box_height)

    def embed(self, frames: list[Frame], detections: list[Detections]) -> list[np.ndarray]:
        """For each (frame, detections) pair, float32 (N_i, D) embeddings; rows of skipped detections are NaN."""
        return self.embed_crops([(len(d), *self.crops(f.image, d)) for f, d in zip(frames, detections)])

    def embed_crops(self, per_frame: list[tuple[int, np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """per_frame: (N_i detections, indices (K_i,), crops (K_i, H, W, 3)) of each frame -> float32 (N_i, D)
        embeddings, NaN rows where no crop was made; every frame's crops in batches of max_batch (T = 1 clips)."""
        dim = int(self.encoder.embedding_dim)
        out = [np.full((n, dim), np.nan, np.float32) for n, _, _ in per_frame]
        where = [(k, int(j)) for k, (_, idx, _) in enumerate(per_frame) for j in idx.tolist()]
        if not where:
            return out
        crops = np.concatenate([c for _, _, c in per_frame if len(c)])
        for start in range(0, len(crops), self.max_batch):
            emb, _ = self.encoder.encode(crops[start:start + self.max_batch][:, None])  # (B, 1, H, W, 3)
            for (k, j), e in zip(where[start:start + self.max_batch], emb):
                out[k][j] = e
        self.crops_embedded += len(crops)
        return out
