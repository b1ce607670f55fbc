"""Store: schema version, batched single-writer inserts, track summaries, clear errors."""

import sqlite3
import time

import numpy as np
import pytest
from sqlalchemy import select

from pipeline.store import SCHEMA_VERSION, StoreError, StoreWriter, open_engine
from pipeline.store import schema
from pipeline.store.schema import sqlite_url
from pipeline.types import Tracks


def _tracks(ids, x=0.0):
    n = len(ids)
    boxes = np.tile(np.array([[x, 0, x + 10, 20]], np.float32), (n, 1))
    return Tracks(np.array(ids), boxes, np.full(n, 0.9), np.zeros(n))


def test_write_run_cameras_tracks_and_boxes(tmp_path):
    db = tmp_path / "events.db"
    writer = StoreWriter(open_engine(sqlite_url(db)), batch_rows=7, flush_interval_s=0.05)
    run_id = writer.begin_run({"cameras": []}, str(tmp_path))
    writer.register_camera("c0", "a.mp4", 25.0, 360, 288)
    for frame in range(10):
        writer.add_tracks("c0", frame, frame / 25, _tracks([1, 2] if frame < 5 else [2]))
    writer.flush()
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from track_boxes").fetchone()[0] == 15  # visible before close
    writer.update_camera("c0", frames=10, status="completed")
    writer.close("completed")
    rows = con.execute("select track_id, first_frame, last_frame, n_boxes from tracks order by track_id").fetchall()
    assert rows == [(1, 0, 4, 5), (2, 0, 9, 10)]
    assert con.execute("select status, ended_at is not null from runs where id=?", (run_id,)).fetchone() == (
        "completed", 1)
    assert con.execute("select frames, status, width from cameras").fetchone() == (10, "completed", 360)
    assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert con.execute("select value from schema_info where key='version'").fetchone()[0] == str(SCHEMA_VERSION)


def test_second_run_appends_without_touching_the_first(tmp_path):
    url = sqlite_url(tmp_path / "events.db")
    for _ in range(2):
        w = StoreWriter(open_engine(url))
        w.begin_run()
        w.add_tracks("c0", 0, 0.0, _tracks([1]))
        w.close()
    engine = open_engine(url)
    with engine.connect() as conn:
        assert conn.execute(select(schema.runs.c.id)).all() == [(1,), (2,)]
        assert len(conn.execute(select(schema.track_boxes)).all()) == 2


def test_newer_schema_is_refused(tmp_path):
    url = sqlite_url(tmp_path / "events.db")
    open_engine(url).dispose()
    con = sqlite3.connect(tmp_path / "events.db")
    con.execute("update schema_info set value='999' where key='version'")
    con.commit()
    with pytest.raises(StoreError, match="schema version 999"):
        open_engine(url)


def test_unwritable_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot"):
        open_engine(sqlite_url(blocker / "sub" / "events.db"))


def test_not_a_database_url():
    with pytest.raises(StoreError, match="not a database URL"):
        open_engine("::::")


def test_close_flushes_pending_rows_quickly(tmp_path):
    db = tmp_path / "events.db"
    writer = StoreWriter(open_engine(sqlite_url(db)), batch_rows=10**6, flush_interval_s=60)
    writer.begin_run()
    for frame in range(1000):
        writer.add_tracks("c0", frame, frame * 0.04, _tracks([1, 2, 3]))
    start = time.monotonic()
    writer.close("interrupted")
    assert time.monotonic() - start < 10
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from track_boxes").fetchone()[0] == 3000
    assert con.execute("select status from runs").fetchone()[0] == "interrupted"
