"""The stages after Re-ID in one named Ray actor (`run.ray_stages: actor`).

    driver: ordering (steps / watermark) -> Re-ID stage -> StagesProxy.on_step ──Step──> StagesActor (named
    `mcsa-stages-<token>`): association -> events -> mot -> video -> thumbnails -> sinks -> store

The actor builds those stages from the config itself (models, files and the database are opened inside it, on its
node), so the store writer and the event sinks live in one process. The driver hands it every ordered `Step` and
`CameraEnd` with pipelined calls (at most `MAX_IN_FLIGHT` unanswered); Ray runs one caller's calls to an actor in
the order they were sent, so the actor sees exactly the driver's order. `close(RunEnd)` closes the stages and
returns their counters and summary lines. If the actor dies, the next call raises `StagesActorDied` (one line) and
the run stops; what the store committed stays committed.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from collections import deque

import numpy as np

from pipeline.stages.base import CameraEnd, CameraInfo, RunEnd, RunInfo, Stage, Step, drive_step

MAX_IN_FLIGHT = 8  # unanswered calls to the stages actor before the driver waits


class StagesActorDied(RuntimeError):
    """The stages actor died (or could not be reached): the run stops with this one line."""


class _DriverReID(Stage):
    """The Re-ID stage as seen from the actor: it runs in the driver; this carries its facts (action names,
    embedding D) into the actor's build so `RunInfo` and `events.source: auto` resolve as in the driver. Never
    called: it is dropped from the actor's stages after the build."""

    name = "reid"

    def __init__(self, action_names: tuple[str, ...], embedding_dim: int | None) -> None:
        self.action_names = list(action_names)
        self.embedding_dim = embedding_dim


class StagesActor:
    """Runs the stages after Re-ID for one run. config: `PipelineConfig`; output_dir: the run's folder (must be
    reachable on the actor's node); reid_facts: (action names, D) of the driver's Re-ID, or None without Re-ID."""

    def __init__(self, config, output_dir, all_files: bool, redacted_config: dict,
                 reid_facts: tuple | None) -> None:
        from pipeline.stages.builder import build_stages

        holder = _DriverReID(*reid_facts) if reid_facts is not None else None
        built = build_stages(config, output_dir, all_files, redacted_config, {"reid": lambda _c, _p: holder})
        self.stages = [s for s in built.stages if s is not holder]
        self.run = built.run

    def run_info(self) -> RunInfo:
        return self.run

    def where(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "stages": [s.name for s in self.stages]}

    def open(self) -> None:
        for stage in self.stages:
            stage.open(self.run)

    def open_camera(self, camera: CameraInfo) -> None:
        for stage in self.stages:
            stage.open_camera(camera)

    def on_step(self, wire: tuple[Step, list]) -> None:
        drive_step(self.stages, _from_wire(wire))

    def on_camera_end(self, end: CameraEnd) -> None:
        for stage in self.stages:
            stage.on_camera_end(end)

    def close(self, end: RunEnd) -> dict:
        """Close every stage in order (as `runner.close_stages`); {"error": first store/OS error line or None,
        "end": the RunEnd, "counters": {stage: counters}, "lines": summary lines}."""
        import logging

        from pipeline.runner import _one_line
        from pipeline.store import StoreError

        error = None
        for stage in self.stages:
            try:
                stage.close(end)
            except (StoreError, OSError) as err:
                error = error or _one_line(err, stage.name)
            except Exception as err:  # noqa: BLE001 - a bug: one line, as the local engine
                logging.getLogger("mcsa.engine.ray").error("closing stage %s failed: %s", stage.name, err)
        return {"error": error, "counters": {s.name: s.counters() for s in self.stages},
                "lines": [line for s in self.stages if (line := s.summary_line())]}


