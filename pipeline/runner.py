"""The pipeline loop: read all cameras, detect in one batch, track per camera, hand each step to the stages.

    readers (streams/) -> PersonDetector (one batched call) -> one Tracker per camera -> stages, in order

The loop only moves data. What happens to the tracks (Re-ID, association, events, files, the store, any sink) is
in the stages (`pipeline/stages/`), built from the config by `build_stages`; the run's summary and exit codes are
in `pipeline/summary.py`.

State ownership: each `CameraReader` owns its decoder / connection and frame queue; the `Pipeline` owns the
detector, one tracker per camera and the per-camera counters; each stage owns its own state.
One camera failing (missing file, refused URL, corrupt stream) is logged in one line and recorded; the others go on.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from core.types import Frame
from pipeline.config import PipelineConfig
from pipeline.stages.base import CameraEnd, CameraInfo, RunEnd, Stage, Step, drive_step, open_stages
from pipeline.summary import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, CameraSummary, RunSummary

log = logging.getLogger("mcsa.pipeline")

__all__ = ["EXIT_FATAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_PARTIAL", "CameraSummary", "Pipeline", "RunSummary"]


class RunSetupError(RuntimeError):
    """The run cannot start (output folder, no camera); the message names the thing and the fix."""


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


REPLACED_OUTPUTS = ("mot", "mot_local", "mot_online", "video", "ground")  # per-run files a new run would replace


def prepare_output_dir(path: Path, overwrite: bool = False) -> Path:
    """Create the output folder (one line naming it and the fix when that is impossible). A folder that holds an
    earlier run's MOT or video files is refused unless `overwrite` (the store and events.jsonl keep every run)."""
    if path.exists() and not path.is_dir():
        raise RunSetupError(f"output folder {path} is an existing file: give --output a folder path")
    if not overwrite:
        earlier = [f"{name}/" for name in REPLACED_OUTPUTS if (path / name).is_dir() and any((path / name).iterdir())]
        if earlier:
            raise RunSetupError(f"output folder {path} already holds a run's {', '.join(earlier)}: choose a new "
                                "--output, or pass --overwrite (output.overwrite: true) to replace those files")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunSetupError(f"cannot create output folder {path} ({err.strerror or err}): choose a writable "
                            "location with --output") from None
    return path


def _one_line(err: Exception, stage: str | None = None, output_dir=None) -> str:
    """One line naming what failed and the fix: the store's own message, or an OS error on an output file (its name,
    else the stage, else the run's output folder)."""
    if isinstance(err, OSError):
        where = (f" {err.filename}" if err.filename else f" (stage {stage})" if stage
                 else f" to the output folder {output_dir}" if output_dir else "")
        hint = "free disk space" if err.errno == 28 else "check permissions and free space"
        return f"cannot write{where}: {err.strerror or err} ({hint}; what was written before is kept)"
    return str(err)


def run_error(err: Exception, output_dir=None) -> str | None:
    """The one-line error of a run stopped by a broken store or output (disk full...); None for anything else (a
    bug or a bad input, raised on)."""
    from pipeline.store import StoreError

    return _one_line(err, output_dir=output_dir) if isinstance(err, (StoreError, OSError)) else None


def update_bars(bars: dict, summaries: dict[str, CameraSummary], step: Step) -> None:
    """Advance the progress bar of every camera in the step (fps and tracks shown every 10 frames)."""
    for frame, _ in step.frames:
        bar = bars.get(frame.camera_id)
        if bar is not None:
            s = summaries[frame.camera_id]
            bar.update(1)
            if s.frames % 10 == 0:
                bar.set_postfix(fps=f"{s.fps:.1f}", tracks=len(s.track_ids), refresh=False)


def close_stages(stages: list[Stage], summaries: dict[str, CameraSummary], status: str, stopped: bool,
                 end_holder: dict) -> None:
    """Close every stage in order with the run's `RunEnd` (cameras still running become `stopped`, or `completed`
    when the run completed on its own). A stage that fails to close does not stop the others; the first store or
    OS error becomes the run's error line (`end_holder["error"]`)."""
    from pipeline.store import StoreError

    end = RunEnd(status)
    for cam_id, summary in summaries.items():
        if summary.status == "running":
            summary.status = "stopped" if status != "completed" or stopped else "completed"
        end.cameras.append(CameraEnd(cam_id, summary.status, summary.frames, summary.error))
        end.camera_extra[cam_id] = {"dropped": summary.dropped}
    for stage in stages:
        try:
            stage.close(end)
        except (StoreError, OSError) as err:  # the first one is the run's error line; the rest follow from it
            if "error" in end_holder:
                log.debug("closing stage %s failed too: %s", stage.name, err)
            else:
                end_holder["error"] = _one_line(err, stage.name)
        except Exception as err:  # noqa: BLE001 - a bug: one line, the traceback with -v
            log.error("closing stage %s failed: %s", stage.name, err, exc_info=log.isEnabledFor(logging.DEBUG))


