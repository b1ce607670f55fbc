"""`query`: search the event store - who was seen where and when, doing what.

    python run_pipeline.py query identities [--output DIR | --store URL] [--run N] [--camera C] [--since T] [--json]
    python run_pipeline.py query events     [...] [--identity N] [--action A]
    python run_pipeline.py query timeline   [...] [--identity N]
    python run_pipeline.py query ground     [...] [--identity N] [--near X,Y [--radius M]]   (fused mode)

Identity of a local track: its final global id from the `identities` table (offline-refined ids when present, else
online), else the id its action events carried, else none (shown as `camera:track`). Times are seconds on the run
clock (file cameras: from the start of the video; live cameras: unix time, shown as local date-time). `ground`:
positions placed less surely than 1 m (far from every camera) are counted as `approx.` and left out of metres
walked, speeds and `--near`.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path


ORDER = 30

EPILOG = """\
examples:
  python run_pipeline.py query identities --output out
  python run_pipeline.py query events --output out --camera c0 --since 30 --action walking
  python run_pipeline.py query timeline --output out --identity 3
  # fused mode: who came within 1.5 m of the floor point (4, 8) m, and when; one identity's path with --json
  python run_pipeline.py query ground --output out --near 4,8 --radius 1.5
  python run_pipeline.py query ground --output out --identity 3 --json     # path: [t, x, y, sigma_m] points
  python run_pipeline.py query events --store postgresql+psycopg://user@host/db --json

The store is opened read-only: a query never creates, migrates or writes a database (a missing one is an error).

