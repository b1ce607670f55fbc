"""Vectorised geometry and assignment helpers shared by the trackers."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from core.types import Detections

_EMPTY_MATCHES = np.zeros((0, 2), dtype=np.intp)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (N, 4) with every box of `b` (M, 4), xyxy -> (N, M) float64."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def valid_box_mask(xyxy: np.ndarray, image_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Rows that are finite, have positive width and height and (when the image size is known) overlap the image."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(xyxy).all(axis=1) & (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        if image_shape is not None:
            h, w = int(image_shape[0]), int(image_shape[1])
            ok &= (xyxy[:, 2] > 0) & (xyxy[:, 3] > 0) & (xyxy[:, 0] < w) & (xyxy[:, 1] < h)
    return ok


def clean_detections(
    detections: Detections, frame: np.ndarray | None, embeddings: np.ndarray | None = None
) -> tuple[Detections, np.ndarray | None]:
    """Drop zero-area, NaN/inf and fully out-of-frame boxes (and non-finite scores); keep embeddings aligned."""
    if len(detections) == 0:
        if embeddings is None:
            return detections, None
        emb = np.asarray(embeddings, dtype=np.float32)
        return detections, emb.reshape(0, emb.shape[-1] if emb.ndim == 2 else 0)
    ok = valid_box_mask(detections.xyxy, None if frame is None else frame.shape) & np.isfinite(detections.scores)
    if embeddings is not None:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if len(embeddings) != len(detections):
            raise ValueError(f"got {len(embeddings)} embeddings for {len(detections)} detections")
        embeddings = embeddings[ok]
    if ok.all():
        return detections, embeddings
    return detections[ok], embeddings


def linear_assignment(cost: np.ndarray, max_cost: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost assignment keeping pairs with cost <= max_cost.

    Returns (matches (K, 2) [row, col], unmatched rows, unmatched cols). Infeasible entries may be +inf or any value
    above `max_cost`; they are replaced by a large finite value before solving.
    """
    n, m = cost.shape
    if n == 0 or m == 0:
        return _EMPTY_MATCHES, np.arange(n), np.arange(m)
    feasible = cost <= max_cost
    # Fast path: every feasible row/col has at most one candidate -> the assignment is those pairs.
    if feasible.sum(1).max() <= 1 and feasible.sum(0).max() <= 1:
        rows, cols = np.nonzero(feasible)
    else:
        # Pairs above max_cost are worth exactly as much as leaving both sides unmatched, so the solver maximises
        # sum(max_cost - cost) over the kept pairs: one strong pair beats two weak ones (not maximum cardinality).
        rows, cols = linear_sum_assignment(np.where(feasible, cost, max_cost))
        keep = feasible[rows, cols]
        rows, cols = rows[keep], cols[keep]
    matches = np.stack([rows, cols], axis=1).astype(np.intp)
    free_rows = np.ones(n, bool)
    free_rows[rows] = False
    free_cols = np.ones(m, bool)
    free_cols[cols] = False
    return matches, np.flatnonzero(free_rows), np.flatnonzero(free_cols)


def xyxy_to_cxcyah(xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> (N, 4) centre x, centre y, aspect w/h, height."""
    w = xyxy[:, 2] - xyxy[:, 0]
    h = xyxy[:, 3] - xyxy[:, 1]
    return np.stack([xyxy[:, 0] + w / 2, xyxy[:, 1] + h / 2, w / h, h], axis=1)


def cxcyah_to_xyxy(z: np.ndarray) -> np.ndarray:
    """(N, >=4) centre x, centre y, aspect, height -> (N, 4) xyxy."""
    h = np.maximum(z[:, 3], 1e-6)
    w = np.maximum(z[:, 2], 1e-6) * h
    return np.stack([z[:, 0] - w / 2, z[:, 1] - h / 2, z[:, 0] + w / 2, z[:, 1] + h / 2], axis=1)
