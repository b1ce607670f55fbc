"""Reading a recorded run back from the store (SQLAlchemy Core on the schema's tables, any backend)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, inspect, null, select
from sqlalchemy.engine import Engine

from core.geometry import RELIABLE_SIGMA_M
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


def _ground_sigma(engine: Engine):
    """The `ground_positions.sigma_m` column, or NULL for a store written before schema v5 (opened read-only)."""
    columns = {c["name"] for c in inspect(engine).get_columns("ground_positions")}
    return schema.ground_positions.c.sigma_m if "sigma_m" in columns else null().label("sigma_m")


def _sigma(value) -> float | None:
    return None if value is None else float(value)


def reliable(sigma: float | None) -> bool:
    """A floor position placed to within `RELIABLE_SIGMA_M` (unknown sigma, a pre-v5 row, counts as placed)."""
    return sigma is None or sigma <= RELIABLE_SIGMA_M


def ground_path(engine: Engine, run_id: int, identity: int, id_map: dict[int, int] | None = None
                ) -> list[tuple[float, float, float, float | None]]:
    """Where one final identity stood: (t s, x m, y m, sigma m or None) of its stored ground positions, by time
    (fused runs)."""
    id_map = ground_identity_map(engine, run_id) if id_map is None else id_map
    online = {o for o, f in id_map.items() if f == identity}
    if identity not in id_map:  # no track row maps it elsewhere (e.g. a running run's identities are not in yet)
        online.add(identity)
    g = schema.ground_positions.c
    with engine.connect() as conn:
        rows = conn.execute(select(g.ts, g.x_m, g.y_m, _ground_sigma(engine))
                            .where(g.run_id == run_id, g.global_id.in_(sorted(online))).order_by(g.ts)).fetchall()
    return [(float(t), float(x), float(y), _sigma(s)) for t, x, y, s in rows]


def ground_people(engine: Engine, run_id: int, camera: str | None = None, since: float | None = None,
                  until: float | None = None, identity: int | None = None, near: tuple[float, float] | None = None,
                  radius: float = 1.0, path: bool = False) -> list[dict]:
    """One row per identity the ground-plane fusion placed (`ground_positions`, fused mode): its group, first and
    last time placed, stored positions and how many of them are approximate (sigma above `RELIABLE_SIGMA_M`), metres
    walked and mean speed (m/s; None under 1 s of placed movement) over the others; with near (x, y) m: the closest
    approach (m) and when, only identities whose placed (not approximate) positions came within radius m; path: the
    (t, x, y, sigma) points too. Ids are the final identities (the offline refinement's over the online ids the
    positions were stored with)."""
    g = schema.ground_positions
    q = select(g.c.ground_group, g.c.global_id, g.c.ts, g.c.x_m, g.c.y_m, g.c.cameras, _ground_sigma(engine)
               ).where(g.c.run_id == run_id)
    if since is not None:
        q = q.where(g.c.ts >= since)
    if until is not None:
        q = q.where(g.c.ts <= until)
    final = ground_identity_map(engine, run_id)
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(g.c.global_id, g.c.ts)).all()
    people: dict[int, dict] = {}
    for group, gid, ts, x, y, cams, sigma in rows:
        if camera and camera not in (cams or "").split():
            continue
        ident = final.get(int(gid), int(gid))
        if identity is not None and ident != identity:
            continue
        p = people.setdefault(ident, dict(identity=ident, group=group, first_ts=ts, last_ts=ts, positions=0,
                                          walked_m=0.0, points=[]))
        p["points"].append((float(ts), float(x), float(y), _sigma(sigma)))
    out = []
    for p in people.values():
        points = sorted(p.pop("points"), key=lambda q: q[0])
        pts = np.array([q[:3] for q in points])
        ok = np.array([reliable(q[3]) for q in points])
        walked, moving_s = walked_distance(pts[ok])
        p.update(first_ts=float(pts[0, 0]), last_ts=float(pts[-1, 0]), positions=len(pts),
                 approximate=int((~ok).sum()), walked_m=round(walked, 2),
                 mean_speed_mps=round(walked / moving_s, 2) if moving_s >= 1.0 - 1e-9 else None)
        if near is not None:
            if not ok.any():
                continue
            d = np.where(ok, np.hypot(pts[:, 1] - near[0], pts[:, 2] - near[1]), np.inf)
            k = int(np.argmin(d))
            if d[k] > radius:
                continue
            p.update(closest_m=round(float(d[k]), 2), closest_ts=float(pts[k, 0]))
        if path:
            p["path"] = [[round(t, 3), round(x, 3), round(y, 3), None if s is None else round(s, 3)]
                         for t, x, y, s in points]
        out.append(p)
    return sorted(out, key=lambda r: (r.get("closest_ts", r["first_ts"]), r["identity"]))


def walked_distance(pts: np.ndarray, every_s: float = 1.0, max_gap_s: float = 2.0) -> tuple[float, float]:
    """(metres walked, seconds it took) along positions (P, 3) = t, x, y by time: summed between positions at least
    every_s apart (position noise, larger far from the cameras, would add to a sum over every 0.2 s step), never
    across a gap longer than max_gap_s (the person was not placed in between)."""
    walked = moving = 0.0
    if len(pts) < 2:
        return walked, moving
    for run in np.split(pts, np.flatnonzero(np.diff(pts[:, 0]) > max_gap_s) + 1):
        keep = [0]
        for k in range(1, len(run)):
            if run[k, 0] - run[keep[-1], 0] >= every_s - 1e-9 or k == len(run) - 1:
                keep.append(k)
        q = run[keep]
        if len(q) > 1:
            walked += float(np.hypot(*np.diff(q[:, 1:], axis=0).T).sum())
            moving += float(q[-1, 0] - q[0, 0])
    return walked, moving


def clip_results(engine: Engine, run_id: int) -> list[tuple[float, str, int, float, np.ndarray]]:
    """The run's Re-ID clips as (t_end s, camera, track id, quality, embedding float32 (D,)), sorted by t_end."""
    k = schema.track_clips.c
    with engine.connect() as conn:
        rows = conn.execute(select(k.camera_id, k.track_id, k.t_end, k.quality, k.embedding)
                            .where(k.run_id == run_id).order_by(k.t_end)).fetchall()
    return [(float(t), cam, int(tid), float(q), np.frombuffer(emb, np.float32).copy()) for cam, tid, t, q, emb in rows]