exit codes: 0 ok (also when nothing matches), 2 bad arguments (e.g. --limit < 0) or no such database / run
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "query",
        help="search the store: identities, action events, per-identity timeline, where people stood (tables or "
             "--json)",
        description="Print identities, action events or a per-identity timeline of a run from the event store "
        "(SQLite DIR/events.db or any store URL).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("what", choices=["identities", "events", "timeline", "ground"])
    p.add_argument("--output", "-o", metavar="DIR", default="out", help="run folder holding events.db (default out)")
    p.add_argument("--store", metavar="URL", help="store URL instead of DIR/events.db")
    p.add_argument("--run", type=int, metavar="N", help="run id (default: the latest run)")
    p.add_argument("--identity", type=int, metavar="N", help="only this global identity")
    p.add_argument("--camera", metavar="C", help="only this camera")
    p.add_argument("--since", metavar="T", help="only from this time on: run-clock seconds or an ISO date-time")
    p.add_argument("--until", metavar="T", help="only up to this time")
    p.add_argument("--action", metavar="A", help="events: only this action")
    p.add_argument("--near", metavar="X,Y", help="ground: only people who came within --radius of this floor point "
                   "(metres, the homographies' frame)")
    p.add_argument("--radius", type=float, default=1.0, metavar="M", help="ground: metres around --near (default 1)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="print at most N rows (N >= 0)")
    p.add_argument("--json", action="store_true", help="JSON (a list of objects) instead of a table")
    p.set_defaults(func=main)


class QueryError(ValueError):
    """Bad arguments or a missing database / run; the message says what to do."""


def parse_time(text: str | None) -> float | None:
    """Run-clock seconds from '12.5' or an ISO date-time ('2024-05-01T10:00:00', local time unless it has a zone)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise QueryError(f"--since/--until {text!r}: expected seconds (e.g. 12.5) or an ISO date-time") from None


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    if ts > 1e9:  # unix time (live cameras)
        return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")
    return f"{ts:.2f}"


def open_store(output: str | None, store: str | None):
    """A read-only engine on an existing store: --store URL, else DIR/events.db (nothing is ever created)."""
    from pipeline.store import open_engine_readonly
    from pipeline.store.schema import sqlite_url

    if store:
        return open_engine_readonly(store)
    db = Path(output or "out") / "events.db"
    if not db.is_file():
        raise QueryError(f"no store at {db} (run the pipeline with --output {output or 'out'}, or give --store URL)")
    return open_engine_readonly(sqlite_url(db))


class Store:
    """Read-side view of one run of the store (SQLAlchemy Core; SQLite and PostgreSQL)."""

    def __init__(self, engine, run_id: int | None = None) -> None:
        from sqlalchemy import func, select

        from pipeline.store import schema

        self.engine, self.s = engine, schema
        with engine.connect() as conn:
            if run_id is None:
                run_id = conn.execute(select(func.max(schema.runs.c.id))).scalar()
                if run_id is None:
                    raise QueryError("the store holds no runs yet")
            elif conn.execute(select(schema.runs.c.id).where(schema.runs.c.id == run_id)).first() is None:
                raise QueryError(f"no run {run_id} in the store")
        self.run_id = int(run_id)
        self._ids: dict[tuple[str, int], int] | None = None

    def identity_map(self) -> dict[tuple[str, int], int]:
        """(camera_id, track_id) -> global id: offline identities over online ones, else the events' ids."""
        if self._ids is not None:
            return self._ids
        from sqlalchemy import select

        s = self.s
        ids: dict[tuple[str, int], int] = {}
        with self.engine.connect() as conn:
            for cam, tid, gid in conn.execute(
                select(s.action_events.c.camera_id, s.action_events.c.track_id, s.action_events.c.global_id)
                .where(s.action_events.c.run_id == self.run_id, s.action_events.c.global_id.is_not(None))
                .order_by(s.action_events.c.end_ts)
            ):
                ids[(cam, int(tid))] = int(gid)
            for mode in ("online", "offline"):
                for cam, tid, gid in conn.execute(
                    select(s.identities.c.camera_id, s.identities.c.track_id, s.identities.c.global_id)
                    .where(s.identities.c.run_id == self.run_id, s.identities.c.mode == mode)
                ):
                    ids[(cam, int(tid))] = int(gid)
        self._ids = ids
        return ids

    def tracks(self, camera: str | None = None) -> list[dict]:
        from sqlalchemy import select

        t = self.s.tracks
        q = select(t.c.camera_id, t.c.track_id, t.c.first_ts, t.c.last_ts, t.c.n_boxes).where(t.c.run_id == self.run_id)
        if camera:
            q = q.where(t.c.camera_id == camera)
        ids = self.identity_map()
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q.order_by(t.c.first_ts, t.c.camera_id, t.c.track_id))]
        for r in rows:
            r["identity"] = ids.get((r["camera_id"], r["track_id"]))
        return rows

    def events(self, camera: str | None = None, since: float | None = None, until: float | None = None,
               action: str | None = None) -> list[dict]:
        from sqlalchemy import select

        e = self.s.action_events
        q = select(e).where(e.c.run_id == self.run_id)
        if camera:
            q = q.where(e.c.camera_id == camera)
        if since is not None:
            q = q.where(e.c.end_ts >= since)
        if until is not None:
            q = q.where(e.c.start_ts <= until)
        if action:
            q = q.where(e.c.action == action)
        ids = self.identity_map()
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q.order_by(e.c.start_ts, e.c.camera_id, e.c.track_id))]
        for r in rows:
            r["identity"] = ids.get((r["camera_id"], r["track_id"]), r["global_id"])
        return rows


def _label(identity, camera_id, track_id) -> str:
    return str(identity) if identity is not None else f"{camera_id}:{track_id}"


def _overlaps(row_start: float, row_end: float, since: float | None, until: float | None) -> bool:
    return (since is None or row_end >= since) and (until is None or row_start <= until)


