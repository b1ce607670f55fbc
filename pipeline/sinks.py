"""Track sinks: consumers of each camera's tracks after tracking (files, exports, event logic).

The `Pipeline` calls every sink from its main thread, in order, for each processed frame; a sink owns its own state
(open files, buffers) and releases it in `close()`, which is called on every exit path (end, error, Ctrl-C).
New outputs plug in by adding a sink to `build_sinks`, without touching the loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from core.types import Frame, Tracks


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


def build_sinks(config, output_dir: Path, store_writer=None, action_names: list[str] | None = None) -> list[TrackSink]:
    """The sinks a config asks for, in call order. `action_names`: the Re-ID-AR checkpoint's trained actions (None or
    empty: no action branch, so `events.source: auto` uses motion). Sinks with `bind_identity(lookup)` get the
    run's (camera_id, track_id) -> global id lookup from the `Pipeline` once association is set up."""
    from pipeline.outputs import MotWriter

    sinks: list[TrackSink] = []
    if config.output.mot or config.association.enabled:  # with association, global ids go to mot/ at the end
        sinks.append(MotWriter(Path(output_dir) / ("mot_local" if config.association.enabled else "mot")))
    events = None
    if config.events.enabled:
        from pipeline.events.sink import build_event_sink

        events = build_event_sink(config, Path(output_dir), store_writer, action_names)
        sinks.append(events)
    if config.output.video != "off":
        from pipeline.video_output import AnnotatedVideoSink

        sinks.append(AnnotatedVideoSink(Path(output_dir) / "video", config.output.video, config.output.video_fps,
                                        action_of=events.current_action if events is not None else None))
    return sinks
