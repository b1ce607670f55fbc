"""Re-run association on a recorded run (its store): tracks' boxes and Re-ID clips replayed in time order.

Used by `bench/association.py` and the tests to compare association settings without re-running detection and Re-ID.
Clip results are delivered at their `t_end` (the pipeline sees them slightly later, once the batch is done), folded
into a running quality-weighted mean like `pipeline.reid.TrackAppearance`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine

from pipeline.association.offline import refine
from pipeline.association.online import OnlineAssociator
from pipeline.association.topology import CameraTopology, build_topology


@dataclass
class RecordedRun:
    """Per camera: boxes (frame 0-based, ts s, track id, x1, y1, x2, y2) sorted by time; clips (ts, camera, track id,
    quality, embedding (D,)) sorted by t_end."""

    cameras: list[str]
    boxes: dict[str, np.ndarray] = field(default_factory=dict)  # (N, 7) float64
    clips: list[tuple[float, str, int, float, np.ndarray]] = field(default_factory=list)


def load_run(db_path: str | Path, run_id: int | None = None) -> RecordedRun:
    """Read a run (default: the latest) from an events.db, through `pipeline.store.reader`."""
    from pipeline.store import reader

    engine = create_engine(f"sqlite:///{Path(db_path).resolve()}")
    try:
        if run_id is None:
            run_id = reader.latest_run_id(engine)
        run = RecordedRun(reader.run_cameras(engine, run_id))
        for cam in run.cameras:
            run.boxes[cam] = reader.track_boxes(engine, run_id, cam)
        run.clips = reader.clip_results(engine, run_id)
    finally:
        engine.dispose()
    return run


def replay(run: RecordedRun, cfg, topology: CameraTopology | None = None, offline: bool = False
           ) -> tuple[dict, OnlineAssociator]:
    """Online association over the recorded run (then offline refinement when `offline`); returns ({(camera, track):
    global id}, the associator)."""
    topology = topology if topology is not None else build_topology(cfg)
    assoc = OnlineAssociator(cfg, topology)
    events = []  # (ts, camera, rows)
    for cam, b in run.boxes.items():
        if len(b) == 0:
            continue
        starts = np.flatnonzero(np.r_[True, b[1:, 0] != b[:-1, 0]])
        ends = np.r_[starts[1:], len(b)]
        events += [(float(b[s, 1]), cam, b[s:e]) for s, e in zip(starts, ends)]
    events.sort(key=lambda e: (e[0], e[1]))
    sums: dict[tuple[str, int], list] = {}
    ci = 0
    i = 0
    while i < len(events):
        ts = events[i][0]
        while i < len(events) and events[i][0] == ts:
            _, cam, rows = events[i]
            assoc.on_tracks(cam, ts, rows[:, 2].astype(np.int64), rows[:, 3:7])
            i += 1
        while ci < len(run.clips) and run.clips[ci][0] <= ts:
            _, cam, tid, q, emb = run.clips[ci]
            e = emb / max(float(np.linalg.norm(emb)), 1e-12)
            w = max(q, 1e-3)
            acc = sums.setdefault((cam, tid), [np.zeros_like(e), 0])
            acc[0] = acc[0] + e * w
            acc[1] += 1
            assoc.on_appearance(cam, tid, acc[0] / max(float(np.linalg.norm(acc[0])), 1e-12), acc[1])
            ci += 1
        assoc.step(ts)
    for _, cam, tid, q, emb in run.clips[ci:]:
        e = emb / max(float(np.linalg.norm(emb)), 1e-12)
        acc = sums.setdefault((cam, tid), [np.zeros_like(e), 0])
        acc[0] = acc[0] + e * max(q, 1e-3)
        acc[1] += 1
        assoc.on_appearance(cam, tid, acc[0] / max(float(np.linalg.norm(acc[0])), 1e-12), acc[1])
    assoc.finish()
    ids = assoc.assignments()
    if offline:
        ids = refine(assoc.all_tracks(), topology, cfg, ids)
    return ids, assoc


def write_mot(run: RecordedRun, ids: dict, directory: str | Path) -> dict[str, Path]:
    """MOT files (`frame,id,x,y,w,h,1,-1,-1,-1`, frames 1-based) of the run with `ids[(camera, track)]` as ids; tracks
    missing from `ids` keep a per-camera unique id (camera index * 100000 + local id)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for ci, cam in enumerate(run.cameras):
        path = out[cam] = directory / f"{cam}.txt"
        with open(path, "w") as f:
            for fr, _ts, tid, x1, y1, x2, y2 in run.boxes[cam].tolist():
                gid = ids.get((cam, int(tid)), (ci + 1) * 100000 + int(tid))
                f.write(f"{int(fr) + 1},{gid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,-1,-1,-1\n")
    return out
