"""Reading a recorded run back from the store (SQLAlchemy Core on the schema's tables, any backend)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from pipeline.store import schema


def latest_run_id(engine: Engine) -> int | None:
    """The newest run's id (None: the store has no run)."""
    with engine.connect() as conn:
        return conn.execute(select(func.max(schema.runs.c.id))).scalar()


def run_cameras(engine: Engine, run_id: int) -> list[str]:
    """The run's camera ids, sorted."""
    c = schema.cameras.c
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(select(c.camera_id).where(c.run_id == run_id).order_by(c.camera_id))]


def track_boxes(engine: Engine, run_id: int, camera_id: str) -> np.ndarray:
    """(N, 7) float64 rows of frame (0-based), ts (s), track id, x1, y1, x2, y2 (px), sorted by frame and track."""
    b = schema.track_boxes.c
    with engine.connect() as conn:
        rows = conn.execute(select(b.frame, b.ts, b.track_id, b.x1, b.y1, b.x2, b.y2)
                            .where(b.run_id == run_id, b.camera_id == camera_id)
                            .order_by(b.frame, b.track_id)).fetchall()
    return np.array(rows, np.float64).reshape(-1, 7)


def ground_identity_map(engine: Engine, run_id: int) -> dict[int, int]:
    """Online ground id (the id `ground_positions` rows carry) -> the final identity of the tracks that showed it:
    the offline-refined id where the run has one, else the online id; the id most of its tracks were given."""
    s = schema.identities.c
    by_mode: dict[str, dict[tuple[str, int], int]] = {"online": {}, "offline": {}}
    with engine.connect() as conn:
        for mode, cam, tid, gid in conn.execute(select(s.mode, s.camera_id, s.track_id, s.global_id)
                                                .where(s.run_id == run_id)):
            by_mode.setdefault(mode, {})[(cam, int(tid))] = int(gid)
    votes: dict[int, dict[int, int]] = {}
    for key, online in by_mode["online"].items():
        final = by_mode["offline"].get(key, online)
        votes.setdefault(online, {}).setdefault(final, 0)
        votes[online][final] += 1
    return {online: max(v, key=lambda f: (v[f], -f)) for online, v in votes.items()}


def ground_path(engine: Engine, run_id: int, identity: int, id_map: dict[int, int] | None = None
                ) -> list[tuple[float, float, float]]:
    """Where one final identity stood: (t s, x m, y m) of its stored ground positions, by time (fused runs)."""
    id_map = ground_identity_map(engine, run_id) if id_map is None else id_map
    online = {o for o, f in id_map.items() if f == identity}
    if identity not in id_map:  # no track row maps it elsewhere (e.g. a running run's identities are not in yet)
        online.add(identity)
    g = schema.ground_positions.c
    with engine.connect() as conn:
        rows = conn.execute(select(g.ts, g.x_m, g.y_m).where(g.run_id == run_id, g.global_id.in_(sorted(online)))
                            .order_by(g.ts)).fetchall()
    return [(float(t), float(x), float(y)) for t, x, y in rows]


def clip_results(engine: Engine, run_id: int) -> list[tuple[float, str, int, float, np.ndarray]]:
    """The run's Re-ID clips as (t_end s, camera, track id, quality, embedding float32 (D,)), sorted by t_end."""
    k = schema.track_clips.c
    with engine.connect() as conn:
        rows = conn.execute(select(k.camera_id, k.track_id, k.t_end, k.quality, k.embedding)
                            .where(k.run_id == run_id).order_by(k.t_end)).fetchall()
    return [(float(t), cam, int(tid), float(q), np.frombuffer(emb, np.float32).copy()) for cam, tid, t, q, emb in rows]
