"""Live network streams (rtsp://, rtsps://, http(s)://, rtmp://, srt://, udp://) decoded by an ffmpeg subprocess, with
a read watchdog and capped exponential back-off reconnection. Timestamps are the wall clock at receipt.

The URL (which may hold credentials) reaches ffmpeg through a pipe, never its command line (see
`ffmpeg_util.spawn_decoder(hide_uri=True)`), so `ps` shows no password."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator

import numpy as np

from core.types import Frame

from .base import FrameSource, SourceError, StreamOptions, log
from .ffmpeg_util import (
    HiddenUriUnsupported,
    OutputSizeWatcher,
    error_cause,
    socket_timeout_args,
    spawn_decoder,
    stop_process,
)
from .redact import redact_text

LIVE_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "rtmps", "srt", "udp", "tcp")


def _readable(fd: int, timeout_s: float) -> bool:
    try:
        return bool(select.select([fd], [], [], timeout_s)[0])
    except (OSError, ValueError):
        return False


class _ConnectFailed(Exception):
    """One connection attempt failed; args[0] is a short redacted cause."""


class LiveStreamSource(FrameSource):
    """A network camera read through ffmpeg. Reconnects by itself once it has worked (see StreamOptions)."""

    is_live = True

    def __init__(
        self, camera_id: str, uri: str, *, fps: float | None = None, options: StreamOptions | None = None
    ) -> None:
        super().__init__(camera_id, uri, options)
        self.fps_override = float(fps) if fps else None
        self.fps = self.fps_override
        self._closed = threading.Event()
        self._proc = None
        self._index = 0

    # ---- connection -------------------------------------------------------------------------------------------
    def _input_kwargs(self) -> dict:
        kwargs: dict = dict(socket_timeout_args(self.uri, self.options.read_timeout_s))
        scheme = self.uri.split("://", 1)[0].lower()
        if scheme in ("rtsp", "rtsps"):
            kwargs["rtsp_transport"] = self.options.rtsp_transport
        return kwargs

    def _connect(self):
        """Start ffmpeg and wait until it announces the output frame size; raise _ConnectFailed otherwise."""
        watcher = OutputSizeWatcher()
        try:
            proc, drain = spawn_decoder(self.uri, self._input_kwargs(), on_line=watcher, hide_uri=True)
        except HiddenUriUnsupported as exc:
            raise _ConnectFailed(str(exc)) from None
        self._proc = proc
        wait_s = max(2.0, 2.0 * self.options.read_timeout_s)
        deadline = time.monotonic() + wait_s
        input_seen_at: float | None = None
        while not watcher.ready.is_set():
            if self._closed.is_set():
                stop_process(proc)
                raise _ConnectFailed("closed")
            if proc.poll() is not None:
                drain.join(1.0)
                stop_process(proc)
                raise _ConnectFailed(error_cause(list(drain.lines), self.uri))
            if time.monotonic() > deadline:
                stop_process(proc)
                drain.join(0.5)
                raise _ConnectFailed(f"no video within {wait_s:g} s")
            if watcher.input is not None and _readable(proc.stdout.fileno(), 0.0):
                # frames flow but ffmpeg has not logged the output stream yet: the decoded size is the input's
                if input_seen_at is None:
                    input_seen_at = time.monotonic()
                elif time.monotonic() - input_seen_at > 0.5:
                    break
            watcher.ready.wait(0.05)
        out = watcher.output or watcher.input
        assert out is not None
        self.size = (out.width, out.height)
        if self.fps_override is None and watcher.input is not None and watcher.input.fps:
            self.fps = watcher.input.fps
        return proc, drain

    def _read(self, proc, drain) -> Iterator[Frame]:
        """Yield frames until the stream is lost; return the (redacted) reason."""
        width, height = self.size  # type: ignore[misc]
        nbytes = width * height * 3
        fd = proc.stdout.fileno()
        timeout = self.options.read_timeout_s
        while not self._closed.is_set():
            buf = bytearray(nbytes)
            view = memoryview(buf)
            got = 0
            last = time.monotonic()
            while got < nbytes:
                remaining = timeout - (time.monotonic() - last)
                if remaining <= 0:
                    return f"no frame for {timeout:g} s"
                try:
                    ready, _, _ = select.select([fd], [], [], min(remaining, 0.25))
                except (OSError, ValueError):
                    return "closed"
                if self._closed.is_set():
                    return "closed"
                if not ready:
                    continue
                try:
                    chunk = os.read(fd, nbytes - got)
                except OSError:
                    return "closed"
                if not chunk:
                    proc.poll()
                    drain.join(0.5)
                    return error_cause(list(drain.lines), self.uri) if drain.lines else "stream ended"
                view[got : got + len(chunk)] = chunk
                got += len(chunk)
            image = np.frombuffer(buf, np.uint8).reshape(height, width, 3)
            frame = Frame(self.camera_id, self._index, time.time(), image)
            self._index += 1
            self.stats.frames_read += 1
            yield frame
        return "closed"

    # ---- public -----------------------------------------------------------------------------------------------
    def frames(self) -> Iterator[Frame]:
        opts = self.options
        attempts = 0  # initial connection attempts
        failures = 0  # consecutive failed reconnects
        worked = False
        while not self._closed.is_set():
            try:
                proc, drain = self._connect()
            except _ConnectFailed as exc:
                if self._closed.is_set():
                    return
                cause = str(exc)
                self.stats.last_error = cause
                if not worked:
                    attempts += 1
                    if attempts >= opts.connect_attempts:
                        n = "attempt" if attempts == 1 else "attempts"
                        raise SourceError(
                            f"camera {self.camera_id}: cannot connect to {self.display_uri} ({cause}) after "
                            f"{attempts} {n}; check the URL, credentials and that the camera is reachable"
                        ) from None
                    delay = opts.backoff_s(attempts - 1)
                    log.warning("camera %s: cannot connect to %s (%s), attempt %d/%d; retrying in %.1f s",
                                self.camera_id, self.display_uri, cause, attempts, opts.connect_attempts, delay)
                else:
                    failures += 1
                    if opts.max_reconnects is not None and failures > opts.max_reconnects:
                        raise SourceError(
                            f"camera {self.camera_id}: lost {self.display_uri} and could not reconnect ({cause}) after "
                            f"{opts.max_reconnects} attempts; check that the camera is up and reachable"
                        ) from None
                    delay = opts.backoff_s(failures)
                    log.warning("camera %s: reconnect to %s failed (%s); retrying in %.1f s",
                                self.camera_id, self.display_uri, cause, delay)
                self._closed.wait(delay)
                continue
            if worked:
                self.stats.reconnects += 1
                log.info("camera %s: reconnected to %s (%dx%d)", self.camera_id, self.display_uri, *self.size)
            else:
                log.info("camera %s: connected to %s (%dx%d, %s fps)", self.camera_id, self.display_uri,
                         *self.size, f"{self.fps:g}" if self.fps else "unknown")
            worked = True
            before = self.stats.frames_read
            try:
                reason = yield from self._read(proc, drain)
            finally:
                stop_process(proc)
                self._proc = None
            if self._closed.is_set():
                return
            if self.stats.frames_read > before:
                failures = 0
            reason = redact_text(reason, self.uri)
            self.stats.last_error = reason
            delay = opts.backoff_s(failures)
            log.warning("camera %s: lost %s (%s); reconnecting in %.1f s", self.camera_id, self.display_uri,
                        reason, delay)
            self._closed.wait(delay)

    def close(self) -> None:
        self._closed.set()
        stop_process(self._proc)


RtspSource = LiveStreamSource
