"""The source contract: options, statistics, the fatal error type and the abstract `FrameSource`."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from core.types import Frame

from .redact import redact_uri

log = logging.getLogger("mcsa.streams")


class SourceError(RuntimeError):
    """Fatal source problem; str() is one line naming the camera, the (redacted) uri, the cause and the fix."""


@dataclass
class StreamOptions:
    """How sources are read. Times in seconds, sizes in frames."""

    live_queue_size: int = 2  # latest-frame buffer for live sources (oldest dropped when full, drops counted)
    file_queue_size: int = 16  # decoded-ahead frames for file sources (blocking put: no drops)
    rtsp_transport: str = "tcp"  # ffmpeg -rtsp_transport (tcp, udp, http, https)
    read_timeout_s: float = 5.0  # a live source that delivers nothing for this long is considered lost
    connect_attempts: int = 3  # initial connection attempts before the camera is declared failed
    reconnect_initial_s: float = 0.5  # capped exponential back-off after a lost live stream
    reconnect_max_s: float = 8.0
    max_reconnects: int | None = None  # consecutive failed reconnects before giving up; None = forever

    def backoff_s(self, attempt: int) -> float:
        """Delay before retry number `attempt` (0-based): initial * 2**attempt, capped at reconnect_max_s."""
        return min(self.reconnect_max_s, self.reconnect_initial_s * (2 ** min(attempt, 30)))


@dataclass
class SourceStats:
    """Counters of one source. frames_dropped: live frames discarded because the consumer was slower."""

    frames_read: int = 0
    frames_dropped: int = 0
    reconnects: int = 0  # successful reconnections after a lost live stream
    last_error: str | None = None
    truncated: bool = False  # a file ended well before the frame count its container announced


class FrameSource(ABC):
    """One camera's frames. Subclasses fill the attributes below (live ones once connected).

    fps: effective frames per second (override, else container/device); size: (width, height) in pixels;
    total_frames: expected number of frames (files/folders; an estimate from the container), None when unknown/live.
    """

    is_live: bool = False

    def __init__(self, camera_id: str, uri: str | int, options: StreamOptions | None = None) -> None:
        self.camera_id = str(camera_id)
        self.uri = str(uri)
        self.options = options or StreamOptions()
        self.stats = SourceStats()
        self.fps: float | None = None
        self.size: tuple[int, int] | None = None
        self.total_frames: int | None = None

    @property
    def display_uri(self) -> str:
        """The uri with credentials hidden: the only form that may be logged."""
        return redact_uri(self.uri)

    def error(self, cause: str, fix: str) -> SourceError:
        """A one-line SourceError: 'camera X: <cause>; <fix>' (newlines folded)."""
        text = f"camera {self.camera_id}: {cause}; {fix}" if fix else f"camera {self.camera_id}: {cause}"
        return SourceError(" ".join(text.split()))

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Yield frames in order; raise SourceError on a fatal failure (live sources reconnect internally)."""

    @abstractmethod
    def close(self) -> None:
        """Release the device/subprocess; safe to call from another thread and more than once."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(camera_id={self.camera_id!r}, uri={self.display_uri!r})"
