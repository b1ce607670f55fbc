"""Per-(identity, camera) action state with hysteresis: scores over time -> `ActionEvent`s.

One `ActionStateMachine` follows one local track in one camera (so one global identity in one view at a time; at a
tracklet cut, `cut` ends its confirmed episodes as events of the old tracklet and goes on with the new one). Each
action is followed on its own (the Re-ID-AR action branch is multi-label: one sigmoid per action):
  - the score is smoothed with an exponential moving average of time constant `smoothing_s` (seconds);
  - an action *enters* when its smoothed score reaches `enter`, and *exits* when it falls below `exit` (< enter), so
    a score wobbling around one threshold does not flicker;
  - an episode shorter than `min_duration_s` (start to last frame above `exit`) is dropped, never reported.
NaN scores mean "no observation yet" (e.g. no Re-ID clip finished): the state is left as it is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class HysteresisParams:
    """Thresholds on the smoothed score (0..1) and durations in seconds."""

    enter: float = 0.6
    exit: float = 0.4
    min_duration_s: float = 1.0
    smoothing_s: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.exit <= self.enter <= 1.0:
            raise ValueError(f"need 0 <= exit ({self.exit}) <= enter ({self.enter}) <= 1")
        if self.min_duration_s < 0 or self.smoothing_s < 0:
            raise ValueError("min_duration_s and smoothing_s must be >= 0")


@dataclass
class ActionEvent:
    """One finished action episode of one track in one camera.

    global_id: cross-camera identity (None without association or before the track was linked); track_id: the local
    track; start_ts / end_ts: seconds on the run clock (first and last frame of the episode); peak_conf / mean_conf:
    max and mean of the smoothed score over the episode's frames; clips: distinct score updates that fed it (model
    source: Re-ID-AR clip results; motion source: frames with a speed estimate); frames: frames in the episode;
    source: `model` (Re-ID-AR action branch) or `motion` (box / ground-plane speed).
    """

    camera_id: str
    track_id: int
    global_id: int | None
    action: str
    source: str
    start_ts: float
    end_ts: float
    start_frame: int
    end_frame: int
    peak_conf: float
    mean_conf: float
    clips: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.end_ts - self.start_ts

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("start_ts", "end_ts", "peak_conf", "mean_conf"):
            d[k] = round(float(d[k]), 4)
        return d


@dataclass
class _Episode:
    start_ts: float
    start_frame: int
    last_ts: float
    last_frame: int
    peak: float
    total: float
    frames: int
    clips: int
    announced: bool = False  # reported as started (lasted min_duration_s)


class ActionStateMachine:
    """Hysteresis over the scores (A,) of one track; `update` returns the episodes that just finished."""

    def __init__(self, camera_id: str, track_id: int, action_names: list[str], source: str,
                 params: HysteresisParams) -> None:
        self.camera_id = camera_id
        self.track_id = int(track_id)
        self.names = list(action_names)
        self.source = source
        self.params = params
        self.global_id: int | None = None
        self.smoothed = np.full(len(self.names), np.nan, np.float64)
        self.open: dict[int, _Episode] = {}
        self.last_ts: float | None = None
        self.last_frame: int = -1
        self._last_raw: np.ndarray | None = None
        self.started: list[tuple[str, float]] = []  # (action, start_ts) confirmed since the last `pop_started`
        self._resume: dict[int, bool] = {}  # action -> announced: episodes cut at a tracklet change, to go on

    def update(self, ts: float, frame: int, scores: np.ndarray) -> list[ActionEvent]:
        """Feed one frame's raw scores (A,) in [0, 1] (NaN = no observation); returns finished events."""
        scores = np.asarray(scores, np.float64).reshape(len(self.names))
        if np.all(np.isnan(scores)):
            self.last_ts, self.last_frame = ts, frame
            return []
        new_clip = self._last_raw is None or not np.array_equal(scores, self._last_raw, equal_nan=True)
        self._last_raw = scores.copy()
        p = self.params
        dt = 0.0 if self.last_ts is None else max(0.0, ts - self.last_ts)
        alpha = 1.0 if p.smoothing_s <= 0 else 1.0 - math.exp(-dt / p.smoothing_s)
        seen = ~np.isnan(scores)
        fresh = seen & np.isnan(self.smoothed)
        moved = seen & ~fresh
        self.smoothed[fresh] = scores[fresh]
        self.smoothed[moved] += alpha * (scores[moved] - self.smoothed[moved])
        finished: list[ActionEvent] = []
        for a, s in enumerate(self.smoothed):
            if np.isnan(s):
                continue
            ep = self.open.get(a)
            resumed = self._resume.pop(a, None)
            if ep is None:
                if s >= p.enter or (resumed is not None and s >= p.exit):
                    self.open[a] = _Episode(ts, frame, ts, frame, s, s, 1, int(new_clip), bool(resumed))
                    if resumed:
                        self.started.append((self.names[a], ts))
            elif s < p.exit:
                event = self._close(a)
                if event is not None:
                    finished.append(event)
            else:
                ep.last_ts, ep.last_frame = ts, frame
                ep.peak, ep.total, ep.frames = max(ep.peak, s), ep.total + s, ep.frames + 1
                ep.clips += int(new_clip)
            ep = self.open.get(a)
            if ep is not None and not ep.announced and ep.last_ts - ep.start_ts >= p.min_duration_s:
                ep.announced = True
                self.started.append((self.names[a], ep.start_ts))
        self.last_ts, self.last_frame = ts, frame
        return finished

    def _close(self, a: int) -> ActionEvent | None:
        ep = self.open.pop(a)
        if ep.last_ts - ep.start_ts < self.params.min_duration_s:
            return None
        return ActionEvent(
            self.camera_id, self.track_id, self.global_id, self.names[a], self.source, ep.start_ts, ep.last_ts,
            ep.start_frame, ep.last_frame, float(ep.peak), float(ep.total / ep.frames), ep.clips, ep.frames,
        )

    def cut(self, track_id: int) -> list[ActionEvent]:
        """The view's track goes on under a new track id (a tracklet cut): episodes confirmed so far end here as
        events of the old track (so every event lies within its track's frames) and go on, already confirmed, for
        `track_id` from its first frame; unconfirmed ones start again there. The global id is unknown until the new
        track is linked."""
        events = []
        for a in list(self.open):
            announced = self.open[a].announced
            event = self._close(a) if announced else None
            self.open.pop(a, None)
            if event is not None:
                events.append(event)
            self._resume[a] = announced
        self.track_id, self.global_id = int(track_id), None
        return events

    def finish(self) -> list[ActionEvent]:
        """The track ended (or the run): close every open episode at its last frame."""
        events = [self._close(a) for a in list(self.open)]
        return [e for e in events if e is not None]

    def current(self) -> tuple[str, float] | None:
        """The confirmed (>= min_duration_s) open action with the highest smoothed score, with that score."""
        best = None
        for a, ep in self.open.items():
            if ep.announced and (best is None or self.smoothed[a] > best[1]):
                best = (self.names[a], float(self.smoothed[a]))
        return best

    def pop_started(self) -> list[tuple[str, float]]:
        out, self.started = self.started, []
        return out


__all__ = ["ActionEvent", "ActionStateMachine", "HysteresisParams"]
