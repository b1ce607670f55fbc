"""The stage protocol: everything that consumes a camera's frames and tracks after the tracker implements `Stage`.

The loop (`pipeline/runner.py`) moves data only. For each run it calls, on every stage, in the order the builder
declares (`pipeline/stages/builder.py`, `STAGE_ORDER`):

    open(run: RunInfo)
    open_camera(camera: CameraInfo)                       once per camera, also for a camera that failed to open
    per step, stage after stage:
        on_frame(frame: Frame, tracks: Tracks)            for each camera that has a frame in this step
        on_step(step: Step)                               once, after this stage has seen all the step's frames
    on_camera_end(end: CameraEnd)                         a camera finished or failed: no more frames from it
    close(end: RunEnd)                                    always, on every exit path (end, error, Ctrl-C)
    counters() -> dict, summary_line() -> str | None      for the summary table (empty / None: nothing to print)

Stages talk only through these messages: a stage that owns a per-track fact writes it onto the camera's `Tracks`
(`embeddings`, `action_probs`, `global_ids`, `current_actions`, ...), a per-step fact onto the `Step` (`appearance`,
`links`, `action_events`), a run-end fact onto the `RunEnd`; stages after it read it there. No stage holds a reference
to another, and every message is a plain, picklable dataclass, so a stage can live in another process or machine.

A new stage or sink is one class plus one registration line:

    @register_stage("my_sink")
    class MySink(Stage):
        @classmethod
        def from_config(cls, config, params): return cls(**params)
        def on_frame(self, frame, tracks): ...

and `sinks: [{name: my_sink, params: {...}}]` in the pipeline config (`docs/architecture.md`, "How to extend").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from core.registry import Registry
from core.types import Frame, Tracks

STAGES: Registry = Registry("stage")


@dataclass(frozen=True)
class RunInfo:
    """What every stage knows about the run from its start.

    run_id: the store's run id (None without a store); output_dir: the run's output folder; all_files: every camera
    is a recorded file (results must then depend on the data only); action_names: the Re-ID-AR checkpoint's trained
    actions (empty: no action branch); embedding_dim: D of the Re-ID appearance vectors (None: no Re-ID).
    """

    run_id: int | None
    output_dir: Path
    all_files: bool = True
    action_names: tuple[str, ...] = ()
    embedding_dim: int | None = None


@dataclass(frozen=True)
class CameraInfo:
    """One camera of the run. fps: frames/s (None: unknown or failed to open); size: (width, height) px or None;
    source: the URI with credentials removed; error: why it failed to open (None: it is open)."""

    camera_id: str
    source: str
    fps: float | None = None
    size: tuple[int, int] | None = None
    is_live: bool = False
    error: str | None = None


@dataclass(frozen=True)
class CameraEnd:
    """A camera stopped sending frames. status: completed | failed | stopped; frames: frames processed."""

    camera_id: str
    status: str
    frames: int = 0
    error: str | None = None


@dataclass
class Step:
    """One step of the loop: at most one frame per camera, with its tracks, plus the per-step facts stages add.

    index: 0-based step number; time_s: the newest frame time of the step on the run's clock (s).
    appearance: Re-ID results applied in this step (`pipeline.reid.AppearanceUpdate`), written by the Re-ID stage.
    links: identity link events made in this step (`pipeline.association.LinkEvent`), written by the association.
    action_events: action episodes that finished in this step (`pipeline.events.ActionEvent`), written by events.
    thumbnails: the best views of tracks handed on in this step (`pipeline.web.thumbnails.Thumbnail`), written by
    the thumbnails stage.
    ground: where each person the ground-plane fusion identified stands at this step
    (`pipeline.fusion.stage.GroundPoint`, metres), written by the fused association.
    """

    index: int
    time_s: float
    frames: list[tuple[Frame, Tracks]] = field(default_factory=list)
    appearance: list[Any] = field(default_factory=list)
    links: list[Any] = field(default_factory=list)
    action_events: list[Any] = field(default_factory=list)
    thumbnails: list[Any] = field(default_factory=list)
    ground: list[Any] = field(default_factory=list)


@dataclass
class RunEnd:
    """The end of a run, passed to every stage's `close` in order; stages add the facts they produce at the end.

    status: completed | interrupted | failed; cameras: the final `CameraEnd` of every camera (frames, status, error);
    camera_extra: {camera_id: more counters for its store row, e.g. `dropped`}; appearance / links / action_events /
    thumbnails: as in `Step`, for what is produced while closing; identities: {mode ('online' | 'offline'): {(camera_id, track_id): global id}} and
    identity_spans {(camera_id, track_id): (first_ts, last_ts)}, written by the association.
    """

    status: str
    cameras: list[CameraEnd] = field(default_factory=list)
    camera_extra: dict[str, dict] = field(default_factory=dict)
    appearance: list[Any] = field(default_factory=list)
    links: list[Any] = field(default_factory=list)
    action_events: list[Any] = field(default_factory=list)
    identities: dict[str, dict[tuple[str, int], int]] = field(default_factory=dict)
    identity_spans: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    thumbnails: list[Any] = field(default_factory=list)

    @property
    def final_identities(self) -> dict[tuple[str, int], int] | None:
        """The run's final global ids: offline-refined when present, else online; None without association."""
        return self.identities.get("offline", self.identities.get("online"))