class StagesProxy(Stage):
    """The driver's stand-in for the stages actor, last in the driver's stages: forwards each step (after Re-ID),
    camera end and the run's end to the actor. After `close`: `counters_by_stage`, `lines`, `error`."""

    name = "stages_actor"

    def __init__(self, ray, handle, actor_name: str, stage_names: list[str]) -> None:
        self.ray = ray
        self.handle = handle
        self.created = handle  # the creator's handle: Ray ends the actor once it is dropped
        self.actor_name = actor_name
        self.stage_names = stage_names
        self.pending: deque = deque()
        self.dead: str | None = None
        self.counters_by_stage: dict = {}
        self.lines: list[str] = []
        self.error: str | None = None

    def _died(self, err) -> StagesActorDied:
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        self.dead = (f"the stages actor {self.actor_name} ({', '.join(self.stage_names)}) died ({reason}); the run "
                     "stops, what the store committed stays committed")
        return StagesActorDied(self.dead)

    def _get(self, ref, timeout: float | None = None):
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        try:
            return self.ray.get(ref, timeout=timeout)
        except RayActorError as err:
            raise self._died(err) from None
        except RayTaskError as err:  # a stage raised inside the actor: raise the original (store/OS errors)
            cause = getattr(err, "cause", None)
            raise (cause if isinstance(cause, Exception) else RuntimeError(str(err).splitlines()[0])) from None
        except GetTimeoutError as err:
            raise self._died(err) from None

    def _send(self, ref) -> None:
        if self.dead:
            raise StagesActorDied(self.dead)
        self.pending.append(ref)
        while len(self.pending) > MAX_IN_FLIGHT:
            self._get(self.pending.popleft())

    def open(self, run: RunInfo) -> None:
        self._send(self.handle.open.remote())

    def open_camera(self, camera: CameraInfo) -> None:
        self._send(self.handle.open_camera.remote(camera))

    def on_step(self, step: Step) -> None:
        self._send(self.handle.on_step.remote(_to_wire(step)))

    def on_camera_end(self, end: CameraEnd) -> None:
        self._send(self.handle.on_camera_end.remote(end))

    def close(self, end: RunEnd) -> None:
        if self.dead:
            return
        try:
            while self.pending:
                self._get(self.pending.popleft())
            out = self._get(self.handle.close.remote(end), timeout=600)
        except StagesActorDied as err:
            self.error = str(err)
            return
        except Exception as err:  # noqa: BLE001 - a store/OS error of a step still in flight
            from pipeline.runner import _one_line

            self.error = _one_line(err)
            return
        self.counters_by_stage, self.lines, self.error = out["counters"], out["lines"], out["error"]


def start_stages_actor(ray, config, output_dir, all_files: bool, redacted_config: dict, reid_stage):
    """Create the named stages actor, find it with `ray.get_actor`, wait for its build; (proxy, RunInfo)."""
    name = f"mcsa-stages-{uuid.uuid4().hex[:12]}"
    facts = (tuple(reid_stage.action_names), reid_stage.embedding_dim) if reid_stage is not None else None
    created = ray.remote(StagesActor).options(name=name, num_cpus=0, max_restarts=0, max_concurrency=1).remote(
        config, output_dir, all_files, redacted_config, facts)
    proxy = StagesProxy(ray, created, name, [])
    try:
        run = proxy._get(created.run_info.remote())  # the build's errors (bad weights, store URL) come back here
    except StagesActorDied:
        from pipeline.engines.ray_engine import _root_error
        from pipeline.runner import RunSetupError

        try:
            ray.get(created.run_info.remote(), timeout=10)
        except Exception as err:  # noqa: BLE001 - its creation error, as one line
            raise RunSetupError(f"the stages actor {name} could not build the stages: {_root_error(err)}") from None
        raise
    proxy.created = created  # Ray ends an actor once its creator's handle is dropped: keep it for the run
    proxy.handle = ray.get_actor(name)  # registered once its first call returned
    proxy.stage_names = proxy._get(proxy.handle.where.remote())["stages"]
    return proxy, run


def _to_wire(step: Step) -> tuple[Step, list]:
    """The step to send: frames whose pixels stayed on the camera actor (a broadcast placeholder) travel as one
    pixel and their (width, height), not as a full black image."""
    frames, sizes = [], []
    for frame, tracks in step.frames:
        image = frame.image
        if image.ndim == 3 and image.strides[:2] == (0, 0):
            sizes.append((image.shape[1], image.shape[0]))
            frame = dataclasses.replace(frame, image=np.zeros((1, 1, 3), np.uint8))
        else:
            sizes.append(None)
        frames.append((frame, tracks))
    return dataclasses.replace(step, frames=frames), sizes


def _from_wire(wire: tuple[Step, list]) -> Step:
    step, sizes = wire
    for i, size in enumerate(sizes):
        if size is not None:
            frame, tracks = step.frames[i]
            w, h = size
            step.frames[i] = (dataclasses.replace(frame, image=np.broadcast_to(frame.image, (h, w, 3))), tracks)
    return step


__all__ = ["MAX_IN_FLIGHT", "StagesActor", "StagesActorDied", "StagesProxy", "start_stages_actor"]
