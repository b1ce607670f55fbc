"""`ReIDStage`: the Re-ID part of the run, for all cameras, as a stage (`pipeline/stages/base.py`).

Owns one `TrackletCropper` and one `TrackAppearance` per camera, and the shared `ReIDBatcher` (and its model).
Writes `tracks.embeddings` (N, D) and `tracks.action_probs` (N, A) (the tracks' running appearance; NaN rows: no
clip result yet) and `step.appearance` / `end.appearance` (`AppearanceUpdate`s: each clip result applied this step).

Timing: with live cameras a result is applied at the first step after it is ready (lowest latency). When every camera
is a recorded file, each step's clips go to the model as one group and their results are applied exactly
`reid.file_result_lag_steps` steps later (waiting if needed), so every output depends on the data only.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from core.types import Frame, Tracks
from pipeline.reid.appearance import TrackAppearance
from pipeline.reid.batcher import ReIDBatcher
from pipeline.reid.clips import AppearanceUpdate, ClipRequest, ClipResult
from pipeline.reid.cropper import TrackletCropper
from pipeline.reid.encoder import ClipEncoder
from pipeline.reid.schedule import ClipSchedule
from pipeline.stages.base import CameraEnd, CameraInfo, RunEnd, RunInfo, Stage, Step, register_stage

log = logging.getLogger("mcsa.reid")


@register_stage("reid")
class ReIDStage(Stage):
    """Tracklet cropping, batched Re-ID-AR inference and per-track appearance for every camera of a run."""

    writes = ("tracks.embeddings", "tracks.action_probs", "step.appearance", "end.appearance")

    def __init__(self, cfg, encoder: ClipEncoder | None = None) -> None:
        self.cfg = cfg
        self.encoder = encoder or ClipEncoder.from_config(cfg)
        self.batcher = ReIDBatcher(self.encoder, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue).start(
            warm_up=self._warm_up if hasattr(self.encoder, "warm_up") else None)  # engine ray: warmed in its actor
        self.croppers: dict[str, TrackletCropper] = {}
        self.appearances: dict[str, TrackAppearance] = {}
        self.grouped = False  # recorded files: deterministic groups (set by `open`)
        self._requests: list[ClipRequest] = []  # this step's clips (grouped mode)
        self._groups: deque[tuple[int, int]] = deque()  # (step index, batcher group) not yet applied
        self._closed = False
        log.info("Re-ID: %s, %s, clips of %d x %s, batches of up to %d", self.encoder.source, self.encoder.backend,
                 cfg.clip_len, "x".join(map(str, self.encoder.input_size)), cfg.max_batch)

    def _warm_up(self) -> None:
        """On the batcher's thread: every padded batch size through the model once (CUDA; nothing on the CPU)."""
        t0 = time.perf_counter()
        warmed = self.encoder.warm_up(self.cfg.max_batch, self.cfg.clip_len)
        if warmed:
            log.info("Re-ID: %d batch sizes tuned and warmed up on %s in %.1f s", warmed, self.encoder.device,
                     time.perf_counter() - t0)

    @classmethod
    def from_config(cls, config, params: dict) -> "ReIDStage | None":
        return cls(config.reid) if config.reid.enabled else None

    @property
    def action_names(self) -> list[str]:
        return self.encoder.action_names

    @property
    def embedding_dim(self) -> int:
        return int(self.encoder.embedding_dim)

    # ---- Stage --------------------------------------------------------------------------------------------------
    def open(self, run: RunInfo) -> None:
        self.grouped = run.all_files

    def open_camera(self, camera: CameraInfo) -> None:
        if camera.error is not None:
            return
        c = self.cfg
        self.croppers[camera.camera_id] = TrackletCropper(
            camera_id=camera.camera_id, input_size=tuple(self.encoder.input_size), clip_len=c.clip_len,
            clip_every=c.clip_every, window=c.window, min_box_height=c.min_box_height, border_margin=c.border_margin,
            max_overlap=c.max_overlap, max_tracks=c.max_tracks, end_after_frames=c.end_after_frames,
            resize=self.encoder.resize, schedule=self._schedule(),
        )
        self.appearances[camera.camera_id] = TrackAppearance(camera.camera_id)

    def on_frame(self, frame: Frame, tracks: Tracks) -> None:
        """Crop this frame's tracks, queue due clips, and attach the tracks' current embeddings and action
        probabilities (NaN rows: none yet)."""
        appearance = self.appearances[frame.camera_id]
        self._submit(self.croppers[frame.camera_id].on_tracks(frame, tracks, appearance.has_embedding))
        tracks.embeddings = appearance.embeddings_for(tracks.track_ids, self.encoder.embedding_dim)
        tracks.action_probs = appearance.action_probs_for(tracks.track_ids, len(self.action_names))

    def on_camera_end(self, end: CameraEnd) -> None:
        cropper = self.croppers.get(end.camera_id)
        if cropper is not None:
            self._submit(cropper.flush(self.appearances[end.camera_id].has_embedding))

    def on_step(self, step: Step) -> None:
        if not self.grouped:
            step.appearance.extend(self._apply(self.batcher.poll()))
            return
        self._close_group(step.index)
        while self._groups and self._groups[0][0] <= step.index - self.cfg.file_result_lag_steps:
            step.appearance.extend(self._apply(self.batcher.wait_group(self._groups.popleft()[1])))

    def close(self, end: RunEnd) -> None:
        """A completed run flushes every track's buffer and waits for all its clips; otherwise only the clips
        already queued are finished (at most 10 s)."""
        if self._closed:
            return
        self._closed = True
        try:
            completed = end.status == "completed"
            if completed:
                for camera_id, cropper in self.croppers.items():
                    self._submit(cropper.flush(self.appearances[camera_id].has_embedding))
            end.appearance.extend(self.results_now(300.0 if completed else 10.0))
        finally:
            self.batcher.stop()

    def results_now(self, timeout: float = 120.0) -> list[AppearanceUpdate]:
        """Every clip queued so far, finished and applied now (benches and tests that want results at once)."""
        if not self.grouped:
            return self._apply(self.batcher.drain(timeout))
        self._close_group(None)
        out = []
        while self._groups:
            out.extend(self._apply(self.batcher.wait_group(self._groups.popleft()[1], timeout)))
        return out

    def counters(self) -> dict:
        st = self.batcher.stats
        schedules = [c.schedule for c in self.croppers.values() if c.schedule is not None]
        return dict(processed=st.processed, submitted=st.submitted, dropped=st.dropped, batches=st.batches,
                    mean_batch=st.mean_batch, busy_s=st.busy_s, errors=st.errors,
                    skipped=sum(s.skipped for s in schedules),
                    tracks_with_embedding=sum(len(a.tracks) for a in self.appearances.values()))

    def summary_line(self) -> str:
        c = self.counters()
        return (f"Re-ID: {c['processed']} clips in {c['batches']} batches (mean {c['mean_batch']:.1f}), "
                f"{c['dropped']} dropped, {c['skipped']} skipped (stable appearance), {c['tracks_with_embedding']} "
                f"tracks with an embedding, model busy {c['busy_s']:.1f} s")

    # ---- internals ----------------------------------------------------------------------------------------------
    def _schedule(self) -> ClipSchedule | None:
        """A camera's clip schedule (`reid.schedule`), or None: a clip every `clip_every` frames of every track."""
        return clip_schedule(self.cfg, self.grouped)

    def _submit(self, requests: list[ClipRequest]) -> None:
        if self.grouped:
            self._requests.extend(requests)
        else:
            for request in requests:
                self.batcher.submit(request)

    def _close_group(self, step_index: int | None) -> None:
        """Send this step's clips to the model as one group (grouped mode)."""
        if self._requests:
            self._groups.append((step_index if step_index is not None else 1 << 62,
                                 self.batcher.submit_group(self._requests)))
            self._requests = []

    def _apply(self, results: list[ClipResult]) -> list[AppearanceUpdate]:
        """Fold results into their tracks' appearance; the updates in the same order."""
        out = []
        for r in results:
            cropper = self.croppers.get(r.camera_id)  # none here when the clips were cut elsewhere (engine ray)
            if cropper is not None:
                cropper.on_result(r.track_id, r.embedding, r.cut_frame, r.cut_t_s)
            state = self.appearances[r.camera_id].update(r)
            out.append(AppearanceUpdate(r, state.embedding, state.action_probs, state.n_clips))
        return out


def clip_schedule(cfg, grouped: bool) -> ClipSchedule | None:
    """The clip schedule of one camera from `reid` settings (`ReIDStageConfig`), or None when `reid.schedule` is off.
    grouped: recorded files: a result is applied `file_result_lag_steps` steps after its clip, so the schedule sees
    it one frame later at the soonest (and never sooner, under any engine)."""
    s = cfg.schedule
    if not s.enabled:
        return None
    return ClipSchedule(agree_cos=s.agree_cos, first_interval_s=s.first_interval_s, max_interval_s=s.max_interval_s,
                        box_change=s.box_change, contact_overlap=s.contact_overlap, result_lag_s=s.result_lag_s,
                        result_lag_frames=cfg.file_result_lag_steps + 1 if grouped else 0)