class Stage:
    """Base class of every stage: each lifecycle call defaults to doing nothing.

    `name` is set by the registry; `writes` names the `Tracks` / `Step` / `RunEnd` fields a stage writes (documented in
    `docs/architecture.md`, checked by the builder so two stages never write the same field).
    """

    name: ClassVar[str] = "stage"
    writes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_config(cls, config, params: dict) -> "Stage | None":
        """Build from the `PipelineConfig` (and this stage's `params` from `sinks:`); None: not enabled."""
        return cls(**params)

    def open(self, run: RunInfo) -> None:
        """The run starts (before any camera)."""

    def open_camera(self, camera: CameraInfo) -> None:
        """A camera starts (before its first frame); also called for a camera that failed to open (`camera.error`)."""

    def on_frame(self, frame: Frame, tracks: Tracks) -> None:
        """One camera's frame of the current step and its tracks (annotated by the stages before this one)."""

    def on_step(self, step: Step) -> None:
        """The step is complete for this stage (all its frames seen)."""

    def on_camera_end(self, end: CameraEnd) -> None:
        """A camera finished or failed: no more frames will come from it."""

    def close(self, end: RunEnd) -> None:
        """Flush and release everything; called once on every exit path."""

    def counters(self) -> dict:
        """Counters for the run's summary table (`{}`: none)."""
        return {}

    def summary_line(self) -> str | None:
        """One line for the summary table (default: the counters as `name: key value, ...`; None: nothing)."""
        c = self.counters()
        return f"{self.name}: " + ", ".join(f"{k} {v}" for k, v in c.items()) if c else None


def open_stages(stages: list[Stage], run: RunInfo, cameras: list[CameraInfo]) -> None:
    """Open the stages for a run, then every camera on every stage, in order."""
    for stage in stages:
        stage.open(run)
    for camera in cameras:
        for stage in stages:
            stage.open_camera(camera)


def drive_step(stages: list[Stage], step: Step) -> None:
    """Hand one step to the stages, stage after stage: each sees every frame of the step, then the step."""
    for stage in stages:
        for frame, tracks in step.frames:
            stage.on_frame(frame, tracks)
        stage.on_step(step)


def register_stage(name: str):
    """`@register_stage("name")` = `@STAGES.register("name")`, also setting the class's `name`."""

    def decorator(cls):
        cls.name = name
        return STAGES.register(name)(cls)

    return decorator


__all__ = ["CameraEnd", "CameraInfo", "RunEnd", "RunInfo", "STAGES", "Stage", "Step", "drive_step", "open_stages", "register_stage"]