def identities_rows(store: Store, camera=None, since=None, until=None, identity=None) -> list[dict]:
    """One row per global identity (or per unlinked local track): cameras, tracks, first/last seen, boxes, actions."""
    groups: dict[str, dict] = {}
    for t in store.tracks(camera):
        if not _overlaps(t["first_ts"], t["last_ts"], since, until):
            continue
        if identity is not None and t["identity"] != identity:
            continue
        key = _label(t["identity"], t["camera_id"], t["track_id"])
        g = groups.setdefault(key, dict(identity=t["identity"], label=key, cameras=[], tracks=[],
                                        first_ts=t["first_ts"], last_ts=t["last_ts"], boxes=0, actions={}))
        if t["camera_id"] not in g["cameras"]:
            g["cameras"].append(t["camera_id"])
        g["tracks"].append(f"{t['camera_id']}:{t['track_id']}")
        g["first_ts"], g["last_ts"] = min(g["first_ts"], t["first_ts"]), max(g["last_ts"], t["last_ts"])
        g["boxes"] += int(t["n_boxes"])
    for e in store.events(camera, since, until):
        g = groups.get(_label(e["identity"], e["camera_id"], e["track_id"]))
        if g is not None:
            g["actions"][e["action"]] = g["actions"].get(e["action"], 0) + 1
    return sorted(groups.values(), key=lambda g: (g["first_ts"], g["label"]))


def parse_point(text: str | None) -> tuple[float, float] | None:
    """'4,8' -> (4.0, 8.0) metres (raises `QueryError`)."""
    if text is None:
        return None
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise QueryError(f"--near {text!r}: expected a floor point X,Y in metres, e.g. --near 4,8") from None
    return x, y


def ground_rows(store: Store, camera=None, since=None, until=None, identity=None, near=None, radius=1.0,
                path=False) -> list[dict]:
    """One row per identity the ground-plane fusion placed (`pipeline.store.reader.ground_people`)."""
    from pipeline.store.reader import ground_people

    return ground_people(store.engine, store.run_id, camera=camera, since=since, until=until, identity=identity,
                         near=near, radius=radius, path=path)


def events_rows(store: Store, camera=None, since=None, until=None, identity=None, action=None) -> list[dict]:
    rows = []
    for e in store.events(camera, since, until, action):
        if identity is not None and e["identity"] != identity:
            continue
        rows.append(dict(id=e["id"], identity=e["identity"], camera_id=e["camera_id"], track_id=e["track_id"],
                         action=e["action"], source=e["source"], start_ts=e["start_ts"], end_ts=e["end_ts"],
                         duration_s=round(e["end_ts"] - e["start_ts"], 3), peak_conf=e["peak_conf"],
                         mean_conf=e["mean_conf"], clips=e["clips"], frames=e["frames"]))
    return rows


def timeline_rows(store: Store, camera=None, since=None, until=None, identity=None) -> list[dict]:
    """Chronological: each track's appearance (`seen`) and the action events within it, per identity."""
    rows = []
    for t in store.tracks(camera):
        if (identity is None or t["identity"] == identity) and _overlaps(t["first_ts"], t["last_ts"], since, until):
            rows.append(dict(identity=t["identity"], camera_id=t["camera_id"], track_id=t["track_id"], what="seen",
                             start_ts=t["first_ts"], end_ts=t["last_ts"], conf=None, source=None))
    for e in store.events(camera, since, until):
        if identity is None or e["identity"] == identity:
            rows.append(dict(identity=e["identity"], camera_id=e["camera_id"], track_id=e["track_id"],
                             what=e["action"], start_ts=e["start_ts"], end_ts=e["end_ts"], conf=e["mean_conf"],
                             source=e["source"]))
    rows.sort(key=lambda r: (0, r["identity"], "", 0, r["start_ts"], r["what"] != "seen", r["camera_id"])
              if r["identity"] is not None else (1, 0, r["camera_id"], r["track_id"], r["start_ts"], r["what"] != "seen",
                                                 ""))
    return rows


