"""`json_tracks`: one JSON line per track per `every_s` seconds of the camera's clock (an example sink).

Each line: `{"camera_id", "frame", "t", "track_id", "global_id", "box": [x1, y1, x2, y2], "action"}`, written to
`DIR/<filename>` (default `tracks.jsonl`), or to standard output with `filename: "-"`. With `association.mode:
fused` a line whose identity the ground-plane fusion placed at that step also has `"ground": {"x_m", "y_m",
"group", "sigma_m"}` (where the person stands and how surely, metres; `Step.ground`). Lines are written once the step
is complete, in the order of the step's frames.

    sinks:
      - name: json_tracks
        params: {every_s: 1.0}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from core.types import Frame, Tracks
from pipeline.stages.base import RunEnd, RunInfo, Stage, Step, register_stage


@register_stage("json_tracks")
class JsonTracksSink(Stage):
    """Samples every track at most once per `every_s` seconds (s) and writes it as a JSON line."""

    def __init__(self, every_s: float = 1.0, filename: str = "tracks.jsonl") -> None:
        if every_s < 0:
            raise ValueError(f"json_tracks.every_s must be >= 0 seconds, got {every_s}")
        if filename != "-" and Path(filename).name != filename:
            raise ValueError(f"json_tracks.filename must be a plain file name inside the output folder, got {filename!r}")
        self.every_s, self.filename = float(every_s), filename
        self._out = None
        self._last: dict[tuple[str, int], float] = {}  # (camera, track) -> time of its last line
        self._pending: list[dict] = []  # this step's lines, written in on_step (with the step's ground positions)
        self.lines = 0

    def open(self, run: RunInfo) -> None:
        self._out = sys.stdout if self.filename == "-" else open(Path(run.output_dir) / self.filename, "a",
                                                                   encoding="utf-8")

    def on_frame(self, frame: Frame, tracks: Tracks) -> None:
        for i, tid in enumerate(tracks.track_ids.tolist()):
            key = (frame.camera_id, tid)
            last = self._last.get(key)
            if last is not None and frame.timestamp_s - last < self.every_s:
                continue
            self._last[key] = frame.timestamp_s
            gid = int(tracks.global_ids[i]) if tracks.global_ids is not None and tracks.global_ids[i] >= 0 else None
            action = tracks.current_actions[i] if tracks.current_actions is not None else None
            self._pending.append(dict(
                camera_id=frame.camera_id, frame=frame.index, t=round(frame.timestamp_s, 3), track_id=tid,
                global_id=gid, box=[round(v, 1) for v in tracks.xyxy[i].tolist()], action=action))

    def on_step(self, step: Step) -> None:
        ground = {g.global_id: g for g in step.ground}
        for line in self._pending:
            g = ground.get(line["global_id"]) if line["global_id"] is not None else None
            if g is not None:
                line["ground"] = {"x_m": round(g.x_m, 3), "y_m": round(g.y_m, 3), "group": g.group,
                                  "sigma_m": None if g.sigma_m is None else round(g.sigma_m, 3)}
        self._write()

    def _write(self) -> None:
        for line in self._pending:
            self._out.write(json.dumps(line) + "\n")
        self.lines += len(self._pending)
        self._pending = []

    def close(self, end: RunEnd) -> None:
        if self._out is not None:
            self._write()  # a step cut short (never in the loop's normal order) still gets its lines
            if self._out is not sys.stdout:
                self._out.close()
        self._out = None

    def counters(self) -> dict:
        return {"lines": self.lines}
