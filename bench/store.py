"""Store write throughput: track boxes/s and action events/s through the `StoreWriter`, SQLite vs PostgreSQL.

Run by hand:
    python3 bench/store.py                     # SQLite (temp file) + PostgreSQL on 127.0.0.1:5432/test when up
    python3 bench/store.py --boxes 500000 --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test

Timing covers the producer calls (`add_tracks` / `add_action_event`, main thread) up to `close()` returning, i.e.
until every row is committed. The producer feeds frames of `--tracks` boxes each, as the pipeline loop does.
PostgreSQL runs in a throw-away schema that is dropped afterwards. Goal: >= 100k track boxes/s on SQLite.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.events.hysteresis import ActionEvent  # noqa: E402
from pipeline.store import StoreWriter, open_engine  # noqa: E402
from pipeline.store.schema import sqlite_url  # noqa: E402
from core.types import Tracks  # noqa: E402

GOAL_BOXES_SQLITE = 100_000


def _frames(n_boxes: int, per_frame: int) -> list[Tracks]:
    rng = np.random.default_rng(0)
    frames = []
    for f in range(max(1, n_boxes // per_frame)):
        xy = rng.uniform(0, 600, (per_frame, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + 50], axis=1)
        frames.append(Tracks(np.arange(per_frame) + (f // 200) * per_frame, boxes, rng.uniform(0.3, 1, per_frame),
                             np.zeros(per_frame)))
    return frames


def bench_boxes(url: str, n_boxes: int, per_frame: int, cameras: int) -> float:
    frames = _frames(n_boxes, per_frame)
    writer = StoreWriter(open_engine(url))
    writer.begin_run({"bench": "store"})
    start = time.perf_counter()
    n = 0
    for f, tracks in enumerate(frames):
        writer.add_tracks(f"c{f % cameras}", f // cameras, f / 25.0, tracks)
        n += len(tracks)
    writer.close("completed")
    return n / (time.perf_counter() - start)


def bench_events(url: str, n_events: int) -> float:
    events = [ActionEvent(f"c{i % 2}", i // 10, i // 20, "walking", "motion", i * 0.5, i * 0.5 + 3.0, i * 12,
                          i * 12 + 75, 0.9, 0.8, 4, 75) for i in range(n_events)]
    writer = StoreWriter(open_engine(url))
    writer.begin_run({"bench": "store"})
    start = time.perf_counter()
    for e in events:
        writer.add_action_event(e)
    writer.close("completed")
    return n_events / (time.perf_counter() - start)


def _pg_schema_url(base: str):
    """A fresh schema on the server (search_path set in the URL) and a function that drops it; None if unreachable."""
    from sqlalchemy import create_engine, text

    name = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        admin = create_engine(base, future=True)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {name}"))
    except Exception as err:  # noqa: BLE001
        print(f"PostgreSQL at {base} not reachable, skipped: {str(err).splitlines()[0]}")
        return None, None
    sep = "&" if "?" in base else "?"

    def drop():
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
        admin.dispose()

    return f"{base}{sep}options=-csearch_path%3D{name}", drop


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boxes", type=int, default=300_000, help="track boxes written per backend")
    ap.add_argument("--events", type=int, default=20_000, help="action events written per backend")
    ap.add_argument("--tracks", type=int, default=20, help="boxes per frame")
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    ap.add_argument("--no-pg", action="store_true")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("SQLite (WAL)", bench_boxes(sqlite_url(Path(tmp) / "b.db"), args.boxes, args.tracks,
                                                 args.cameras),
                     bench_events(sqlite_url(Path(tmp) / "e.db"), args.events)))
    if not args.no_pg:
        url, drop = _pg_schema_url(args.pg_url)
        if url is not None:
            try:
                rows.append(("PostgreSQL", bench_boxes(url, args.boxes, args.tracks, args.cameras),
                             bench_events(url, args.events)))
            finally:
                drop()
    print(f"\n{args.boxes} track boxes ({args.tracks} per frame, {args.cameras} cameras), {args.events} events "
          "per backend; rows/s until close() returns (all committed)\n")
    head = f"{'backend':<14} {'boxes/s':>10} {'events/s':>10} {'goal (SQLite boxes/s >= 100k)':>30}"
    print(head + "\n" + "-" * len(head))
    for name, boxes, events in rows:
        goal = ("met" if boxes >= GOAL_BOXES_SQLITE else "NOT met") if name.startswith("SQLite") else "-"
        print(f"{name:<14} {boxes:>10,.0f} {events:>10,.0f} {goal:>30}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
