"""Local cameras by device index through cv2.VideoCapture (live: wall-clock timestamps, reopen on loss)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import cv2

from core.types import Frame

from .base import FrameSource, SourceError, StreamOptions, log


class WebcamSource(FrameSource):
    """Webcam `device` (0, 1, ...). Reopens with capped exponential back-off when reads fail."""

    is_live = True

    def __init__(self, camera_id: str, device: int, *, fps: float | None = None,
                 options: StreamOptions | None = None) -> None:
        super().__init__(camera_id, device, options)
        self.device = int(device)
        self.fps_override = float(fps) if fps else None
        self.fps = self.fps_override
        self._closed = threading.Event()
        self._cap: cv2.VideoCapture | None = None
        self._lock = threading.Lock()

    @property
    def display_uri(self) -> str:
        return f"webcam {self.device}"

    def _open(self) -> cv2.VideoCapture | None:
        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            return None
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (w, h) if w and h else None
        device_fps = cap.get(cv2.CAP_PROP_FPS)
        if self.fps_override is None and device_fps and device_fps > 0:
            self.fps = float(device_fps)
        with self._lock:
            self._cap = cap
        return cap

    def frames(self) -> Iterator[Frame]:
        opts = self.options
        attempts = failures = 0
        worked = False
        index = 0
        while not self._closed.is_set():
            cap = self._open()
            if cap is None:
                if not worked:
                    attempts += 1
                    if attempts >= opts.connect_attempts:
                        raise SourceError(
                            f"camera {self.camera_id}: cannot open webcam device {self.device} after {attempts} "
                            "attempts; check the device index, that it is plugged in and not used by another program"
                        )
                    delay = opts.backoff_s(attempts - 1)
                else:
                    failures += 1
                    if opts.max_reconnects is not None and failures > opts.max_reconnects:
                        raise SourceError(
                            f"camera {self.camera_id}: lost webcam device {self.device} and could not reopen it after "
                            f"{opts.max_reconnects} attempts; check that it is still plugged in"
                        )
                    delay = opts.backoff_s(failures)
                self.stats.last_error = f"cannot open webcam device {self.device}"
                log.warning("camera %s: cannot open webcam %d; retrying in %.1f s", self.camera_id, self.device, delay)
                self._closed.wait(delay)
                continue
            if worked:
                self.stats.reconnects += 1
            log.info("camera %s: webcam %d opened (%s)", self.camera_id, self.device, self.size)
            worked = True
            try:
                while not self._closed.is_set():
                    ok, image = cap.read()
                    if not ok or image is None:
                        break
                    failures = 0
                    self.stats.frames_read += 1
                    yield Frame(self.camera_id, index, time.time(), image)
                    index += 1
            finally:
                with self._lock:
                    self._cap = None
                cap.release()
            if self._closed.is_set():
                return
            self.stats.last_error = f"webcam {self.device} stopped delivering frames"
            delay = opts.backoff_s(failures)
            log.warning("camera %s: webcam %d lost; reopening in %.1f s", self.camera_id, self.device, delay)
            self._closed.wait(delay)

    def close(self) -> None:
        self._closed.set()
