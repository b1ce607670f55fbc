"""`ReIDStage`: the Re-ID part of the pipeline loop, for all cameras.

Owns one `TrackletCropper` and one `TrackAppearance` per camera, and the shared `ReIDBatcher` (and its model). The
`Pipeline` calls it from the main thread: `on_tracks` after each camera's tracker update, `poll` once per step,
`camera_ended` when a camera stops, and `drain` + `close` at the end of the run.
"""

from __future__ import annotations

import logging

from pipeline.reid.appearance import AppearanceState, TrackAppearance
from pipeline.reid.batcher import ReIDBatcher
from pipeline.reid.clips import ClipResult
from pipeline.reid.cropper import TrackletCropper
from pipeline.reid.encoder import ClipEncoder
from core.types import Frame, Tracks

log = logging.getLogger("mcsa.reid")


class ReIDStage:
    """Tracklet cropping, batched Re-ID-AR inference and per-track appearance for every camera of a run."""

    def __init__(self, cfg, encoder: ClipEncoder | None = None) -> None:
        self.cfg = cfg
        self.encoder = encoder or ClipEncoder.from_config(cfg)
        self.batcher = ReIDBatcher(self.encoder, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue).start()
        self.croppers: dict[str, TrackletCropper] = {}
        self.appearances: dict[str, TrackAppearance] = {}
        log.info("Re-ID: %s, %s, clips of %d x %s, batches of up to %d", self.encoder.source, self.encoder.backend,
                 cfg.clip_len, "x".join(map(str, self.encoder.input_size)), cfg.max_batch)

    @property
    def action_names(self) -> list[str]:
        return self.encoder.action_names

    def add_camera(self, camera_id: str) -> None:
        c = self.cfg
        self.croppers[camera_id] = TrackletCropper(
            camera_id, tuple(self.encoder.input_size), c.clip_len, c.clip_every, c.window, c.min_box_height,
            c.border_margin, c.max_overlap, c.max_tracks, c.end_after_frames,
        )
        self.appearances[camera_id] = TrackAppearance(camera_id)

    def on_tracks(self, frame: Frame, tracks: Tracks) -> None:
        """Crop this frame's tracks, queue due clips, and attach the tracks' current embeddings and action
        probabilities (NaN rows: none yet)."""
        appearance = self.appearances[frame.camera_id]
        for request in self.croppers[frame.camera_id].on_tracks(frame, tracks, appearance.has_embedding):
            self.batcher.submit(request)
        tracks.embeddings = appearance.embeddings_for(tracks.track_ids, self.encoder.embedding_dim)
        tracks.action_probs = appearance.action_probs_for(tracks.track_ids, len(self.action_names))

    def camera_ended(self, camera_id: str) -> None:
        appearance = self.appearances[camera_id]
        for request in self.croppers[camera_id].flush(appearance.has_embedding):
            self.batcher.submit(request)

    def _route(self, results: list[ClipResult]) -> list[tuple[ClipResult, AppearanceState]]:
        return [(r, self.appearances[r.camera_id].update(r)) for r in results]

    def poll(self) -> list[tuple[ClipResult, AppearanceState]]:
        """Results finished since the last call, already folded into their track's appearance."""
        return self._route(self.batcher.poll())

    def drain(self, timeout: float = 300.0) -> list[tuple[ClipResult, AppearanceState]]:
        """Flush every camera's buffers, wait for all clips, and return the remaining results."""
        for camera_id in self.croppers:
            self.camera_ended(camera_id)
        return self._route(self.batcher.drain(timeout))

    def drain_queued(self, timeout: float = 10.0) -> list[tuple[ClipResult, AppearanceState]]:
        """Finish only the clips already queued (no buffer flush), e.g. after Ctrl-C; returns their results."""
        return self._route(self.batcher.drain(timeout))

    def close(self) -> None:
        self.batcher.stop()