def table(rows: list[dict], columns: list[tuple[str, str]], formats: dict | None = None) -> str:
    """A plain aligned text table of `rows` with (key, heading) columns."""
    formats = formats or {}
    cells = [[formats.get(k, lambda v: "-" if v is None else str(v))(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h) in enumerate(columns)]
    line = "  ".join(h.ljust(w) for (_, h), w in zip(columns, widths))
    out = [line.rstrip(), "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(out)


def _conf(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def render(what: str, rows: list[dict]) -> str:
    if what == "ground":
        columns = [("identity", "identity"), ("group", "group"), ("first_ts", "first placed"),
                   ("last_ts", "last placed"), ("positions", "positions"), ("approximate", "approx."),
                   ("walked_m", "walked m"), ("mean_speed_mps", "m/s")]
        if rows and "closest_m" in rows[0]:
            columns += [("closest_m", "closest m"), ("closest_ts", "at")]
        return table(rows, columns, {"first_ts": fmt_time, "last_ts": fmt_time, "closest_ts": fmt_time})
    if what == "identities":
        shown = [dict(r, cameras=",".join(r["cameras"]), tracks=",".join(r["tracks"]),
                      actions=", ".join(f"{n} {a}" for a, n in sorted(r["actions"].items())) or "-") for r in rows]
        return table(shown, [("label", "identity"), ("cameras", "cameras"), ("tracks", "tracks"),
                             ("first_ts", "first seen"), ("last_ts", "last seen"), ("boxes", "boxes"),
                             ("actions", "action events")], {"first_ts": fmt_time, "last_ts": fmt_time})
    if what == "events":
        return table(rows, [("id", "event"), ("identity", "identity"), ("camera_id", "camera"), ("track_id", "track"),
                            ("action", "action"), ("source", "source"), ("start_ts", "start"), ("end_ts", "end"),
                            ("duration_s", "dur s"), ("peak_conf", "peak"), ("mean_conf", "mean"),
                            ("clips", "clips")],
                     {"start_ts": fmt_time, "end_ts": fmt_time, "peak_conf": _conf, "mean_conf": _conf,
                      "duration_s": lambda v: f"{v:.2f}"})
    shown = [dict(r, label=_label(r["identity"], r["camera_id"], r["track_id"])) for r in rows]
    return table(shown, [("label", "identity"), ("start_ts", "start"), ("end_ts", "end"), ("camera_id", "camera"),
                         ("track_id", "track"), ("what", "what"), ("conf", "conf"), ("source", "source")],
                 {"start_ts": fmt_time, "end_ts": fmt_time, "conf": _conf})


def check_args(args: argparse.Namespace) -> None:
    """Argument values argparse's types do not bound (raises `QueryError`), checked before the store is opened."""
    if args.limit is not None and args.limit < 0:
        raise QueryError(f"--limit {args.limit}: expected a row count >= 0")
    if args.run is not None and args.run < 1:
        raise QueryError(f"--run {args.run}: run ids start at 1 (omit --run for the latest run)")
    parse_time(args.since)
    parse_time(args.until)
    if args.what == "ground":
        parse_point(args.near)
        if not args.radius > 0:
            raise QueryError(f"--radius {args.radius}: expected metres > 0")
    elif args.near is not None:
        raise QueryError("--near works with `query ground` only (where people stood, fused mode)")


def run_query(args: argparse.Namespace) -> tuple[int, list[dict]]:
    """The run id and rows for parsed arguments (raises `QueryError`)."""
    check_args(args)
    engine = open_store(args.output, args.store)
    try:
        store = Store(engine, args.run)
        since, until = parse_time(args.since), parse_time(args.until)
        common = dict(camera=args.camera, since=since, until=until, identity=args.identity)
        if args.what == "identities":
            rows = identities_rows(store, **common)
        elif args.what == "events":
            rows = events_rows(store, action=args.action, **common)
        elif args.what == "ground":
            rows = ground_rows(store, near=parse_point(args.near), radius=args.radius,
                               path=args.json and args.identity is not None, **common)
        else:
            rows = timeline_rows(store, **common)
    finally:
        engine.dispose()
    if args.limit is not None:
        rows = rows[: args.limit]
    return store.run_id, rows


def main(args: argparse.Namespace) -> int:
    from pipeline.store import StoreError

    try:
        run_id, rows = run_query(args)
    except (QueryError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    noun = {"timeline": "timeline rows", "ground": "people placed on the ground"}.get(args.what, args.what)
    print(f"run {run_id}: {len(rows)} {noun}")
    if rows:
        print(render(args.what, rows))
    return 0
