"""`ActionEventStage`: the `events` stage, turning every track's action scores into action events.

Scores per frame come from one source, fixed for the run (`events.source`):
  - `model`: `tracks.action_probs` (N, A) attached by the Re-ID stage (a checkpoint with a trained action branch;
    names from the checkpoint; NaN rows = no clip result yet);
  - `motion`: standing / walking / running from the track's speed (`pipeline/events/motion.py`).
One `ActionStateMachine` per (camera, local track) - i.e. per (global identity, camera) at any moment - applies the
hysteresis. With tracklets (`tracker.tracklets`), "local track" is the camera tracker's track (`Tracks.view_ids`),
so an episode goes on across tracklet cuts, but is reported per tracklet: at a cut, the part so far becomes an event
of the old tracklet and the episode goes on (already confirmed) for the new one, so every event's frames lie within
the frames of the track it names, with that track's global id. Finished events go to `DIR/events.jsonl` (one JSON object per line, flushed per event),
to MQTT when configured (`start` when an episode is confirmed, `end` when it finishes), and on to the store stage as
`step.action_events` / `end.action_events`. The global identity is read from `tracks.global_ids` (written by the
association stage), so an event carries the id its track had when the event finished (final, offline-refined ids
are in the `identities` table, which the query command joins). Writes `tracks.current_actions` /
`tracks.current_action_scores` (the confirmed current action of each track, for the annotated video and later sinks).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pipeline.events.hysteresis import ActionEvent, ActionStateMachine, HysteresisParams
from core.geometry import load_homography
from pipeline.events.motion import MOTION_ACTIONS, MotionParams, MotionSource
from core.types import Frame, Tracks
from pipeline.stages.base import CameraEnd, CameraInfo, RunEnd, RunInfo, Stage, Step, register_stage

log = logging.getLogger("mcsa.events")

def resolve_source(requested: str, action_names: list[str] | None) -> str:
    """`model` or `motion` for `events.source` given the trained action names (None/empty: no action branch)."""
    if requested == "auto":
        return "model" if action_names else "motion"
    if requested == "model" and not action_names:
        raise ValueError("events.source: model needs a Re-ID-AR checkpoint with a trained action branch "
                         "(reid.enabled: true and reid.checkpoint); use events.source: motion or auto")
    return requested


@register_stage("events")
class ActionEventStage(Stage):
    """Per-(identity, camera) action state over a run; emits finished `ActionEvent`s.

    cfg: `EventsConfig`; homographies: {camera_id: path} for ground-plane speed (`events.motion.homographies`);
    publisher: an `MqttPublisher` or None; keep_events: also keep every event in `self.events` (tests, benches).
    The action names and the output folder come with `open(RunInfo)`.
    """

    writes = ("tracks.current_actions", "tracks.current_action_scores", "step.action_events", "end.action_events")

    def __init__(self, cfg, homographies: dict[str, str] | None = None, publisher=None,
                 keep_events: bool = False) -> None:
        self.cfg = cfg
        self.source = "motion"
        self.action_names: list[str] = list(MOTION_ACTIONS)
        self.run_id: int | None = None
        self.params = HysteresisParams(cfg.enter, cfg.exit, cfg.min_duration_s, cfg.smoothing_s)
        m = cfg.motion
        self.motion_params = MotionParams(walk_hps=m.walk_hps, run_hps=m.run_hps, walk_mps=m.walk_mps,
                                          run_mps=m.run_mps, ground_units_per_m=m.ground_units_per_m,
                                          window_s=m.window_s)
        self.homographies = {cam: load_homography(p) for cam, p in (homographies or {}).items()}
        self.publisher = publisher
        self.machines: dict[tuple[str, int], ActionStateMachine] = {}  # (camera, view track id) -> machine
        self.motion: dict[str, MotionSource] = {}
        self.counts: dict[str, int] = {}
        self.events: list[ActionEvent] | None = [] if keep_events else None
        self._outbox: list[ActionEvent] = []  # finished events not yet handed on (next step or the end)
        self._jsonl = None
        self._closed = False

    @classmethod
    def from_config(cls, config, params: dict) -> "ActionEventStage | None":
        ev = config.events
        if not ev.enabled:
            return None
        publisher = None
        if ev.mqtt_url:
            from pipeline.events.mqtt import MqttPublisher

            publisher = MqttPublisher(ev.mqtt_url, ev.mqtt_topic)
        # events.motion.homographies, not association's: their ground units need a scale to m/s
        return cls(ev, dict(ev.motion.homographies), publisher)

    # ---- Stage ----------------------------------------------------------------------------------------------------
    def open(self, run: RunInfo) -> None:
        trained = list(run.action_names) or None
        self.source = resolve_source(self.cfg.source, trained)
        self.action_names = list(trained) if self.source == "model" else list(MOTION_ACTIONS)
        self.run_id = run.run_id
        if self.cfg.jsonl and run.output_dir is not None:
            path = Path(run.output_dir) / "events.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(path, "a", encoding="utf-8")
        log.info("events: %s source, actions %s", self.source, ", ".join(self.action_names))

    def open_camera(self, camera: CameraInfo) -> None:
        self._motion_source(camera.camera_id, camera.size)

    def _motion_source(self, camera_id: str, size: tuple[int, int] | None) -> None:
        if camera_id not in self.motion and size:  # else created at the first frame, which knows the size
            self.motion[camera_id] = MotionSource(self.motion_params, self.homographies.get(camera_id), size[1])

    def _scores(self, frame: Frame, tracks: Tracks, views: np.ndarray) -> np.ndarray:
        n, a = len(tracks), len(self.action_names)
        if self.source == "motion":
            if frame.camera_id not in self.motion:
                self._motion_source(frame.camera_id, (frame.width, frame.height))
            return self.motion[frame.camera_id].update(frame.timestamp_s, views, tracks.xyxy)
        probs = tracks.action_probs
        if probs is None or probs.ndim != 2 or probs.shape[1] != a:
            return np.full((n, a), np.nan, np.float32)
        return probs

    def on_frame(self, frame: Frame, tracks: Tracks) -> None:
        cam, ts = frame.camera_id, frame.timestamp_s
        views = tracks.view_ids if tracks.view_ids is not None else tracks.track_ids
        scores = self._scores(frame, tracks, views)
        gids = tracks.global_ids.tolist() if tracks.global_ids is not None else [-1] * len(tracks)
        current: list[str | None] = []
        current_scores = np.full(len(tracks), np.nan, np.float32)
        for i, (tid, vid) in enumerate(zip(tracks.track_ids.tolist(), np.asarray(views).tolist())):
            key = (cam, vid)
            machine = self.machines.get(key)
            if machine is None:
                machine = self.machines[key] = ActionStateMachine(cam, tid, self.action_names, self.source,
                                                                  self.params)
            elif machine.track_id != tid:  # a new tracklet of the same view track: events name their tracklet
                for event in machine.cut(tid):
                    self._emit(event)
            if gids[i] >= 0:
                machine.global_id = int(gids[i])
            for event in machine.update(ts, frame.index, scores[i]):
                self._emit(event)
            for action, start in machine.pop_started():
                self._publish("start", dict(camera_id=cam, track_id=tid, global_id=machine.global_id, action=action,
                                            source=self.source, start_ts=round(start, 4)))
            now = machine.current()
            current.append(None if now is None else now[0])
            if now is not None:
                current_scores[i] = now[1]
        tracks.current_actions, tracks.current_action_scores = current, current_scores
        ended = [k for k, m in self.machines.items()
                 if k[0] == cam and m.last_ts is not None and m.last_ts < ts - self.cfg.track_end_s]
        for key in ended:
            self._finish(key)

    def on_step(self, step: Step) -> None:
        step.action_events.extend(self._outbox)
        self._outbox = []

    def on_camera_end(self, end: CameraEnd) -> None:
        for key in [k for k in self.machines if k[0] == end.camera_id]:
            self._finish(key)

    def close(self, end: RunEnd) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for key in list(self.machines):
                self._finish(key)
            end.action_events.extend(self._outbox)
            self._outbox = []
        finally:
            if self._jsonl is not None:
                self._jsonl.close()
            if self.publisher is not None:
                self.publisher.close()

    def counters(self) -> dict:
        return dict(source=self.source, events=sum(self.counts.values()), by_action=dict(self.counts))

    def summary_line(self) -> str:
        by = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items())) or "none"
        return f"Action events ({self.source} source): {sum(self.counts.values())} ({by})"

    # ---- outputs --------------------------------------------------------------------------------------------------
    def _finish(self, key: tuple[str, int]) -> None:
        machine = self.machines.pop(key)
        for event in machine.finish():
            self._emit(event)
        motion = self.motion.get(key[0])
        if motion is not None:
            motion.forget(key[1])

    def _emit(self, event: ActionEvent) -> None:
        self.counts[event.action] = self.counts.get(event.action, 0) + 1
        if self.events is not None:
            self.events.append(event)
        record = event.to_dict()
        if self.run_id is not None:
            record = {"run_id": self.run_id, **record}
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        self._publish("end", record)
        self._outbox.append(event)

    def _publish(self, kind: str, record: dict) -> None:
        if self.publisher is None:
            return
        try:
            self.publisher.publish(record["camera_id"], {"type": kind, **record})
        except Exception as err:  # noqa: BLE001 - MQTT is best effort
            log.warning("MQTT publish failed: %s", err)


__all__ = ["ActionEventStage", "resolve_source"]
