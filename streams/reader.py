"""`CameraReader`: runs one FrameSource in a daemon thread behind a bounded buffer.

File sources: blocking put (decode ahead up to file_queue_size frames, nothing dropped).
Live sources: latest frames only (live_queue_size); when full the oldest frame is dropped and counted, so the lag
of what `get()` returns never grows with time."""

from __future__ import annotations

import threading
import time
from collections import deque

from core.types import Frame

from .base import FrameSource, SourceError, SourceStats, StreamOptions, log
from .redact import redact_text


class CameraReader:
    """Reads `source` concurrently; a failing source only marks this reader failed."""

    def __init__(self, source: FrameSource, options: StreamOptions | None = None) -> None:
        self.source = source
        self.options = options or source.options
        self.live = bool(source.is_live)
        self._capacity = max(1, self.options.live_queue_size if self.live else self.options.file_queue_size)
        self._buffer: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._finished = False
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    @property
    def camera_id(self) -> str:
        return self.source.camera_id

    @property
    def stats(self) -> SourceStats:
        return self.source.stats

    def start(self) -> None:
        """Start the reading thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"mcsa-cam-{self.camera_id}", daemon=True)
        self._thread.start()

    def _put(self, frame: Frame) -> bool:
        with self._cond:
            if self._stop.is_set():
                return False
            if self.live:
                while len(self._buffer) >= self._capacity:
                    self._buffer.popleft()
                    self.source.stats.frames_dropped += 1
            else:
                while len(self._buffer) >= self._capacity and not self._stop.is_set():
                    self._cond.wait(0.1)
                if self._stop.is_set():
                    return False
            self._buffer.append(frame)
            self._cond.notify_all()
            return True

    def _run(self) -> None:
        try:
            for frame in self.source.frames():
                if self._stop.is_set() or not self._put(frame):
                    break
        except SourceError as exc:
            self.error = str(exc)
            log.error("%s", self.error)
        except Exception as exc:  # a bug or an OS error in one reader must not take the others down
            self.error = redact_text(
                f"camera {self.camera_id}: reader crashed on {self.source.display_uri} ({type(exc).__name__}: {exc}); "
                "this is a bug, please report it with the log", self.source.uri)
            log.exception("%s", self.error)
        finally:
            if self.error:
                self.source.stats.last_error = self.error
            self.source.close()
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame, waiting up to `timeout` s (None: until a frame comes or the source ends).

        File sources: frames in order, none skipped. Live sources: the oldest of the newest live_queue_size frames.
        Returns None on timeout or once the source has ended.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._buffer:
                if self._finished or self._stop.is_set():
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is not None else 0.5)
            frame = self._buffer.popleft()
            self._cond.notify_all()
            return frame

    @property
    def done(self) -> bool:
        """The source ended (or failed) and nothing is left to get."""
        with self._cond:
            return self._finished and not self._buffer

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and the source's subprocess (returns within ~timeout s); idempotent.

        Frames still buffered are discarded: a stopped reader has nothing left to get, so `get()` returns None."""
        self._stop.set()
        self.source.close()
        with self._cond:
            self._buffer.clear()
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("camera %s: reader thread did not stop within %.1f s", self.camera_id, timeout)

    def __enter__(self) -> "CameraReader":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"CameraReader({self.source!r})"
