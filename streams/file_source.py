"""Video files decoded by an ffmpeg subprocess into BGR frames: every frame, in order, deterministic."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import numpy as np

from core.types import Frame

from .base import FrameSource, SourceError, StreamOptions, log
from .ffmpeg_util import OutputSizeWatcher, VideoStreamInfo, error_cause, probe_video, spawn_decoder, stop_process

DEFAULT_FPS = 25.0
HEADER_TIMEOUT_S = 30.0  # time ffmpeg may take to print the output stream before the first frame


def read_exact(stream, nbytes: int) -> bytearray | None:
    """Read exactly `nbytes` from a pipe into a fresh (writable) buffer; None at EOF or on a short tail."""
    buf = bytearray(nbytes)
    view = memoryview(buf)
    got = 0
    while got < nbytes:
        try:
            n = stream.readinto(view[got:])
        except (OSError, ValueError):  # pipe closed by close() from another thread
            return None
        if not n:
            return None
        got += n
    return buf


class FileSource(FrameSource):
    """A video file (anything ffmpeg reads). Timestamps: start_time_s + index / fps."""

    is_live = False

    def __init__(
        self,
        camera_id: str,
        path: str,
        *,
        fps: float | None = None,
        start_time_s: float = 0.0,
        max_frames: int | None = None,
        options: StreamOptions | None = None,
    ) -> None:
        super().__init__(camera_id, path, options)
        self.path = path
        self.start_time_s = float(start_time_s)
        self.max_frames = max_frames
        self._proc = None
        self._closed = threading.Event()
        if not os.path.isfile(path):
            raise SourceError(f"camera {self.camera_id}: video file not found: {path} (check the path in the config or --source)")
        info, lines = probe_video(path)
        if info is None:
            raise self.error(self._unreadable_cause(lines), "check that it is a video file ffmpeg can decode")
        self.info: VideoStreamInfo = info
        self.size = (info.width, info.height)
        self.total_frames = info.expected_frames
        if fps:
            self.fps = float(fps)
        elif info.fps:
            self.fps = info.fps
        else:
            self.fps = DEFAULT_FPS
            log.warning("camera %s: %s has no frame rate; assuming %g fps", self.camera_id, path, DEFAULT_FPS)
        log.info(
            "camera %s: video %s (%dx%d, %g fps%s, %s frames)", self.camera_id, path, info.width, info.height,
            self.fps, f", container says {info.fps:g}" if fps and info.fps and abs(info.fps - fps) > 1e-6 else "",
            self.total_frames if self.total_frames is not None else "unknown",
        )

    def _unreadable_cause(self, lines: list[str]) -> str:
        opened = next((ln for ln in lines if ln.startswith("Input #")), None)
        if opened is not None:
            fmt = opened.split(",")[1].strip() if "," in opened else "unknown"
            return f"not a video: {self.path} has no video stream (ffmpeg reads it as '{fmt}')"
        return f"not a readable video: {self.path} ({error_cause(lines, self.path)})"

    def frames(self) -> Iterator[Frame]:
        if self._closed.is_set():
            return
        watcher = OutputSizeWatcher()
        proc, drain = spawn_decoder(self.path, on_line=watcher, nice=10)  # reads ahead: low priority is enough
        self._proc = proc
        index = 0
        try:
            # the output stream's size is authoritative (rotation, odd containers); fall back to the probe's
            watcher.ready.wait(HEADER_TIMEOUT_S) if proc.poll() is None else None
            width, height = (watcher.output.width, watcher.output.height) if watcher.output else self.size
            if (width, height) != self.size:
                log.info("camera %s: decoder outputs %dx%d", self.camera_id, width, height)
                self.size = (width, height)
            nbytes = width * height * 3
            while self.max_frames is None or index < self.max_frames:
                buf = read_exact(proc.stdout, nbytes)
                if buf is None:
                    break
                image = np.frombuffer(buf, np.uint8).reshape(height, width, 3)
                yield Frame(self.camera_id, index, self.start_time_s + index / self.fps, image)
                index += 1
                self.stats.frames_read = index
            else:
                return  # max_frames reached: finally stops ffmpeg
            if self._closed.is_set():
                return
            try:
                proc.wait(5.0)
            except Exception:
                pass
            drain.join(1.0)
            self._check_end(index, proc.returncode, list(drain.lines))
        finally:
            stop_process(proc)
            self._proc = None

    def _check_end(self, count: int, returncode: int | None, lines: list[str]) -> None:
        if count == 0:
            cause = error_cause(lines, self.path) if returncode else "no frame could be decoded"
            self.stats.last_error = cause
            raise self.error(f"cannot decode video {self.path} ({cause})", "check that the file is not corrupt")
        expected = self.total_frames
        if expected and count < expected - max(2, int(0.02 * expected)):
            msg = f"camera {self.camera_id}: stream ended at frame {count} of expected {expected}: file truncated or corrupt"
            self.stats.last_error = msg
            self.stats.truncated = True
            log.warning(msg)
        else:
            log.info("camera %s: end of video after %d frames", self.camera_id, count)

    def close(self) -> None:
        self._closed.set()
        stop_process(self._proc)
