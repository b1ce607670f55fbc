"""`CameraWorker`: one camera's reader, detector (or client of the detector deployment), tracker and Re-ID tracklet
cropper, as a Ray actor's body.

The Ray engine wraps this class with `ray.remote` (one actor per camera, placed by `cameras[].resources`); it is a
plain class, so it also runs (and is tested) in one process. A worker thread decodes, detects, tracks and crops,
and queues one `CameraFrame` per frame; the driver collects them in batches with `take`.

Recorded files: every frame is processed in order and the queue blocks when full (back-pressure, nothing dropped),
as in the local engine. Live cameras: the reader keeps only the newest frames, and when the driver falls behind the
oldest queued messages are dropped (counted in `CameraDone.dropped`).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections import deque

import numpy as np

from pipeline.engines.messages import CameraDone, CameraFrame

log = logging.getLogger("mcsa.engine.camera")


class CameraWorker:
    """One camera: `open()` then `start()`, then `take()` until a `CameraDone` arrives; `finish()` stops it.

    config: the run's `PipelineConfig`; camera_id: one of its cameras; send_images: put the frame's pixels on each
    message (annotated video and sinks need them); reid_input_size: the Re-ID model's crop (H, W), None: no Re-ID;
    id_offset: added to every track id (a restarted actor's ids never collide with its earlier life's);
    reid_resize: the crop resize method of the Re-ID model (`ClipEncoder.resize`); detector_handle: the detector
    Serve deployment's handle (`detector.service: true`; `detector_serve.py`): no detector is loaded here, each frame
    is sent to it.
    """

    def __init__(self, config, camera_id: str, send_images: bool = False,
                 reid_input_size: tuple[int, int] | None = None, id_offset: int = 0, queue_size: int = 64,
                 reid_resize: str = "bilinear", detector_handle=None) -> None:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.config = config
        self.cam = next((c for c in config.cameras if c.id == camera_id), None)
        if self.cam is None:
            raise ValueError(f"camera {camera_id!r} is not in the config's cameras")
        self.send_images = send_images
        self.reid_input_size = reid_input_size
        self.reid_resize = reid_resize
        self.detector_handle = detector_handle
        self.id_offset = int(id_offset)
        self.queue_size = int(queue_size)
        self.source = self.reader = self.detector = self.tracker = self.cropper = None
        self.det_crop_rule: tuple[float, float] | None = None  # (min score, min box height px) of detection crops
        self.frames = 0
        self.lagging_dropped = 0  # live: messages dropped because the driver fell behind
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None  # files: bounded, blocking
        self._live: deque | None = None  # live: newest messages only
        self._cond = threading.Condition()
        self._done: CameraDone | None = None
        self._final_clips: list = []
        # clip schedule (reid.schedule): results pushed by the driver, folded in by the worker thread
        self._results: list = []  # (track_id, embedding, cut_frame, cut_t_s) not yet handed to the cropper
        self._results_through = -1  # every result of clips cut at frames <= this has been pushed (recorded files)
        self._pushes: dict[int, tuple[list, int]] = {}  # pushes that came before an earlier one
        self._next_push = 0
        self._unanswered: deque = deque()  # cut frames of periodic clips whose results have not come back
        self._recent: deque = deque()  # (frame count, timestamp s) of recent frames
        self.schedule_wait_s = 0.0  # the worker's waits for clip results (recorded files)

    # ---- setup --------------------------------------------------------------------------------------------------
    def where(self) -> dict:
        """The host and process this worker runs in (logs and the summary table name the node)."""
        return {"host": socket.gethostname(), "pid": os.getpid(), "node_ip": _node_ip(), "node_id": _node_id()}

    def set_id_offset(self, offset: int) -> None:
        """A restarted actor (Ray runs `__init__` again) numbers its tracks from `offset` + 1."""
        self.id_offset = int(offset)

    def total_frames(self) -> int | None:
        return getattr(self.source, "total_frames", None) if self.source is not None else None

    def open(self):
        """Open the source (probe), load the detector and build the tracker. Returns the camera's `CameraInfo`
        (its `error` set when the source cannot be opened); bad detector weights raise."""
        from models.detector import PersonDetector
        from pipeline.runner import Pipeline
        from pipeline.stages.base import CameraInfo
        from streams import SourceError, open_source, redact_uri

        helper = Pipeline(self.config)
        cam = self.cam
        try:
            self.source = open_source(cam.id, cam.source, fps=cam.fps, start_time_s=cam.start_time_s,
                                      max_frames=cam.max_frames, options=helper._stream_options())
        except SourceError as err:
            log.error("%s", err)
            return CameraInfo(cam.id, redact_uri(str(cam.source)), error=str(err))
        if self.detector_handle is not None:
            from pipeline.engines.detector_serve import DetectorClient

            self.detector = DetectorClient(self.detector_handle, cam.id, self.config.detector.imgsz)
        else:
            self.detector = PersonDetector.from_config(self.config.detector)
            w, h = self.source.size or (640, 480)
            self.detector.detect([np.zeros((h, w, 3), np.uint8)])  # build the backend now
        self.tracker = helper._build_tracker(self.source.fps)
        if self.tracker.wants_embeddings:
            raise ValueError("engine ray: trackers with an appearance cost (tracker.params.appearance_weight > 0) "
                             "are not supported yet; set appearance_weight: 0 or run.engine: local")
        if self.reid_input_size is not None:
            from pipeline.reid.cropper import TrackletCropper
            from pipeline.reid.detection_embedder import (MIN_BOX_HEIGHT_PX, detection_embedding_min_score,
                                                          fusion_embedded_cameras)

            if cam.id in fusion_embedded_cameras(self.config):  # the driver embeds them, one Re-ID batch per step
                self.det_crop_rule = (detection_embedding_min_score(self.config, self.tracker), MIN_BOX_HEIGHT_PX)

            r = self.config.reid
            self.cropper = TrackletCropper(
                camera_id=cam.id, input_size=tuple(self.reid_input_size), clip_len=r.clip_len,
                clip_every=r.clip_every, window=r.window, min_box_height=r.min_box_height,
                border_margin=r.border_margin, max_overlap=r.max_overlap, max_tracks=r.max_tracks,
                end_after_frames=r.end_after_frames, resize=self.reid_resize)
        self._helper = helper
        log.info("camera %s on %s (pid %d)", cam.id, socket.gethostname(), os.getpid())
        return CameraInfo(cam.id, self.source.display_uri, self.source.fps, self.source.size, self.source.is_live)

    def start(self, grouped: bool = False) -> None:
        """Start decoding and the worker thread. grouped: every camera of the run is a recorded file; the Re-ID clip
        schedule (`reid.schedule`) then waits for the driver's clip results (`push_results`) where the local engine
        would have them, so the clips are the local engine's."""
        from pipeline.reid.stage import clip_schedule
        from streams import CameraReader

        if self.cropper is not None:
            self.cropper.schedule = clip_schedule(self.config.reid, grouped and not self.source.is_live)

        self.reader = CameraReader(self.source, self._helper._stream_options())
        if self.source.is_live:
            self._live = deque()
        else:
            self._queue = queue.Queue(maxsize=self.queue_size)
        self.reader.start()
        self._thread = threading.Thread(target=self._work, name=f"camera-{self.cam.id}", daemon=True)
        self._thread.start()

    # ---- driver API ---------------------------------------------------------------------------------------------
    def take(self, max_items: int = 64, timeout: float = 1.0) -> list:
        """Up to `max_items` queued messages, oldest first; waits at most `timeout` s for the first. The last message
        of a camera is its `CameraDone`."""
        out: list = []
        deadline = time.monotonic() + timeout
        if self._queue is not None:
            while len(out) < max_items:
                try:
                    wait = max(deadline - time.monotonic(), 0.0) if not out else 0.0
                    item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                out.append(item)
                if isinstance(item, CameraDone):
                    break
            return out
        with self._cond:
            while not self._live and time.monotonic() < deadline:
                self._cond.wait(max(deadline - time.monotonic(), 0.0))
            while self._live and len(out) < max_items:
                out.append(self._live.popleft())
        return out

    def finish(self, flush: bool = False) -> list:
        """Stop decoding and the worker thread; with `flush`, the final Re-ID clips of every buffered track."""
        self._stop.set()
        if self.reader is not None:
            self.reader.stop()
        if self._queue is not None:  # unblock a worker waiting on a full queue
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
        if self._thread is not None:
            self._thread.join(timeout=30)
        if flush and self.cropper is not None:
            return self._offset_clips(self.cropper.flush())
        return []

    def push_results(self, seq: int, results: list, through: int) -> None:
        """Clip results of this camera's tracks from the driver, in the order it applied them: (track_id, embedding
        float32 (D,), cut_frame, cut_t_s) each; through: every result of clips cut at frames <= this is now here
        (recorded files; -1: unknown); seq: 0, 1, 2 ... (pushes may run out of order in this threaded actor: they
        are taken in order). The clip schedule folds them in at the frames the local engine would."""
        with self._cond:
            self._pushes[int(seq)] = (results, int(through))
            while self._next_push in self._pushes:
                results, through = self._pushes.pop(self._next_push)
                self._next_push += 1
                self._results.extend(results)
                self._results_through = max(self._results_through, through)
            self._cond.notify_all()

    def counters(self) -> dict:
        stats = self.reader.stats if self.reader is not None else None
        return {"frames": self.frames, "dropped": (stats.frames_dropped if stats else 0) + self.lagging_dropped,
                "reconnects": stats.reconnects if stats else 0, "schedule_wait_s": round(self.schedule_wait_s, 3)}

    def detector_counters(self) -> dict | None:
        """The detector service's counters of this camera (`DetectorClient.counters`); None with its own detector."""
        counters = getattr(self.detector, "counters", None)
        return counters() if counters is not None else None

    def pid(self) -> int:
        return os.getpid()

    # ---- worker thread ------------------------------------------------------------------------------------------
    def _put(self, item) -> None:
        if self._queue is not None:
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.2)
                    return
                except queue.Full:
                    continue
            return
        with self._cond:
            self._live.append(item)
            while len(self._live) > self.queue_size and not isinstance(self._live[0], CameraDone):
                self._live.popleft()
                self.lagging_dropped += 1
            self._cond.notify_all()

    def _next_frame(self):
        if self.source.is_live:
            while not self._stop.is_set():
                frame = self.reader.get(timeout=0.5)
                if frame is not None or self.reader.done:
                    return frame
            return None
        while not self._stop.is_set():
            frame = self.reader.get(timeout=0.5)
            if frame is not None or self.reader.done:
                return frame
        return None

    def _fold_results(self, frame) -> None:
        """Before cropping `frame`: hand the pushed clip results to the cropper's schedule. Recorded files: first wait
        until every result the schedule may see at this frame is here (those of periodic clips cut at least
        `result_lag_s` and `result_lag_frames` before it), so the clips are the local engine's."""
        schedule = self.cropper.schedule if self.cropper is not None else None
        if schedule is None:
            return
        m = self.cropper.frames
        if schedule.result_lag_frames > 0:  # recorded files
            self._recent.append((m, frame.timestamp_s))
            while len(self._recent) > 1 and schedule.visible(*self._recent[1], m, frame.timestamp_s):
                self._recent.popleft()
            need = self._recent[0][0] if schedule.visible(*self._recent[0], m, frame.timestamp_s) else -1
            while self._unanswered and self._unanswered[0] <= self._results_through:
                self._unanswered.popleft()
            if self._unanswered and self._unanswered[0] <= need:
                target = max(u for u in self._unanswered if u <= need)
                t0 = time.perf_counter()
                with self._cond:
                    while self._results_through < target and not self._stop.is_set():
                        self._cond.wait(0.5)
                self.schedule_wait_s += time.perf_counter() - t0
        with self._cond:
            results, self._results = self._results, []
        for track_id, embedding, cut_frame, cut_t_s in results:
            self.cropper.on_result(track_id - self.id_offset, embedding, cut_frame, cut_t_s)

    def _offset_clips(self, clips: list) -> list:
        if self.id_offset:
            for clip in clips:
                clip.track_id += self.id_offset
        return clips

    def _work(self) -> None:
        from pipeline.reid.detection_embedder import detection_crops

        status, error = "completed", None
        try:
            while not self._stop.is_set():
                frame = self._next_frame()
                if frame is None:
                    break
                received = time.time()
                dets = self.detector.detect([frame.image])[0]
                tracks = self.tracker.update(dets, frame.image)
                tracks.detections = dets
                det_crops = None
                if self.det_crop_rule is not None:
                    det_crops = detection_crops(frame.image, dets, tuple(self.reid_input_size), self.reid_resize,
                                                *self.det_crop_rule)
                clips = []
                if self.cropper is not None:
                    self._fold_results(frame)
                    clips = self.cropper.on_tracks(frame, tracks)
                    if self.cropper.schedule is not None and self.cropper.schedule.result_lag_frames > 0:
                        self._unanswered.extend(c.cut_frame for c in clips if c.cut_frame >= 0)
                if self.id_offset:
                    tracks.track_ids = tracks.track_ids + self.id_offset
                    self._offset_clips(clips)
                self.frames += 1
                self._put(CameraFrame(self.cam.id, frame.index, frame.timestamp_s, (frame.width, frame.height),
                                      frame.image if self.send_images else None, tracks, clips, len(dets),
                                      received, det_crops))
        except Exception as err:  # noqa: BLE001 - one camera's failure is reported, the others go on
            log.exception("camera %s failed", self.cam.id)
            status, error = "failed", f"camera {self.cam.id}: {type(err).__name__}: {err}"
        if self._stop.is_set():
            return  # the driver stopped this camera; it knows its state
        reader = self.reader
        if status == "completed" and reader.failed:
            status, error = "failed", reader.error or "source failed"
        elif status == "completed" and reader.stats.truncated:
            status, error = "truncated", reader.stats.last_error
        c = self.counters()
        final = self._offset_clips(self.cropper.flush()) if self.cropper is not None else []
        schedule = self.cropper.schedule if self.cropper is not None else None
        self._put(CameraDone(self.cam.id, status, self.frames, error, final, c["dropped"], c["reconnects"],
                             schedule.skipped if schedule is not None else 0))


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()[:8]
    except Exception:  # noqa: BLE001 - outside Ray
        return None


def _node_ip() -> str | None:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - outside Ray
        return None


__all__ = ["CameraWorker"]
