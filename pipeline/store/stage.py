"""`StoreStage`: the `store` stage, last in every run: records what all the stages before it produced.

Reads only the messages: each frame's tracks (`track_boxes`, `tracks`), each step's Re-ID results (`track_clips`,
track appearance), identity links, finished action events and the fused identities' ground positions
(`ground_positions`, one per identity per `store.ground_every_s`), and at the end the final identities and every
camera's counters. The `StoreWriter` behind it commits on its own thread (`pipeline/store/writer.py`).
"""

from __future__ import annotations

import logging

from core.types import Frame, Tracks
from pipeline.stages.base import CameraEnd, CameraInfo, RunEnd, RunInfo, Stage, Step, register_stage
from pipeline.store.schema import sqlite_url
from pipeline.store.writer import StoreWriter

log = logging.getLogger("mcsa.store")


@register_stage("store")
class StoreStage(Stage):
    """Records a run into SQLite / PostgreSQL through one `StoreWriter`."""

    def __init__(self, writer: StoreWriter, ground_every_s: float | None = 0.2) -> None:
        self.writer = writer
        self.ground_every_s = ground_every_s
        self._ground_last: dict[tuple[str, int], float] = {}  # (group, id) -> time of its last stored position
        self._closed = False

    @classmethod
    def from_config(cls, config, params: dict) -> "StoreStage":
        from pipeline.store import open_engine

        url = store_url(config, params["output_dir"])
        return cls(StoreWriter(open_engine(url), config.store.batch_rows, config.store.flush_interval_s),
                   config.store.ground_every_s)

    def begin_run(self, config: dict, output_dir: str) -> int:
        """Create the run's row (the config with credentials already removed); returns the run id."""
        return self.writer.begin_run(config, output_dir)

    # ---- Stage --------------------------------------------------------------------------------------------------
    def open(self, run: RunInfo) -> None:
        if run.embedding_dim is not None:
            self.writer.set_action_names(list(run.action_names))

    def open_camera(self, camera: CameraInfo) -> None:
        w, h = camera.size or (None, None)
        self.writer.register_camera(camera.camera_id, camera.source, camera.fps, w, h)
        if camera.error is not None:
            self.writer.update_camera(camera.camera_id, status="failed", error=camera.error)

    def on_frame(self, frame: Frame, tracks: Tracks) -> None:
        self.writer.add_tracks(frame.camera_id, frame.index, frame.timestamp_s, tracks)

    def on_step(self, step: Step) -> None:
        self._record(step.appearance, step.links, step.action_events, step.thumbnails)
        if self.ground_every_s is not None:
            for g in step.ground:
                key = (g.group, g.global_id)
                last = self._ground_last.get(key)
                if last is None or g.time_s - last >= self.ground_every_s - 1e-9:
                    self._ground_last[key] = g.time_s
                    self.writer.add_ground_position(g.group, g.global_id, g.time_s, g.x_m, g.y_m, g.cameras,
                                                    g.sigma_m)
            if len(self._ground_last) > 10_000:  # people gone for a minute need no last time
                self._ground_last = {k: t for k, t in self._ground_last.items() if step.time_s - t < 60.0}

    def on_camera_end(self, end: CameraEnd) -> None:
        if end.status == "failed":
            self.writer.update_camera(end.camera_id, frames=end.frames, status="failed", error=end.error)

    def close(self, end: RunEnd) -> None:
        """Record what the other stages produced while closing, the identities and the cameras' final rows, then
        commit everything and mark the run `end.status`."""
        if self._closed:
            return
        self._closed = True
        try:
            self._record(end.appearance, end.links, end.action_events, end.thumbnails)
            for mode, ids in end.identities.items():
                rows = []
                for key, gid in ids.items():
                    span = end.identity_spans.get(key)
                    if span is not None:
                        rows.append(dict(camera_id=key[0], track_id=int(key[1]), global_id=int(gid),
                                         first_ts=span[0], last_ts=span[1]))
                self.writer.set_identities(mode, rows)
            for cam in end.cameras:
                extra = end.camera_extra.get(cam.camera_id, {})
                self.writer.update_camera(cam.camera_id, frames=cam.frames, status=cam.status, error=cam.error,
                                          **extra)
        finally:
            self.writer.close(end.status)

    def _record(self, appearance, links, action_events, thumbnails=()) -> None:
        w = self.writer
        for u in appearance:
            r = u.result
            w.add_clip(r.camera_id, r.track_id, r.t_start, r.t_end, r.quality, r.embedding, r.action_probs, r.reason)
            w.set_track_appearance(r.camera_id, r.track_id, u.embedding, u.action_probs, u.n_clips)
        for e in links:
            w.add_identity_link(e.camera_id, e.track_id, e.global_id, e.previous_id, e.t, e.reason, e.score, e.mode)
        for event in action_events:
            w.add_action_event(event)
        for t in thumbnails:
            w.add_thumbnail(t.camera_id, t.track_id, t.jpeg, t.quality, t.width, t.height, t.ts, t.frame)

    @property
    def run_id(self) -> int | None:
        return self.writer.run_id


def store_url(config, output_dir) -> str:
    """The run's store: `store.url`, else the SQLite file `events.db` in its output folder."""
    from pathlib import Path

    return config.store.url or sqlite_url(Path(output_dir) / "events.db")


__all__ = ["StoreStage", "store_url"]
