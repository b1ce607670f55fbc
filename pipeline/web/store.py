"""Read-only view of the event store for the review app: runs, cameras, identities, events, thumbnails, embeddings.

The database is opened read-only (SQLite: a `mode=ro` URI, which reads a WAL database while the pipeline is still
writing it; PostgreSQL: every transaction `READ ONLY`) and never migrated: an older store (schema v1 / v2) opens, and
what it lacks (thumbnails, embeddings) is simply absent. Per run, an in-memory `RunIndex` groups tracks into
identities (final global id: offline over online, else - while a run is still going - the track's latest online
link, else the id on the track's events, else `camera:track`); it is
built once for a finished run and rebuilt at most every `refresh_s` while the run is still `running`, so pages over
10^5 tracks are slices of memory.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import and_, create_engine, func, inspect, or_, select
from sqlalchemy.engine import Engine, make_url

from pipeline.store import schema
from pipeline.store.schema import SCHEMA_VERSION, redact_db_url


class StoreOpenError(ValueError):
    """The store cannot be opened for reading; the message names it and the fix."""


class NotFound(LookupError):
    """A run, identity, track or thumbnail that the store does not hold (HTTP 404)."""


def open_readonly(output: str | Path | None = None, store_url: str | None = None) -> Engine:
    """A read-only engine on `DIR/events.db` (SQLite) or a store URL (SQLite file or PostgreSQL)."""
    if store_url is None:
        db = Path(output or "out") / "events.db"
        if not db.is_file():
            raise StoreOpenError(f"no store at {db} (run the pipeline with --output {output or 'out'}, or give --store URL)")
        store_url = f"sqlite:///{db.resolve()}"
    shown = redact_db_url(store_url)
    try:
        url = make_url(store_url)
    except Exception:  # noqa: BLE001
        raise StoreOpenError(f"--store {store_url!r} is not a database URL (e.g. sqlite:///out/events.db)") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise StoreOpenError(f"--store {shown}: give a SQLite file (sqlite:///path/events.db)")
        path = Path(url.database).resolve()
        if not path.is_file():
            raise StoreOpenError(f"no SQLite store at {path} (check --store / --output)")
        uri = f"{path.as_uri()}?mode=ro"

        def connect():
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)
            conn.execute("PRAGMA query_only=1")
            return conn

        engine = create_engine("sqlite://", creator=connect, future=True)
    elif backend == "postgresql":
        engine = create_engine(url, future=True, pool_pre_ping=True,
                               connect_args={"options": "-c default_transaction_read_only=on", "connect_timeout": 5})
    else:
        raise StoreOpenError(f"--store {shown}: only SQLite and PostgreSQL stores are supported")
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            if "runs" not in tables:
                raise StoreOpenError(f"{shown} is not an mcsa store (no runs table)")
            version = 1
            if "schema_info" in tables:
                row = conn.execute(select(schema.schema_info.c.value).where(schema.schema_info.c.key == "version")).first()
                version = int(row[0]) if row else 1
            if version > SCHEMA_VERSION:
                raise StoreOpenError(f"store {shown} has schema version {version}, newer than this program's "
                                     f"{SCHEMA_VERSION} (upgrade mcsa)")
    except StoreOpenError:
        engine.dispose()
        raise
    except Exception as err:  # noqa: BLE001
        engine.dispose()
        cause = str(getattr(err, "orig", err)).splitlines()[0]
        raise StoreOpenError(f"cannot open store {shown} read-only: {cause} (check the path / URL and permissions)") \
            from None
    engine.info = dict(tables=tables, version=version)  # type: ignore[attr-defined]
    return engine


@dataclass
class TrackInfo:
    camera_id: str
    track_id: int
    first_ts: float
    last_ts: float
    n_boxes: int
    label: str
    thumb_quality: float | None = None
    action_probs: str | None = None


@dataclass
class IdentityInfo:
    """One global identity (or one unlinked local track, label `camera:track`)."""

    label: str
    global_id: int | None
    tracks: list[TrackInfo] = field(default_factory=list)
    first_ts: float = float("inf")
    last_ts: float = float("-inf")
    seconds: float = 0.0  # time on camera: sum over cameras of the union of its tracks' spans (s)
    actions: dict[str, int] = field(default_factory=dict)
    thumb: TrackInfo | None = None  # the track holding the best thumbnail

    cameras: list[str] = field(default_factory=list)  # sorted, set when the index is built

    def card(self) -> dict:
        return dict(label=self.label, global_id=self.global_id, cameras=self.cameras, n_tracks=len(self.tracks),
                    first_ts=self.first_ts, last_ts=self.last_ts, seconds=round(self.seconds, 3),
                    actions=dict(sorted(self.actions.items())),
                    thumbnail=None if self.thumb is None else dict(camera_id=self.thumb.camera_id,
                                                                   track_id=self.thumb.track_id))


def _union_length(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


SORT_KEYS = {
    "first_seen": lambda i: (i.first_ts, i.label),
    "last_seen": lambda i: (-i.last_ts, i.label),
    "time_on_camera": lambda i: (-i.seconds, i.first_ts),
    "cameras": lambda i: (-len(i.cameras), i.first_ts),
    "tracks": lambda i: (-len(i.tracks), i.first_ts),
    "identity": lambda i: (i.global_id is None, i.global_id or 0, i.label),
}


class RunIndex:
    """Tracks of one run grouped by identity, in memory (no blobs: embeddings and JPEGs stay in the database)."""

    def __init__(self, run_id: int, status: str, tracks: dict[tuple[str, int], TrackInfo],
                 identities: dict[str, IdentityInfo], actions: list[str] | None = None) -> None:
        self.run_id, self.status = run_id, status
        self.tracks, self.identities = tracks, identities
        self.actions = actions or []
        self.built_at = time.monotonic()
        self._sorted = {key: sorted(identities.values(), key=fn) for key, fn in SORT_KEYS.items()}
        self._filtered: dict[tuple, list[IdentityInfo]] = {}
        self._lock = threading.Lock()

    def sorted_by(self, key: str, camera: str | None = None, min_cameras: int = 1) -> list[IdentityInfo]:
        """Identities in `key` order, only those seen by `camera` and by at least `min_cameras` cameras (cached)."""
        if key not in SORT_KEYS:
            raise ValueError(f"sort {key!r}: use one of {', '.join(SORT_KEYS)}")
        rows = self._sorted[key]
        if not camera and min_cameras <= 1:
            return rows
        with self._lock:
            cached = self._filtered.get((key, camera, min_cameras))
            if cached is None:
                cached = [i for i in rows if (not camera or camera in i.cameras) and len(i.cameras) >= min_cameras]
                if len(self._filtered) > 256:
                    self._filtered.clear()
                self._filtered[(key, camera, min_cameras)] = cached
            return cached


class ReviewStore:
    """Everything the review app reads, from one read-only engine."""

    def __init__(self, engine: Engine, refresh_s: float = 5.0) -> None:
        self.engine = engine
        self.tables: set[str] = getattr(engine, "info", {}).get("tables") or set(inspect(engine).get_table_names())
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._indexes: dict[int, RunIndex] = {}
        self._embeddings: dict[int, tuple[float, object]] = {}
        self._columns: dict[tuple[str, str], bool] = {}

    def has(self, table: str) -> bool:
        return table in self.tables

    # ---- runs and cameras -----------------------------------------------------------------------------------------
    def runs(self) -> list[dict]:
        r = schema.runs.c
        with self.engine.connect() as conn:
            rows = [dict(x._mapping) for x in conn.execute(
                select(r.id, r.started_at, r.ended_at, r.status, r.output_dir).order_by(r.id.desc()))]
            cams = {}
            if self.has("cameras"):
                c = schema.cameras.c
                for run_id, n, frames in conn.execute(
                        select(c.run_id, func.count(), func.sum(c.frames)).group_by(c.run_id)):
                    cams[run_id] = (int(n), int(frames or 0))
        for row in rows:
            row["cameras"], row["frames"] = cams.get(row["id"], (0, 0))
        return rows

    def latest_run(self) -> int:
        with self.engine.connect() as conn:
            run_id = conn.execute(select(func.max(schema.runs.c.id))).scalar()
        if run_id is None:
            raise NotFound("the store holds no runs yet")
        return int(run_id)

    def run(self, run_id: int) -> dict:
        r = schema.runs.c
        with self.engine.connect() as conn:
            row = conn.execute(select(r.id, r.started_at, r.ended_at, r.status, r.output_dir,
                                      *([r.action_names] if self._has_column("runs", "action_names") else []))
                               .where(r.id == run_id)).first()
        if row is None:
            raise NotFound(f"no run {run_id} in the store")
        out = dict(row._mapping)
        out["action_names"] = json.loads(out["action_names"]) if out.get("action_names") else []
        return out

    def run_config(self, run_id: int) -> dict:
        with self.engine.connect() as conn:
            text = conn.execute(select(schema.runs.c.config).where(schema.runs.c.id == run_id)).scalar()
        return json.loads(text) if text else {}

    def cameras(self, run_id: int) -> list[dict]:
        self.run(run_id)
        c, t = schema.cameras.c, schema.tracks.c
        with self.engine.connect() as conn:
            rows = [dict(x._mapping) for x in conn.execute(
                select(c.camera_id, c.source, c.fps, c.width, c.height, c.frames, c.dropped, c.status, c.error)
                .where(c.run_id == run_id).order_by(c.camera_id))]
            counts = dict(conn.execute(select(t.camera_id, func.count()).where(t.run_id == run_id)
                                       .group_by(t.camera_id)).all())
        for row in rows:
            row["tracks"] = int(counts.get(row["camera_id"], 0))
        return rows

    def _has_column(self, table: str, column: str) -> bool:
        key = (table, column)
        if key not in self._columns:
            self._columns[key] = column in {c["name"] for c in inspect(self.engine).get_columns(table)}
        return self._columns[key]

    # ---- identities -----------------------------------------------------------------------------------------------
    def index(self, run_id: int) -> RunIndex:
        """The run's identity index (rebuilt at most every `refresh_s` while the run is running)."""
        with self._lock:
            idx = self._indexes.get(run_id)
            if idx is not None and (idx.status != "running" or time.monotonic() - idx.built_at < self.refresh_s):
                return idx
            idx = self._build_index(run_id)
            self._indexes[run_id] = idx
            return idx

    def _build_index(self, run_id: int) -> RunIndex:
        status = self.run(run_id)["status"]
        s = schema
        t = s.tracks.c
        ids: dict[tuple[str, int], int] = {}
        tracks: dict[tuple[str, int], TrackInfo] = {}
        events: list[tuple] = []
        with self.engine.connect() as conn:
            cols = [t.camera_id, t.track_id, t.first_ts, t.last_ts, t.n_boxes]
            for cam, tid, a, b, n in conn.execute(select(*cols).where(t.run_id == run_id)):
                tracks[(cam, int(tid))] = TrackInfo(cam, int(tid), float(a), float(b), int(n), "")
            if self.has("action_events"):
                e = s.action_events.c
                events = conn.execute(select(e.camera_id, e.track_id, e.global_id, e.action)
                                      .where(e.run_id == run_id).order_by(e.end_ts)).all()
                for cam, tid, gid, _ in events:
                    if gid is not None:
                        ids[(cam, int(tid))] = int(gid)
            if self.has("identity_links"):  # a running run: the latest online link of each track
                k = s.identity_links.c
                for cam, tid, gid in conn.execute(select(k.camera_id, k.track_id, k.global_id)
                                                  .where(k.run_id == run_id, k.mode == "online").order_by(k.ts)):
                    ids[(cam, int(tid))] = int(gid)
            if self.has("identities"):
                i = s.identities.c
                for mode in ("online", "offline"):
                    for cam, tid, gid in conn.execute(select(i.camera_id, i.track_id, i.global_id)
                                                      .where(i.run_id == run_id, i.mode == mode)):
                        ids[(cam, int(tid))] = int(gid)
            if self.has("track_thumbnails"):
                th = s.track_thumbnails.c
                for cam, tid, q in conn.execute(select(th.camera_id, th.track_id, th.quality)
                                                .where(th.run_id == run_id)):
                    info = tracks.get((cam, int(tid)))
                    if info is not None:
                        info.thumb_quality = float(q)
        identities: dict[str, IdentityInfo] = {}
        for key, info in tracks.items():
            gid = ids.get(key)
            label = str(gid) if gid is not None else f"{key[0]}:{key[1]}"
            info.label = label
            ident = identities.get(label)
            if ident is None:
                ident = identities[label] = IdentityInfo(label, gid)
            ident.tracks.append(info)
            ident.first_ts, ident.last_ts = min(ident.first_ts, info.first_ts), max(ident.last_ts, info.last_ts)
            if info.thumb_quality is not None and (ident.thumb is None or info.thumb_quality > ident.thumb.thumb_quality):
                ident.thumb = info
        for ident in identities.values():
            ident.cameras = sorted({t.camera_id for t in ident.tracks})
            ident.tracks.sort(key=lambda x: (x.first_ts, x.camera_id, x.track_id))
            per_cam: dict[str, list] = {}
            for x in ident.tracks:
                per_cam.setdefault(x.camera_id, []).append((x.first_ts, x.last_ts))
            ident.seconds = sum(_union_length(v) for v in per_cam.values())
        for cam, tid, _gid, action in events:
            info = tracks.get((cam, int(tid)))
            if info is not None:
                acts = identities[info.label].actions
                acts[action] = acts.get(action, 0) + 1
        return RunIndex(run_id, status, tracks, identities, sorted({e[3] for e in events}))

    def identities_page(self, run_id: int, sort: str = "first_seen", page: int = 1, per_page: int = 48,
                        camera: str | None = None, min_cameras: int = 1) -> dict:
        idx = self.index(run_id)
        rows = idx.sorted_by(sort, camera, min_cameras)
        total = len(rows)
        start = (page - 1) * per_page
        return dict(run_id=run_id, status=idx.status, total=total, page=page, per_page=per_page, sort=sort,
                    pages=max(1, -(-total // per_page)), items=[i.card() for i in rows[start:start + per_page]])

    def identity(self, run_id: int, label: str) -> dict:
        """One identity: its card, tracks (spans per camera), action episodes, link history and thumbnails."""
        idx = self.index(run_id)
        ident = idx.identities.get(label)
        if ident is None:
            raise NotFound(f"no identity {label!r} in run {run_id}")
        keys = [(t.camera_id, t.track_id) for t in ident.tracks]
        out = ident.card()
        out["run_id"] = run_id
        out["tracks"] = [dict(camera_id=t.camera_id, track_id=t.track_id, first_ts=t.first_ts, last_ts=t.last_ts,
                              n_boxes=t.n_boxes, thumbnail=t.thumb_quality is not None) for t in ident.tracks]
        out["events"], out["links"] = [], []
        by_cam: dict[str, list[int]] = {}
        for cam, tid in keys:
            by_cam.setdefault(cam, []).append(tid)
        with self.engine.connect() as conn:
            for cam, tids in by_cam.items():
                for chunk in range(0, len(tids), 500):
                    part = tids[chunk:chunk + 500]
                    if self.has("action_events"):
                        e = schema.action_events.c
                        out["events"] += [dict(r._mapping) for r in conn.execute(
                            select(e.id, e.camera_id, e.track_id, e.global_id, e.action, e.source, e.start_ts,
                                   e.end_ts, e.peak_conf, e.mean_conf, e.clips, e.frames)
                            .where(e.run_id == run_id, e.camera_id == cam, e.track_id.in_(part)))]
                    if self.has("identity_links"):
                        k = schema.identity_links.c
                        out["links"] += [dict(r._mapping) for r in conn.execute(
                            select(k.camera_id, k.track_id, k.global_id, k.previous_id, k.ts, k.reason, k.score,
                                   k.mode)
                            .where(k.run_id == run_id, k.camera_id == cam, k.track_id.in_(part)))]
        out["events"].sort(key=lambda r: (r["start_ts"], r["camera_id"]))
        out["links"].sort(key=lambda r: (r["ts"], r["mode"], r["camera_id"], r["track_id"]))
        out["ground"] = self.ground_path(run_id, ident.global_id)
        return out

    def ground_path(self, run_id: int, global_id: int | None, max_points: int = 2000) -> list[list]:
        """Where an identity stood on the floor, [t s, x m, y m, sigma m or None] by time (fused runs, schema v4;
        sigma since v5; [] otherwise), at most max_points (evenly thinned)."""
        if global_id is None or not self.has("ground_positions"):
            return []
        from pipeline.store.reader import ground_path

        pts = ground_path(self.engine, run_id, int(global_id))
        if len(pts) > max_points:
            pts = [pts[int(k)] for k in np.linspace(0, len(pts) - 1, max_points)]
        return [[round(t, 3), round(x, 3), round(y, 3), None if sg is None else round(sg, 3)] for t, x, y, sg in pts]

    def floor(self, run_id: int, since: float | None = None, until: float | None = None,
              near: tuple[float, float] | None = None, radius: float = 1.0, max_points: int = 400) -> dict:
        """The whole run on the floor (fused runs, schema v4): every placed identity in the time window with its
        path [t s, x m, y m, sigma m or None] (at most max_points each, evenly thinned), metres walked and mean speed
        over its placed positions (`reader.reliable`), its label for the identity page; extent [x0, x1, y0, y1] m of
        the placed positions of all paths (of every position when none is placed: approximate ones far from every
        camera may lie outside); with near (x, y) m: `near`, the identities whose placed positions came within
        radius m, closest approach (m) and when, by time."""
        if radius <= 0 or not np.isfinite(radius):
            raise ValueError(f"radius {radius}: give a distance in metres above 0, e.g. radius=1")
        out = dict(run_id=run_id, people=[], extent=None, near=None, radius=radius,
                   placed=self.has("ground_positions"))
        if not out["placed"]:
            return out
        from pipeline.store.reader import ground_people, reliable

        idx = self.index(run_id)
        labels = {i.global_id: i.label for i in idx.identities.values() if i.global_id is not None}
        people = ground_people(self.engine, run_id, since=since, until=until, path=True)
        lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
        every = [q for p in people for q in p["path"]]
        sure = [q for q in every if reliable(q[3])] or every
        if sure:
            xy = np.asarray([q[1:3] for q in sure])
            lo, hi = xy.min(axis=0), xy.max(axis=0)
        for p in people:
            pts = p.pop("path")
            if len(pts) > max_points:
                pts = [pts[int(k)] for k in np.linspace(0, len(pts) - 1, max_points)]
            p.update(label=labels.get(p["identity"]), path=pts)
        out["people"] = people
        if people:
            out["extent"] = [round(float(lo[0]), 3), round(float(hi[0]), 3), round(float(lo[1]), 3),
                             round(float(hi[1]), 3)]
        if near is not None:
            found = ground_people(self.engine, run_id, since=since, until=until, near=near, radius=radius)
            out["near"] = [dict(identity=p["identity"], label=labels.get(p["identity"]), closest_m=p["closest_m"],
                                closest_ts=p["closest_ts"], group=p["group"]) for p in found]
        return out

    # ---- events ---------------------------------------------------------------------------------------------------
    def events(self, run_id: int, camera: str | None = None, action: str | None = None,
               identity: str | None = None, since: float | None = None, until: float | None = None,
               page: int = 1, per_page: int = 100) -> dict:
        """Action events of a run, filtered, in start order, one page (SQL LIMIT / OFFSET); each row carries its
        track's identity label."""
        idx = self.index(run_id)
        empty = dict(run_id=run_id, total=0, page=page, per_page=per_page, pages=1, items=[], actions=idx.actions)
        if not self.has("action_events"):
            return empty
        e = schema.action_events.c
        conds = [e.run_id == run_id]
        if camera:
            conds.append(e.camera_id == camera)
        if action:
            conds.append(e.action == action)
        if since is not None:
            conds.append(e.end_ts >= since)
        if until is not None:
            conds.append(e.start_ts <= until)
        if identity:
            ident = idx.identities.get(identity)
            if ident is None:
                return empty
            by_cam: dict[str, list[int]] = {}
            for t in ident.tracks:
                if not camera or t.camera_id == camera:
                    by_cam.setdefault(t.camera_id, []).append(t.track_id)
            if not by_cam:
                return empty
            conds.append(or_(*(and_(e.camera_id == cam, e.track_id.in_(tids)) for cam, tids in by_cam.items())))
        cols = (e.id, e.camera_id, e.track_id, e.global_id, e.action, e.source, e.start_ts, e.end_ts, e.peak_conf,
                e.mean_conf, e.clips, e.frames)
        with self.engine.connect() as conn:
            total = int(conn.execute(select(func.count()).select_from(schema.action_events).where(*conds)).scalar())
            rows = [dict(r._mapping) for r in conn.execute(
                select(*cols).where(*conds).order_by(e.start_ts, e.camera_id, e.track_id, e.id)
                .limit(per_page).offset((page - 1) * per_page))]
        for r in rows:
            info = idx.tracks.get((r["camera_id"], int(r["track_id"])))
            r["identity"] = info.label if info is not None else (
                str(r["global_id"]) if r["global_id"] is not None else f"{r['camera_id']}:{r['track_id']}")
        return dict(run_id=run_id, total=total, page=page, per_page=per_page, pages=max(1, -(-total // per_page)),
                    items=rows, actions=idx.actions)

    # ---- blobs ----------------------------------------------------------------------------------------------------
    def thumbnail(self, run_id: int, camera_id: str, track_id: int) -> bytes:
        if not self.has("track_thumbnails"):
            raise NotFound("this store has no thumbnails (written before schema v3)")
        th = schema.track_thumbnails.c
        with self.engine.connect() as conn:
            jpeg = conn.execute(select(th.jpeg).where(th.run_id == run_id, th.camera_id == camera_id,
                                                      th.track_id == track_id)).scalar()
        if jpeg is None:
            raise NotFound(f"no thumbnail for track {camera_id}:{track_id} of run {run_id}")
        return bytes(jpeg)

    def track_embedding(self, run_id: int, camera_id: str, track_id: int) -> np.ndarray:
        t = schema.tracks.c
        if not self._has_column("tracks", "embedding"):
            raise NotFound("this store has no track embeddings (schema v1)")
        with self.engine.connect() as conn:
            blob = conn.execute(select(t.embedding).where(t.run_id == run_id, t.camera_id == camera_id,
                                                          t.track_id == track_id)).scalar()
        if blob is None:
            raise NotFound(f"track {camera_id}:{track_id} of run {run_id} has no Re-ID embedding")
        return np.frombuffer(blob, np.float32)

    def embeddings(self, run_id: int):
        """(keys [(camera, track)], float32 (N, D) L2-normalised track embeddings) of the run, cached like the
        index (rebuilt at most every `refresh_s` while the run is running)."""
        with self._lock:
            cached = self._embeddings.get(run_id)
            status = self._indexes[run_id].status if run_id in self._indexes else None
            if cached is not None and (status not in (None, "running") or time.monotonic() - cached[0] < self.refresh_s):
                return cached[1]
        if not self._has_column("tracks", "embedding"):
            raise NotFound("this store has no track embeddings (schema v1)")
        t = schema.tracks.c
        keys, blobs = [], []
        with self.engine.connect() as conn:
            for cam, tid, blob in conn.execute(select(t.camera_id, t.track_id, t.embedding)
                                               .where(t.run_id == run_id, t.embedding.is_not(None))):
                keys.append((cam, int(tid)))
                blobs.append(blob)
        if blobs:
            dims = {len(b) for b in blobs}
            if len(dims) != 1:
                raise NotFound(f"run {run_id} mixes embedding sizes {sorted(d // 4 for d in dims)}")
            matrix = np.frombuffer(b"".join(blobs), np.float32).reshape(len(blobs), -1).copy()
        else:
            matrix = np.zeros((0, 0), np.float32)
        value = (keys, matrix)
        with self._lock:
            self._embeddings[run_id] = (time.monotonic(), value)
        return value

    def close(self) -> None:
        self.engine.dispose()
