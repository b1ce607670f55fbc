"""`TrackAppearance`: per-camera appearance state of tracks, fed by `ClipResult`s.

For each track: the running quality-weighted mean of its clip embeddings (kept L2-normalised for cosine use), the
latest action probabilities, and how many clips contributed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.reid.clips import ClipResult


@dataclass
class AppearanceState:
    embedding_sum: np.ndarray  # float32 (D,) quality-weighted sum of L2-normalised clip embeddings
    weight: float
    action_probs: np.ndarray  # float32 (A,) of the latest clip
    n_clips: int
    last_t: float
    embedding: np.ndarray = field(init=False)  # float32 (D,) L2-normalised running appearance, kept current

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Recompute `embedding` from `embedding_sum` (once per clip, not on every frame that reads it)."""
        norm = float(np.linalg.norm(self.embedding_sum))
        self.embedding = (self.embedding_sum / norm).astype(np.float32) if norm > 0 else self.embedding_sum


class TrackAppearance:
    """Appearance of the tracks of ONE camera, keyed by track id."""

    def __init__(self, camera_id: str) -> None:
        self.camera_id = camera_id
        self.tracks: dict[int, AppearanceState] = {}

    def update(self, result: ClipResult) -> AppearanceState:
        if result.camera_id != self.camera_id:
            raise ValueError(f"result for camera {result.camera_id} routed to camera {self.camera_id}")
        e = np.asarray(result.embedding, np.float32)
        norm = float(np.linalg.norm(e))
        e = e / norm if norm > 0 else e
        w = max(float(result.quality), 1e-3)
        state = self.tracks.get(result.track_id)
        if state is None:
            state = self.tracks[result.track_id] = AppearanceState(e * w, w, result.action_probs, 1, result.t_end)
        else:
            state.embedding_sum = state.embedding_sum + e * w
            state.refresh()
            state.weight += w
            state.action_probs = result.action_probs
            state.n_clips += 1
            state.last_t = max(state.last_t, result.t_end)
        return state

    def has_embedding(self, track_id: int) -> bool:
        return track_id in self.tracks

    def action_probs_for(self, track_ids: np.ndarray, n_actions: int) -> np.ndarray:
        """(N, n_actions) latest action probabilities for these tracks; rows of tracks without a result are NaN."""
        return self._rows(track_ids, n_actions, "action_probs")

    def embeddings_for(self, track_ids: np.ndarray, dim: int) -> np.ndarray:
        """(N, dim) embeddings for these tracks; rows of tracks without one are NaN."""
        return self._rows(track_ids, dim, "embedding")

    def _rows(self, track_ids: np.ndarray, width: int, attr: str) -> np.ndarray:
        out = np.full((len(track_ids), width), np.nan, np.float32)
        if width:
            for i, tid in enumerate(np.asarray(track_ids).tolist()):
                state = self.tracks.get(tid)
                if state is not None and len(getattr(state, attr)) == width:
                    out[i] = getattr(state, attr)
        return out
