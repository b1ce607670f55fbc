"""Track sinks: consumers of each camera's tracks after tracking (files, exports, event logic).

The `Pipeline` calls every sink from its main thread, in order, for each processed frame; a sink owns its own state
(open files, buffers) and releases it in `close()`, which is called on every exit path (end, error, Ctrl-C).
New outputs plug in by adding a sink to `build_sinks`, without touching the loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from pipeline.types import Frame, Tracks


class TrackSink(ABC):
    """Receives (frame, tracks) of every camera, frame by frame."""

    def open_camera(self, camera_id: str, fps: float | None, size: tuple[int, int] | None) -> None:
        """A camera starts (called before its first frame; also for cameras that fail to open, with fps=None)."""

    @abstractmethod
    def on_tracks(self, frame: Frame, tracks: Tracks) -> None:
        """One processed frame of one camera and its tracks."""

    def on_camera_end(self, camera_id: str) -> None:
        """A camera finished or failed: no more frames will come from it."""

    def close(self) -> None:
        """Flush and release everything (idempotent)."""


def build_sinks(config, output_dir: Path, store_writer=None) -> list[TrackSink]:
    """The sinks a config asks for, in call order."""
    from pipeline.outputs import MotWriter

    sinks: list[TrackSink] = []
    if config.output.mot:
        sinks.append(MotWriter(Path(output_dir) / "mot"))
    return sinks
