"""`ActionEventSink`: a `TrackSink` that turns every track's action scores into action events.

Scores per frame come from one source, fixed for the run (`events.source`):
  - `model`: `tracks.action_probs` (N, A) attached by the Re-ID stage (a checkpoint with a trained action branch;
    names from the checkpoint; NaN rows = no clip result yet);
  - `motion`: standing / walking / running from the track's speed (`pipeline/events/motion.py`).
One `ActionStateMachine` per (camera, local track) - i.e. per (global identity, camera) at any moment - applies the
hysteresis. With tracklets (`tracker.tracklets`), "local track" is the camera tracker's track (`Tracks.view_ids`),
so an episode goes on across tracklet cuts; the event's `track_id` is then the tracklet current at its end (the one
its global id is looked up for). Finished events go to the store (`action_events`), to `DIR/events.jsonl` (one JSON object per line,
flushed per event) and, when configured, to MQTT (`start` when an episode is confirmed, `end` when it finishes).
The global identity is read, when the run has cross-camera association, through `bind_identity(lookup)` at each
update, so an event carries the id its track had when the event finished (final, offline-refined ids are in the
`identities` table, which the query command joins).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.events.hysteresis import ActionEvent, ActionStateMachine, HysteresisParams
from core.geometry import load_homography
from pipeline.events.motion import MOTION_ACTIONS, MotionParams, MotionSource
from pipeline.sinks import TrackSink
from core.types import Frame, Tracks

log = logging.getLogger("mcsa.events")

IdentityLookup = Callable[[str, int], "int | None"]


def association_lookup(association) -> IdentityLookup:
    """A (camera_id, track_id) -> global id lookup on an `AssociationStage` (None: not linked yet)."""

    def lookup(camera_id: str, track_id: int) -> int | None:
        st = association.associator.tracks.get((camera_id, int(track_id)))
        gid = getattr(st, "global_id", None)
        return None if gid is None else int(gid)

    return lookup


def resolve_source(requested: str, action_names: list[str] | None) -> str:
    """`model` or `motion` for `events.source` given the trained action names (None/empty: no action branch)."""
    if requested == "auto":
        return "model" if action_names else "motion"
    if requested == "model" and not action_names:
        raise ValueError("events.source: model needs a Re-ID-AR checkpoint with a trained action branch "
                         "(reid.enabled: true and reid.checkpoint); use events.source: motion or auto")
    return requested


class ActionEventSink(TrackSink):
    """Per-(identity, camera) action state over a run; writes finished `ActionEvent`s."""

    def __init__(self, cfg, output_dir: str | Path | None = None, writer=None, action_names: list[str] | None = None,
                 homographies: dict[str, str] | None = None, publisher=None, keep_events: bool = False) -> None:
        self.cfg = cfg
        self.source = resolve_source(cfg.source, action_names)
        self.action_names = list(action_names) if self.source == "model" else list(MOTION_ACTIONS)
        self.params = HysteresisParams(cfg.enter, cfg.exit, cfg.min_duration_s, cfg.smoothing_s)
        m = cfg.motion
        self.motion_params = MotionParams(walk_hps=m.walk_hps, run_hps=m.run_hps, walk_mps=m.walk_mps,
                                          run_mps=m.run_mps, ground_units_per_m=m.ground_units_per_m,
                                          window_s=m.window_s)
        self.homographies = {cam: load_homography(p) for cam, p in (homographies or {}).items()}
        self.writer = writer
        self.publisher = publisher
        self.identity_of: IdentityLookup | None = None
        self.machines: dict[tuple[str, int], ActionStateMachine] = {}  # (camera, view track id) -> machine
        self._view_of: dict[tuple[str, int], int] = {}  # (camera, tracklet id) -> view track id, while live
        self.motion: dict[str, MotionSource] = {}
        self.counts: dict[str, int] = {}
        self.events: list[ActionEvent] | None = [] if keep_events else None
        self._jsonl = None
        if cfg.jsonl and output_dir is not None:
            path = Path(output_dir) / "events.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(path, "a", encoding="utf-8")
        self._closed = False
        self._store_failed = False
        log.info("events: %s source, actions %s", self.source, ", ".join(self.action_names))

    def bind_identity(self, lookup: IdentityLookup | None) -> None:
        """Read global ids through `lookup(camera_id, track_id)` from now on."""
        self.identity_of = lookup

    # ---- TrackSink ------------------------------------------------------------------------------------------------
    def open_camera(self, camera_id: str, fps: float | None = None, size: tuple[int, int] | None = None) -> None:
        if camera_id not in self.motion and size:  # else created at the first frame, which knows the size
            self.motion[camera_id] = MotionSource(self.motion_params, self.homographies.get(camera_id),
                                                  size[1] if size else None)

    def _scores(self, frame: Frame, tracks: Tracks, views: np.ndarray) -> np.ndarray:
        n, a = len(tracks), len(self.action_names)
        if self.source == "motion":
            if frame.camera_id not in self.motion:
                self.open_camera(frame.camera_id, None, (frame.width, frame.height))
            return self.motion[frame.camera_id].update(frame.timestamp_s, views, tracks.xyxy)
        probs = tracks.action_probs
        if probs is None or probs.ndim != 2 or probs.shape[1] != a:
            return np.full((n, a), np.nan, np.float32)
        return probs

    def on_tracks(self, frame: Frame, tracks: Tracks) -> None:
        cam, ts = frame.camera_id, frame.timestamp_s
        views = tracks.view_ids if tracks.view_ids is not None else tracks.track_ids
        scores = self._scores(frame, tracks, views)
        for i, (tid, vid) in enumerate(zip(tracks.track_ids.tolist(), np.asarray(views).tolist())):
            key = (cam, vid)
            machine = self.machines.get(key)
            if machine is None:
                machine = self.machines[key] = ActionStateMachine(cam, tid, self.action_names, self.source,
                                                                  self.params)
                if vid != tid:
                    self._view_of[(cam, tid)] = vid
            elif machine.track_id != tid:  # a new tracklet of the same view track
                self._view_of.pop((cam, machine.track_id), None)
                machine.track_id = tid
                self._view_of[(cam, tid)] = vid
            if self.identity_of is not None:
                gid = self.identity_of(cam, tid)
                if gid is not None:
                    machine.global_id = gid
            for event in machine.update(ts, frame.index, scores[i]):
                self._emit(event)
            for action, start in machine.pop_started():
                self._publish("start", dict(camera_id=cam, track_id=tid, global_id=machine.global_id, action=action,
                                            source=self.source, start_ts=round(start, 4)))
        ended = [k for k, m in self.machines.items()
                 if k[0] == cam and m.last_ts is not None and m.last_ts < ts - self.cfg.track_end_s]
        for key in ended:
            self._finish(key)

    def on_camera_end(self, camera_id: str) -> None:
        for key in [k for k in self.machines if k[0] == camera_id]:
            self._finish(key)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for key in list(self.machines):
                self._finish(key)
        finally:
            if self._jsonl is not None:
                self._jsonl.close()
            if self.publisher is not None:
                self.publisher.close()

    # ---- queries --------------------------------------------------------------------------------------------------
    def current_action(self, camera_id: str, track_id: int) -> tuple[str, float] | None:
        """The track's confirmed current action and its smoothed score, or None."""
        view = self._view_of.get((camera_id, int(track_id)), int(track_id))
        machine = self.machines.get((camera_id, view))
        return None if machine is None else machine.current()

    def counters(self) -> dict:
        return dict(source=self.source, events=sum(self.counts.values()), by_action=dict(self.counts))

    # ---- outputs --------------------------------------------------------------------------------------------------
    def _finish(self, key: tuple[str, int]) -> None:
        machine = self.machines.pop(key)
        self._view_of.pop((key[0], machine.track_id), None)
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
        if self.writer is not None:
            record = {"run_id": self.writer.run_id, **record}
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        self._publish("end", record)
        if self.writer is not None and not self._store_failed:
            from pipeline.store import StoreError

            try:
                self.writer.add_action_event(event)
            except StoreError as err:  # the writer reports its error and fails the run; jsonl / MQTT go on
                self._store_failed = True
                log.error("action events no longer stored: %s", err)

    def _publish(self, kind: str, record: dict) -> None:
        if self.publisher is None:
            return
        try:
            self.publisher.publish(record["camera_id"], {"type": kind, **record})
        except Exception as err:  # noqa: BLE001 - MQTT is best effort
            log.warning("MQTT publish failed: %s", err)


def build_event_sink(config, output_dir: Path, writer=None, action_names: list[str] | None = None,
                     ) -> ActionEventSink | None:
    """The events sink a `PipelineConfig` asks for (None when `events.enabled` is false)."""
    ev = config.events
    if not ev.enabled:
        return None
    homographies = dict(ev.motion.homographies)  # not association's: their ground units need a scale to m/s
    publisher = None
    if ev.mqtt_url:
        from pipeline.events.mqtt import MqttPublisher

        publisher = MqttPublisher(ev.mqtt_url, ev.mqtt_topic)
    return ActionEventSink(ev, output_dir, writer, action_names, homographies, publisher)


__all__ = ["ActionEventSink", "association_lookup", "build_event_sink", "resolve_source"]
