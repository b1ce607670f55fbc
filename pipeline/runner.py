"""The pipeline loop: read all cameras, detect in one batch, track per camera, record.

State ownership:
  - each `CameraReader` (streams/) owns its decoder/connection and its frame queue;
  - the `Pipeline` owns one tracker per camera, the detector, the MOT writer and per-camera counters;
  - the `StoreWriter` thread owns the database connection.
One camera failing (missing file, refused URL, corrupt stream) is logged in one line and recorded; the others go on.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.sinks import TrackSink, build_sinks
from pipeline.store import StoreWriter, open_engine
from pipeline.store.schema import sqlite_url
from core.types import Frame

log = logging.getLogger("mcsa.pipeline")

EXIT_OK, EXIT_FATAL, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 3, 130


@dataclass
class CameraSummary:
    """What one camera did during a run."""

    camera_id: str
    source: str
    status: str = "pending"  # pending | running | completed | failed | stopped
    frames: int = 0
    detections: int = 0
    track_ids: set[int] = field(default_factory=set)
    dropped: int = 0
    reconnects: int = 0
    error: str | None = None
    first_frame_time: float | None = None
    last_frame_time: float | None = None
    max_lag_s: float = 0.0  # live cameras: wall clock at processing minus wall clock at receipt
    is_live: bool = False

    @property
    def fps(self) -> float:
        if self.first_frame_time is None or self.last_frame_time is None or self.frames < 2:
            return 0.0
        return (self.frames - 1) / max(self.last_frame_time - self.first_frame_time, 1e-9)


@dataclass
class RunSummary:
    """The result of `Pipeline.run()`."""

    run_id: int | None
    status: str
    cameras: list[CameraSummary]
    wall_s: float
    output_dir: Path
    reid: dict | None = None  # Re-ID stage counters (clips, dropped, batches, tracks with an embedding)
    association: dict | None = None  # association counters (identities, tracks, links by reason)
    events: dict | None = None  # action event counters (source, events, by action)

    @property
    def exit_code(self) -> int:
        if self.status == "interrupted":
            return EXIT_INTERRUPTED
        ok = [c for c in self.cameras if c.status in ("completed", "stopped")]
        if self.status == "failed" or not ok:
            return EXIT_FATAL
        return EXIT_OK if len(ok) == len(self.cameras) else EXIT_PARTIAL

    def table(self) -> str:
        head = (
            f"{'camera':<12} {'status':<10} {'frames':>7} {'dets':>7} {'tracks':>6} {'fps':>6} {'dropped':>7} "
            f"{'reconn':>6} {'max lag':>8}"
        )
        lines = [head, "-" * len(head)]
        for c in self.cameras:
            lines.append(
                f"{c.camera_id:<12} {c.status:<10} {c.frames:>7} {c.detections:>7} {len(c.track_ids):>6} "
                f"{c.fps:>6.1f} {c.dropped:>7} {c.reconnects:>6} "
                + (f"{c.max_lag_s:>7.2f}s" if c.is_live else f"{'-':>8}")
            )
            if c.error:
                lines.append(f"  ! {c.error}")
        if self.reid:
            r = self.reid
            lines.append(
                f"Re-ID: {r['processed']} clips in {r['batches']} batches (mean {r['mean_batch']:.1f}), "
                f"{r['dropped']} dropped, {r['tracks_with_embedding']} tracks with an embedding, model busy "
                f"{r['busy_s']:.1f} s"
            )
        if self.association:
            a = self.association
            links = ", ".join(f"{n} {k}" for k, n in sorted(a["links"].items()))
            lines.append(f"Association: {a['tracks']} tracks -> {a['identities']} global identities ({links})")
        if self.events:
            e = self.events
            by = ", ".join(f"{n} {k}" for k, n in sorted(e["by_action"].items())) or "none"
            lines.append(f"Action events ({e['source']} source): {e['events']} ({by})")
        total = sum(c.frames for c in self.cameras)
        lines.append(f"{total} frames in {self.wall_s:.1f} s ({total / max(self.wall_s, 1e-9):.1f} frames/s overall)")
        return "\n".join(lines)


@contextmanager
def _graceful_signals(pipeline: "Pipeline"):
    """Ctrl-C (SIGINT) and SIGTERM finish the current step, then stop the run (status `interrupted`), so every
    camera's outputs and the store agree frame for frame; a second signal interrupts at once. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        if pipeline._interrupted:
            raise KeyboardInterrupt(f"signal {signum}")
        pipeline._interrupted = True
        pipeline._stop.set()
        log.warning("stopping after the current step (press Ctrl-C again to stop at once)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Pipeline:
    """Runs a `PipelineConfig`, writing `output_dir/mot/<camera>.txt` and the store (default `output_dir/events.db`)."""

    def __init__(self, config: PipelineConfig, output_dir: str | Path | None = None) -> None:
        self.config = config
        self.output_dir = Path(output_dir or config.output.dir)
        self.summaries: dict[str, CameraSummary] = {}
        self._stop = threading.Event()
        self._interrupted = False  # a stop signal arrived (Ctrl-C / SIGTERM)
        self._association = None  # AssociationStage of the current run (association.enabled)
        self._det_embedder = None  # built on first use when the tracker has an appearance cost

    def stop(self) -> None:
        """Ask the loop to finish after the current step (thread-safe)."""
        self._stop.set()

    # ---- building blocks ---------------------------------------------------------------------------------------
    def _stream_options(self):
        from streams import StreamOptions

        return StreamOptions(**self.config.streams.model_dump())

    def _redacted_config(self) -> dict:
        from streams import redact_uri

        data = self.config.model_dump(mode="json")
        for cam in data["cameras"]:
            cam["source"] = redact_uri(str(cam["source"]))
        return data

    def _build_reid(self):
        if not self.config.reid.enabled:
            return None
        from pipeline.reid import ReIDStage

        return ReIDStage(self.config.reid)

    def _build_association(self, writer: StoreWriter, reid):
        if not self.config.association.enabled:
            return None
        from pipeline.association.stage import AssociationStage

        dim = reid.encoder.embedding_dim if reid is not None else None
        return AssociationStage(self.config.association, self.output_dir, writer, dim)

    def _trained_actions(self, reid) -> list[str] | None:
        """The checkpoint's trained action names (None: no action branch); checks `events.source` against them."""
        names = list(reid.action_names) if reid is not None and reid.encoder.actions_trained else None
        if self.config.events.enabled:
            from pipeline.events.sink import resolve_source

            resolve_source(self.config.events.source, names)
        return names

    def _bind_identities(self, sinks: list[TrackSink]) -> None:
        """Give sinks that show or record identities (events, annotated video) the global-id lookup."""
        if self._association is None:
            return
        from pipeline.events.sink import association_lookup

        lookup = association_lookup(self._association)
        for sink in sinks:
            if hasattr(sink, "bind_identity"):
                sink.bind_identity(lookup)

    def _build_tracker(self, frame_rate: float | None = None):
        """One camera's tracker; `frame_rate` (the source's frames/s) sets time-based parameters such as mcsa's."""
        from pipeline.tracking import build_tracker_from_config

        tracker = build_tracker_from_config(self.config.tracker.name, self.config.tracker.params, frame_rate=frame_rate)
        split = self.config.tracker.tracklets
        if split.enabled:
            from pipeline.tracking.tracklets import TrackletSplitter

            tracker = TrackletSplitter(tracker, split.contact_iou, split.max_gap)
        return tracker

    # ---- the run ------------------------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        from models.detector import PersonDetector
        from streams import CameraReader, SourceError, open_source, redact_uri

        cfg = self.config
        started = time.monotonic()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        detector = PersonDetector.from_config(cfg.detector)  # fails fast on bad weights, before anything is opened
        wants_embeddings = self._build_tracker().wants_embeddings  # fails fast on bad tracker name/params
        if wants_embeddings and not cfg.reid.enabled:
            raise ValueError("tracker.params.appearance_weight > 0 needs per-detection embeddings: set reid.enabled: "
                             "true, or appearance_weight: 0")
        reid = self._build_reid()  # fails fast on bad Re-ID weights
        trained_actions = self._trained_actions(reid)  # fails fast on events.source: model without an action branch
        url = cfg.store.url or sqlite_url(self.output_dir / "events.db")
        writer = StoreWriter(open_engine(url), cfg.store.batch_rows, cfg.store.flush_interval_s)
        writer.begin_run(self._redacted_config(), str(self.output_dir))
        if reid is not None:
            writer.set_action_names(reid.action_names)
        log.info("run %s: %d camera(s), output in %s", writer.run_id, len(cfg.cameras), self.output_dir)
        sinks = build_sinks(cfg, self.output_dir, writer, trained_actions)
        self._association = self._build_association(writer, reid)
        self._bind_identities(sinks)
        options = self._stream_options()
        readers: dict[str, CameraReader] = {}
        trackers = {}
        status = "completed"
        with ExitStack() as stack:
            stack.callback(self._close_all, readers, writer, sinks, reid)
            for cam in cfg.cameras:
                summary = self.summaries[cam.id] = CameraSummary(cam.id, redact_uri(str(cam.source)))
                try:
                    source = open_source(
                        cam.id, cam.source, fps=cam.fps, start_time_s=cam.start_time_s, max_frames=cam.max_frames,
                        options=options,
                    )
                except SourceError as err:
                    for sink in sinks:
                        sink.open_camera(cam.id, None, None)
                    self._camera_failed(writer, summary, str(err), register=True)
                    continue
                for sink in sinks:
                    sink.open_camera(cam.id, source.fps, source.size)
                size = source.size or (None, None)
                writer.register_camera(cam.id, source.display_uri, source.fps, size[0], size[1])
                readers[cam.id] = CameraReader(source, options)
                trackers[cam.id] = self._build_tracker(source.fps)
                if reid is not None:
                    reid.add_camera(cam.id)
                if self._association is not None:
                    self._association.add_camera(cam.id, source.is_live)
                summary.status, summary.is_live = "running", source.is_live
            for reader in readers.values():
                reader.start()
            bars = self._progress_bars(readers, stack)
            try:
                with _graceful_signals(self):
                    self._loop(readers, trackers, detector, writer, sinks, reid, bars, started)
                if self._interrupted:
                    status = "interrupted"
                    log.warning("interrupted: stopping cameras and flushing what was recorded")
            except KeyboardInterrupt:
                status = "interrupted"
                log.warning("interrupted: stopping cameras and flushing what was recorded")
            except Exception:
                status = "failed"
                raise
            finally:
                if reid is not None:  # an interrupted run only finishes the clips already queued, briefly
                    done = reid.drain() if status == "completed" else reid.drain_queued(timeout=10)
                    self._record_reid(writer, done)
                for cam_id, summary in self.summaries.items():
                    if summary.status == "running":
                        summary.status = "stopped" if status != "completed" or self._stop.is_set() else "completed"
                    reader = readers.get(cam_id)
                    if reader is not None:
                        summary.dropped, summary.reconnects = reader.stats.frames_dropped, reader.stats.reconnects
                    writer.update_camera(
                        cam_id, frames=summary.frames, dropped=summary.dropped, status=summary.status,
                        error=summary.error,
                    )
                self._final_status = status
        return RunSummary(writer.run_id, status, list(self.summaries.values()), time.monotonic() - started,
                          self.output_dir, self._reid_counters(reid),
                          self._association.counters() if self._association is not None else None,
                          next((s.counters() for s in sinks if hasattr(s, "counters")), None))

    @staticmethod
    def _reid_counters(reid) -> dict | None:
        if reid is None:
            return None
        st = reid.batcher.stats
        return dict(processed=st.processed, submitted=st.submitted, dropped=st.dropped, batches=st.batches,
                    mean_batch=st.mean_batch, busy_s=st.busy_s, errors=st.errors,
                    tracks_with_embedding=sum(len(a.tracks) for a in reid.appearances.values()))

    def _record_reid(self, writer: StoreWriter, results) -> None:
        """Store the clip results and the tracks' updated appearance."""
        for result, state in results:
            writer.add_clip(result.camera_id, result.track_id, result.t_start, result.t_end, result.quality,
                            result.embedding, result.action_probs, result.reason)
            writer.set_track_appearance(result.camera_id, result.track_id, state.embedding, state.action_probs,
                                        state.n_clips)
            if getattr(self, "_association", None) is not None:
                self._association.on_appearance(result, state)

    def _close_all(self, readers, writer: StoreWriter, sinks: list[TrackSink], reid=None) -> None:
        for reader in readers.values():
            reader.stop()
        if reid is not None:
            reid.close()
        try:
            for sink in sinks:
                try:
                    sink.close()
                except Exception:  # noqa: BLE001 - one broken output must not lose the store's rows
                    log.exception("closing output %s failed", type(sink).__name__)
            association = getattr(self, "_association", None)
            if association is not None:  # global ids: mot_local/ (closed above) -> mot/, identities table
                try:
                    association.finish(self.output_dir / "mot_local",
                                       interrupted=getattr(self, "_final_status", "failed") != "completed")
                except Exception:  # noqa: BLE001 - the local-id files and the store's rows stay intact
                    log.exception("finishing cross-camera association failed")
        finally:
            writer.close(getattr(self, "_final_status", "failed"))

    def _camera_failed(self, writer: StoreWriter, summary: CameraSummary, error: str, register: bool = False) -> None:
        summary.status, summary.error = "failed", error
        log.error(error)
        if register:
            writer.register_camera(summary.camera_id, summary.source, None, None, None)
        writer.update_camera(summary.camera_id, status="failed", error=error)

    def _progress_bars(self, readers, stack: ExitStack) -> dict:
        if not self.config.run.progress:
            return {}
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        stack.enter_context(logging_redirect_tqdm())
        bars = {}
        for pos, (cam_id, reader) in enumerate(readers.items()):
            src = reader.source
            total = src.total_frames
            bars[cam_id] = stack.enter_context(
                tqdm(total=total, desc=cam_id, unit="fr", position=pos, dynamic_ncols=True, leave=True)
            )
        return bars

    def _embed_detections(self, reid, trackers, batch: list[Frame], detections) -> list | None:
        """Per-detection embeddings for trackers that use an appearance cost (one batch for all cameras), else None."""
        if reid is None or not any(trackers[f.camera_id].wants_embeddings for f in batch):
            return None
        if self._det_embedder is None:
            from pipeline.reid.detection_embedder import DetectionEmbedder

            min_score = float(getattr(next(iter(trackers.values())), "high_thresh", 0.3))
            self._det_embedder = DetectionEmbedder(reid.encoder, min_score=min_score,
                                                   max_batch=self.config.reid.max_batch)
        return self._det_embedder.embed(batch, detections)

    def _loop(self, readers, trackers, detector, writer, sinks, reid, bars, started: float) -> None:
        active = dict(readers)
        duration = self.config.run.duration_s
        while active and not self._stop.is_set():
            if duration is not None and time.monotonic() - started >= duration:
                log.info("duration of %.0f s reached: stopping", duration)
                break
            batch: list[Frame] = []
            for cam_id, reader in list(active.items()):
                frame = reader.get(timeout=0.0 if reader.source.is_live else 0.5)
                if frame is not None:
                    batch.append(frame)
                elif reader.done:
                    del active[cam_id]
                    if reid is not None:
                        reid.camera_ended(cam_id)
                    for sink in sinks:
                        sink.on_camera_end(cam_id)
                    summary = self.summaries[cam_id]
                    if reader.failed:
                        self._camera_failed(writer, summary, reader.error or "source failed")
                    else:
                        summary.status = "completed"
                        log.info("camera %s: finished after %d frames", cam_id, summary.frames)
            if reid is not None:
                self._record_reid(writer, reid.poll())
            if self._association is not None and batch:
                self._association.step(max(f.timestamp_s for f in batch))
            if not batch:
                time.sleep(0.005)
                continue
            detections = detector.detect([f.image for f in batch])
            det_embeddings = self._embed_detections(reid, trackers, batch, detections)
            now = time.monotonic()
            for k, (frame, dets) in enumerate(zip(batch, detections)):
                if det_embeddings is not None:
                    tracks = trackers[frame.camera_id].update(dets, frame.image, embeddings=det_embeddings[k])
                else:
                    tracks = trackers[frame.camera_id].update(dets, frame.image)
                if reid is not None:
                    reid.on_tracks(frame, tracks)
                if self._association is not None:
                    self._association.on_tracks(frame, tracks)
                writer.add_tracks(frame.camera_id, frame.index, frame.timestamp_s, tracks)
                for sink in sinks:
                    sink.on_tracks(frame, tracks)
                s = self.summaries[frame.camera_id]
                s.frames += 1
                s.detections += len(dets)
                s.track_ids.update(tracks.track_ids.tolist())
                s.first_frame_time = s.first_frame_time or now
                s.last_frame_time = now
                if s.is_live:
                    s.max_lag_s = max(s.max_lag_s, time.time() - frame.timestamp_s)
                bar = bars.get(frame.camera_id)
                if bar is not None:
                    bar.update(1)
                    if s.frames % 10 == 0:
                        bar.set_postfix(fps=f"{s.fps:.1f}", tracks=len(s.track_ids), refresh=False)