class Pipeline:
    """Runs a `PipelineConfig`, writing `output_dir/mot/<camera>.txt` and the store (default `output_dir/events.db`)."""

    def __init__(self, config: PipelineConfig, output_dir: str | Path | None = None) -> None:
        self.config = config
        self.output_dir = Path(output_dir or config.output.dir)
        self.summaries: dict[str, CameraSummary] = {}
        self._stop = threading.Event()
        self._interrupted = False  # a stop signal arrived (Ctrl-C / SIGTERM)
        self._det_embedder = None  # built on first use: the tracker or the fusion reads detections' embeddings
        self._fusion_embedded: set[str] | None = None  # cameras whose detections the fusion reads with their looks
        self._det_embed_failures = 0  # steps whose detections could not be embedded (engine ray: the service failed)
        self.loop_started: float | None = None  # monotonic s when the cameras started decoding (benchmarks)

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

    def _build_tracker(self, frame_rate: float | None = None):
        """One camera's tracker; `frame_rate` (the source's frames/s) sets time-based parameters such as mcsa's."""
        from pipeline.tracking import build_tracker_from_config

        tracker = build_tracker_from_config(self.config.tracker.name, self.config.tracker.params, frame_rate=frame_rate)
        split = self.config.tracker.tracklets
        if split.enabled:
            from pipeline.tracking.tracklets import TrackletSplitter

            tracker = TrackletSplitter(tracker, split.contact_iou, split.max_gap)
        return tracker

    def _open_sources(self) -> tuple[dict, list[CameraInfo]]:
        """Open every camera's source (cheap: probes only). Returns ({camera_id: source}, every camera's info, with
        `error` set for the ones that failed)."""
        from streams import SourceError, open_source, redact_uri

        options = self._stream_options()
        sources, infos = {}, []
        for cam in self.config.cameras:
            summary = self.summaries[cam.id] = CameraSummary(cam.id, redact_uri(str(cam.source)))
            try:
                source = open_source(cam.id, cam.source, fps=cam.fps, start_time_s=cam.start_time_s,
                                     max_frames=cam.max_frames, options=options)
            except SourceError as err:
                summary.status, summary.error = "failed", str(err)
                log.error("%s", err)
                infos.append(CameraInfo(cam.id, summary.source, error=str(err)))
                continue
            sources[cam.id] = source
            summary.is_live = source.is_live
            infos.append(CameraInfo(cam.id, source.display_uri, source.fps, source.size, source.is_live))
        return sources, infos

    # ---- the run ------------------------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        from models.detector import PersonDetector
        from pipeline.stages.builder import build_stages, stage_classes
        from streams import CameraReader

        cfg = self.config
        started = time.monotonic()
        prepare_output_dir(self.output_dir, cfg.output.overwrite)
        stage_classes(cfg)  # unknown sinks fail now, before any model loads
        sources, infos = self._open_sources()  # a typo in a path fails in a second, not after the models load
        if not sources:  # each camera's error is already logged, one line each; no model loads
            run_id = self._record_failed_run(infos)
            return RunSummary(run_id, "failed", list(self.summaries.values()), time.monotonic() - started,
                              self.output_dir)
        log.info("loading the detector %s", cfg.detector.weights)
        detector = PersonDetector.from_config(cfg.detector)  # fails fast on bad weights, before anything is written
        first = next(iter(sources.values()))
        w, h = first.size or (640, 480)
        detector.detect([np.zeros((h, w, 3), np.uint8)])  # builds the backend now: its log lines precede the bars
        wants_embeddings = self._build_tracker().wants_embeddings  # fails fast on bad tracker name/params
        if wants_embeddings and not cfg.reid.enabled:
            raise ValueError("tracker.params.appearance_weight > 0 needs per-detection embeddings: set reid.enabled: "
                             "true, or appearance_weight: 0")
        if cfg.reid.enabled:
            log.info("loading the Re-ID model")
        all_files = all(not s.is_live for s in sources.values())
        built = build_stages(cfg, self.output_dir, all_files, self._redacted_config())
        stages = built.stages
        log.info("run %s: %d camera(s), output in %s", built.run.run_id, len(cfg.cameras), self.output_dir)
        readers: dict[str, CameraReader] = {}
        trackers = {}
        status = "failed"
        end_holder: dict = {}  # status and the first error, for the stages' close
        with ExitStack() as stack:
            stack.callback(self._close, readers, stages, end_holder)
            try:
                open_stages(stages, built.run, infos)
                for info in infos:
                    if info.error is None:
                        readers[info.camera_id] = CameraReader(sources[info.camera_id], self._stream_options())
                        trackers[info.camera_id] = self._build_tracker(info.fps)
                        self.summaries[info.camera_id].status = "running"
                self.loop_started = time.monotonic()  # cameras start decoding now (benchmarks time the loop from here)
                for reader in readers.values():
                    reader.start()
                bars = self._progress_bars(readers, stack)
                with _graceful_signals(self):
                    self._loop(readers, trackers, detector, stages, built.reid, bars)
                status = "interrupted" if self._interrupted else "completed"
            except KeyboardInterrupt:
                status = "interrupted"
            except Exception as err:
                if run_error(err) is None:
                    raise
                status = "failed"  # the store or an output broke (disk full...): close the rest, print the summary
                end_holder["error"] = run_error(err, self.output_dir)
            if status == "interrupted":
                log.warning("interrupted: stopping cameras and flushing what was recorded")
            if status == "completed" and not any(s.status != "failed" for s in self.summaries.values()):
                status = "failed"  # every camera failed
            end_holder["status"] = status
        return RunSummary(built.run.run_id, status, list(self.summaries.values()), time.monotonic() - started,
                          self.output_dir, {s.name: s.counters() for s in stages},
                          [line for s in stages if (line := s.summary_line())] + self._detection_embedding_line(),
                          error=end_holder.get("error"))

    def _record_failed_run(self, infos: list[CameraInfo]) -> int | None:
        """No camera could be opened: record the run and its cameras as failed in the store (nothing else runs)."""
        from pipeline.stages.base import RunInfo
        from pipeline.store.stage import StoreStage

        store = StoreStage.from_config(self.config, {"output_dir": str(self.output_dir)})
        run = RunInfo(store.begin_run(self._redacted_config(), str(self.output_dir)), self.output_dir)
        store.open(run)
        for info in infos:
            store.open_camera(info)
        store.close(RunEnd("failed", [CameraEnd(i.camera_id, "failed", 0, i.error) for i in infos]))
        return run.run_id

    def _close(self, readers, stages: list[Stage], end_holder: dict) -> None:
        """Stop the readers, then close every stage in order with the run's end (on every exit path)."""
        status = end_holder.get("status", "failed")
        for reader in readers.values():
            reader.stop()
        for reader_id, reader in readers.items():
            summary = self.summaries[reader_id]
            summary.dropped, summary.reconnects = reader.stats.frames_dropped, reader.stats.reconnects
        close_stages(stages, self.summaries, status, self._stop.is_set(), end_holder)

    def _progress_bars(self, readers, stack: ExitStack) -> dict:
        if not self.config.run.progress:
            return {}
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        stack.enter_context(logging_redirect_tqdm())
        bars = {}
        for pos, (cam_id, reader) in enumerate(readers.items()):
            bars[cam_id] = stack.enter_context(tqdm(total=reader.source.total_frames, desc=cam_id, unit="fr",
                                                    position=pos, dynamic_ncols=True, leave=True))
        return bars

    def _detection_embedding_line(self) -> list[str]:
        """The summary's line on single detections embedded (for the tracker's or the fusion's appearance)."""
        if self._det_embedder is None:
            return []
        failed = f", {self._det_embed_failures} steps without (Re-ID failed)" if self._det_embed_failures else ""
        return [f"Re-ID of single detections (tracker / fusion appearance): {self._det_embedder.crops_embedded} crops "
                f"from score {self._det_embedder.min_score:g}{failed}"]

    def _embed_detections(self, reid, trackers, batch: list[Frame], detections) -> list | None:
        """Per-detection embeddings, in one Re-ID batch for all cameras, of the frames whose camera's tracker has an
        appearance cost or whose detections the ground-plane fusion reads with their own look
        (`fusion_embedded_cameras`); None for every other frame of the batch, or None when no frame needs them."""
        from pipeline.reid.detection_embedder import (DetectionEmbedder, detection_embedding_min_score,
                                                      fusion_embedded_cameras)

        if reid is None:
            return None
        if self._fusion_embedded is None:
            self._fusion_embedded = fusion_embedded_cameras(self.config)
        wanted = [k for k, f in enumerate(batch)
                  if f.camera_id in self._fusion_embedded or trackers[f.camera_id].wants_embeddings]
        if not wanted:
            return None
        if self._det_embedder is None:
            self._det_embedder = DetectionEmbedder(reid.encoder, min_score=detection_embedding_min_score(
                self.config, next(iter(trackers.values()))), max_batch=self.config.reid.max_batch)
        out: list = [None] * len(batch)
        for k, e in zip(wanted, self._det_embedder.embed([batch[k] for k in wanted], [detections[k] for k in wanted])):
            out[k] = e
        return out

    def _next_frame(self, reader) -> Frame | None:
        """Live: the newest frame if one is ready (never waits). File: the next frame, waiting for the decoder, so
        every step holds one frame of every running file camera and results depend on the data only."""
        if reader.source.is_live:
            return reader.get(timeout=0.0)
        while not self._stop.is_set():
            frame = reader.get(timeout=0.5)
            if frame is not None or reader.done:
                return frame
        return None

    def _camera_ended(self, cam_id: str, reader, stages: list[Stage]) -> None:
        summary = self.summaries[cam_id]
        if reader.failed:
            summary.status, summary.error = "failed", reader.error or "source failed"
            log.error("%s", summary.error)
        elif reader.stats.truncated:
            summary.status, summary.error = "truncated", reader.stats.last_error
        else:
            summary.status = "completed"
            log.info("camera %s: finished after %d frames", cam_id, summary.frames)
        end = CameraEnd(cam_id, summary.status, summary.frames, summary.error)
        for stage in stages:
            stage.on_camera_end(end)

    def _collect(self, active: dict, ended: list) -> list[Frame]:
        """One step's frames: the next frame of every active camera that has one; cameras found finished leave
        `active` and are appended to `ended` as (camera_id, reader) (their end is reported by the caller)."""
        batch: list[Frame] = []
        for cam_id, reader in list(active.items()):
            frame = self._next_frame(reader)
            if frame is not None:
                batch.append(frame)
            elif reader.done:
                del active[cam_id]
                ended.append((cam_id, reader))
        return batch

    def _loop(self, readers, trackers, detector, stages: list[Stage], reid, bars) -> None:
        """Steps until every camera ended or a stop. With run.overlap_detection (auto = on), the next step's frames
        are read and detected on a worker thread while this step is tracked and staged; camera ends are still
        reported between the same steps, so every output is the same as without it. (On a GPU the detector's time
        hides behind the step's Python work; on a 2-core CPU, INT8 OpenVINO detector, Terrace 2 x 400 frames, it
        measured +3 % and +13 % frames/s in two back-to-back pairs.)"""
        from concurrent.futures import ThreadPoolExecutor

        active = dict(readers)
        duration = self.config.run.duration_s  # the frame loop's time, from its first step (not model start-up)
        loop_started = time.monotonic()
        index = 0
        overlap = self.config.run.overlap_detection != "off"
        pool = ThreadPoolExecutor(1, thread_name_prefix="detector") if overlap else None
        ahead = None  # (frames, their detections' future or None, cameras found ended) of the next step
        try:
            while (active or ahead is not None) and not self._stop.is_set():
                if duration is not None and time.monotonic() - loop_started >= duration:
                    log.info("duration of %g s reached: stopping", duration)
                    self._stop.set()  # the cameras still running are `stopped`; the run is `completed`
                    break
                read_ahead = ahead is not None
                if read_ahead:
                    (batch, pending, ended), ahead = ahead, None
                else:
                    ended, pending = [], None
                    batch = self._collect(active, ended)
                for cam_id, reader in ended:
                    self._camera_ended(cam_id, reader, stages)
                if not batch:
                    if not read_ahead:  # (a live camera's frame read ahead may be none yet: look again at once)
                        time.sleep(0.005)
                    continue
                detections = pending.result() if pending is not None else detector.detect([f.image for f in batch])
                if pool is not None and active and not self._stop.is_set():
                    ended_next: list = []
                    upcoming = self._collect(active, ended_next)
                    ahead = (upcoming, pool.submit(detector.detect, [f.image for f in upcoming]) if upcoming else None,
                             ended_next)
                self._process_step(index, batch, detections, trackers, stages, reid, bars)
                index += 1
        finally:
            if ahead is not None:  # stopped with the next step read: its cameras that ended are reported still
                for cam_id, reader in ahead[2]:
                    self._camera_ended(cam_id, reader, stages)
            if pool is not None:
                pool.shutdown(wait=True)

    def _process_step(self, index: int, batch: list[Frame], detections, trackers, stages: list[Stage], reid,
                      bars) -> None:
        """One step after detection: detections' embeddings, every camera's tracker, the stages, the bars."""
        det_embeddings = self._embed_detections(reid, trackers, batch, detections)
        step = Step(index, max(f.timestamp_s for f in batch))
        now = time.monotonic()
        for k, (frame, dets) in enumerate(zip(batch, detections)):
            tracker = trackers[frame.camera_id]
            emb = det_embeddings[k] if det_embeddings is not None else None
            if emb is not None:
                dets.embeddings = emb  # the fusion reads them with the detections
            if emb is not None and tracker.wants_embeddings:
                tracks = tracker.update(dets, frame.image, embeddings=emb)
            else:
                tracks = tracker.update(dets, frame.image)
            tracks.detections = dets
            step.frames.append((frame, tracks))
            self.summaries[frame.camera_id].count_frame(len(dets), tracks.track_ids.tolist(), now,
                                                        frame.timestamp_s)
        drive_step(stages, step)
        update_bars(bars, self.summaries, step)
