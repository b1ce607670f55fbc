"""Store: schema version and migration, batched single-writer inserts, track summaries, action events, clear errors,
crash safety (kill -9). Every test taking `store_url` runs on SQLite and on PostgreSQL (skipped when unreachable)."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, event, func, select, text

from pipeline.events.hysteresis import ActionEvent
from pipeline.store import SCHEMA_VERSION, StoreError, StoreWriter, open_engine
from pipeline.store import schema
from pipeline.store.schema import sqlite_url
from core.types import Tracks
from tests.store_backends import store_url  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[1]


def _tracks(ids, x=0.0):
    n = len(ids)
    boxes = np.tile(np.array([[x, 0, x + 10, 20]], np.float32), (n, 1))
    return Tracks(np.array(ids), boxes, np.full(n, 0.9), np.zeros(n))


def _event(i, cam="c0", gid=None, action="walking"):
    return ActionEvent(cam, i, gid, action, "motion", 1.0 * i, 1.0 * i + 2.5, 25 * i, 25 * i + 62, 0.9, 0.75, 3, 63)


def _rows(url, query):
    engine = create_engine(url, future=True)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(query)]
    finally:
        engine.dispose()


def test_write_run_cameras_tracks_and_boxes(store_url):
    writer = StoreWriter(open_engine(store_url), batch_rows=7, flush_interval_s=0.05)
    run_id = writer.begin_run({"cameras": []}, "out")
    writer.register_camera("c0", "a.mp4", 25.0, 360, 288)
    for frame in range(10):
        writer.add_tracks("c0", frame, frame / 25, _tracks([1, 2] if frame < 5 else [2]))
    writer.flush()
    assert _rows(store_url, select(func.count()).select_from(schema.track_boxes)) == [(15,)]  # visible before close
    writer.update_camera("c0", frames=10, status="completed")
    writer.close("completed")
    t = schema.tracks.c
    assert _rows(store_url, select(t.track_id, t.first_frame, t.last_frame, t.n_boxes).order_by(t.track_id)) == [
        (1, 0, 4, 5), (2, 0, 9, 10)]
    b = schema.track_boxes.c
    assert _rows(store_url, select(b.frame, b.ts, b.x1, b.x2, b.score).where(b.track_id == 1, b.frame == 3)) == [
        (3, pytest.approx(0.12), 0.0, 10.0, pytest.approx(0.9))]
    r = schema.runs.c
    assert _rows(store_url, select(r.status, r.ended_at.is_not(None)).where(r.id == run_id)) == [("completed", True)]
    c = schema.cameras.c
    assert _rows(store_url, select(c.frames, c.status, c.width)) == [(10, "completed", 360)]
    s = schema.schema_info.c
    assert _rows(store_url, select(s.value).where(s.key == "version")) == [(str(SCHEMA_VERSION),)]


def test_sqlite_runs_in_wal_mode(tmp_path):
    db = tmp_path / "events.db"
    StoreWriter(open_engine(sqlite_url(db))).begin_run()
    assert sqlite3.connect(db).execute("pragma journal_mode").fetchone()[0] == "wal"


def test_action_events_round_trip_with_and_without_identity(store_url):
    writer = StoreWriter(open_engine(store_url), flush_interval_s=0.05)
    writer.begin_run()
    writer.add_action_event(_event(1, gid=7))
    writer.add_action_event(_event(2, cam="c1", action="running"))
    writer.close()
    e = schema.action_events.c
    rows = _rows(store_url, select(e.run_id, e.camera_id, e.track_id, e.global_id, e.action, e.source, e.start_ts,
                                   e.end_ts, e.start_frame, e.end_frame, e.peak_conf, e.mean_conf, e.clips, e.frames)
                 .order_by(e.id))
    assert rows == [(1, "c0", 1, 7, "walking", "motion", 1.0, 3.5, 25, 87, 0.9, 0.75, 3, 63),
                    (1, "c1", 2, None, "running", "motion", 2.0, 4.5, 50, 112, 0.9, 0.75, 3, 63)]


def test_second_run_appends_without_touching_the_first(store_url):
    for _ in range(2):
        w = StoreWriter(open_engine(store_url))
        w.begin_run()
        w.add_tracks("c0", 0, 0.0, _tracks([1]))
        w.add_action_event(_event(1))
        w.close()
    assert _rows(store_url, select(schema.runs.c.id).order_by(schema.runs.c.id)) == [(1,), (2,)]
    assert _rows(store_url, select(schema.track_boxes.c.run_id).order_by(schema.track_boxes.c.run_id)) == [(1,), (2,)]
    assert _rows(store_url, select(schema.action_events.c.run_id).order_by(schema.action_events.c.run_id)) == [
        (1,), (2,)]


def test_newer_schema_is_refused(store_url):
    open_engine(store_url).dispose()
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("update schema_info set value='999' where key='version'"))
    engine.dispose()
    with pytest.raises(StoreError, match="schema version 999"):
        open_engine(store_url)


V1_SCHEMA = """
create table schema_info (key varchar(64) primary key, value text);
create table runs (id {pk}, started_at float not null, ended_at float, status varchar(16) not null, config text,
                   output_dir text);
create table cameras (run_id integer, camera_id varchar(64), source text, fps float, width integer, height integer,
                      frames integer, dropped integer, status varchar(16), error text, primary key (run_id, camera_id));
create table tracks (run_id integer, camera_id varchar(64), track_id integer, first_frame integer not null,
                     last_frame integer not null, first_ts float not null, last_ts float not null,
                     n_boxes integer not null, primary key (run_id, camera_id, track_id));
create table track_boxes (run_id integer not null, camera_id varchar(64) not null, frame integer not null,
                          ts float not null, track_id integer not null, x1 float not null, y1 float not null,
                          x2 float not null, y2 float not null, score float not null);
insert into schema_info values ('version', '1');
insert into runs (started_at, ended_at, status) values (1.0, 2.0, 'completed');
insert into cameras values (1, 'c0', 'a.mp4', 25, 360, 288, 3, 0, 'completed', null);
insert into tracks values (1, 'c0', 4, 0, 2, 0.0, 0.08, 3);
insert into track_boxes values (1, 'c0', 0, 0.0, 4, 1, 2, 3, 4, 0.5)
"""


def test_migration_from_v1_keeps_old_runs_and_adds_v2_tables(store_url):
    engine = create_engine(store_url)
    pk = "serial primary key" if engine.dialect.name == "postgresql" else "integer primary key autoincrement"
    with engine.begin() as conn:
        for stmt in V1_SCHEMA.format(pk=pk).split(";"):
            conn.execute(text(stmt))
    engine.dispose()
    writer = StoreWriter(open_engine(store_url))  # migrates v1 -> v2
    assert writer.begin_run() == 2
    writer.set_action_names(["walking"])
    writer.add_tracks("c0", 0, 0.0, _tracks([4]))
    writer.add_action_event(_event(4, gid=1))
    writer.close()
    s = schema.schema_info.c
    assert _rows(store_url, select(s.value).where(s.key == "version")) == [(str(SCHEMA_VERSION),)]
    t = schema.tracks.c
    assert _rows(store_url, select(t.run_id, t.track_id, t.n_boxes, t.embedding, t.n_clips).order_by(t.run_id)) == [
        (1, 4, 3, None, None), (2, 4, 1, None, None)]
    assert _rows(store_url, select(schema.runs.c.action_names).order_by(schema.runs.c.id)) == [(None,), ('["walking"]',)]
    assert _rows(store_url, select(schema.action_events.c.run_id, schema.action_events.c.global_id)) == [(2, 1)]
    for table in ("track_clips", "identities", "identity_links", "action_events"):
        assert _rows(store_url, select(func.count()).select_from(schema.metadata.tables[table])) is not None


def test_migration_from_v4_adds_ground_sigma_and_keeps_old_positions(store_url):
    """A v4 store (ground_positions without sigma_m) is readable as it is (sigma unknown = placed) and migrated in
    place by the next writer: the old rows keep NULL, new rows carry how surely they were placed."""
    from pipeline.store.reader import ground_path

    writer = StoreWriter(open_engine(store_url))
    run = writer.begin_run()
    writer.add_ground_position("fused", 3, 0.0, 1.0, 2.0, ("c0",), 0.4)
    writer.close()
    engine = create_engine(store_url)
    with engine.begin() as conn:  # make it a v4 store
        conn.execute(text("alter table ground_positions drop column sigma_m"))
        conn.execute(text("update schema_info set value='4' where key='version'"))
    assert ground_path(engine, run, 3) == [(0.0, 1.0, 2.0, None)]  # read as it is, before any migration
    engine.dispose()
    writer = StoreWriter(open_engine(store_url))  # migrates v4 -> v5
    run2 = writer.begin_run()
    writer.add_ground_position("fused", 3, 0.0, 5.0, 6.0, ("c1",), 7.5)
    writer.close()
    s = schema.schema_info.c
    assert _rows(store_url, select(s.value).where(s.key == "version")) == [(str(SCHEMA_VERSION),)] == [("5",)]
    g = schema.ground_positions.c
    assert _rows(store_url, select(g.run_id, g.x_m, g.sigma_m).order_by(g.run_id)) == [(run, 1.0, None),
                                                                                      (run2, 5.0, 7.5)]


def test_close_flushes_pending_rows_quickly(store_url):
    writer = StoreWriter(open_engine(store_url), batch_rows=10**6, flush_interval_s=60)
    writer.begin_run()
    for frame in range(1000):
        writer.add_tracks("c0", frame, frame * 0.04, _tracks([1, 2, 3]))
    start = time.monotonic()
    writer.close("interrupted")
    assert time.monotonic() - start < 10
    assert _rows(store_url, select(func.count()).select_from(schema.track_boxes)) == [(3000,)]
    assert _rows(store_url, select(schema.runs.c.status)) == [("interrupted",)]


def test_unwritable_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot"):
        open_engine(sqlite_url(blocker / "sub" / "events.db"))


def test_not_a_database_url():
    with pytest.raises(StoreError, match="not a database URL"):
        open_engine("::::")


def test_disk_full_is_a_clear_error_and_stops_the_writer(tmp_path):
    engine = open_engine(sqlite_url(tmp_path / "events.db"))
    engine.dispose()
    event.listen(engine, "connect", lambda dbapi, _rec: dbapi.execute("PRAGMA max_page_count=40"))  # ~160 KiB
    writer = StoreWriter(engine, batch_rows=500, flush_interval_s=0.05)
    writer.begin_run()
    with pytest.raises(StoreError, match="full.*free disk space"):
        for frame in range(20000):
            writer.add_tracks("c0", frame, frame / 25, _tracks([1, 2, 3, 4]))
            if frame % 500 == 0:
                writer.flush()
    assert "database or disk is full" in writer.error


def test_unreachable_postgresql_is_a_clear_error():
    with pytest.raises(StoreError, match="cannot open database .*127.0.0.1:1/"):
        open_engine("postgresql+psycopg://nobody:secret@127.0.0.1:1/none?connect_timeout=2")
    try:
        open_engine("postgresql+psycopg://nobody:secret@127.0.0.1:1/none?connect_timeout=2")
    except StoreError as err:
        assert "secret" not in str(err)


CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from pipeline.events.hysteresis import ActionEvent
from pipeline.store import StoreWriter, open_engine
from tests.test_store import _event, _tracks
writer = StoreWriter(open_engine({url!r}), batch_rows=200, flush_interval_s=0.02)
writer.begin_run()
i = 0
while True:
    for _ in range(25):
        i += 1
        writer.add_tracks("c0", i, i / 25, _tracks([1, 2, 3]))
        writer.add_action_event(_event(i, gid=i % 5))
    writer.flush()
    print(i, flush=True)  # every event up to i is committed
"""


def _kill_mid_run(url: str, min_events: int = 300) -> int:
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(ROOT), url=url)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    committed = 0
    try:
        deadline = time.monotonic() + 60
        while committed < min_events and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            committed = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert committed >= min_events, "the child did not get going"
    return committed


def _check_no_partial_rows(url: str, committed: int) -> None:
    e = schema.action_events.c
    rows = _rows(url, select(e.track_id, e.global_id, e.start_ts, e.end_ts, e.start_frame, e.end_frame, e.frames)
                 .where(e.run_id == 1).order_by(e.track_id))
    ids = [r[0] for r in rows]
    assert ids[:committed] == list(range(1, committed + 1)), "an event committed before the kill is missing"
    assert ids == list(range(1, len(ids) + 1)), "events are not a prefix of what was written"
    for tid, gid, start, end, f0, f1, frames in rows:  # each row whole: every column as written
        assert (gid, start, end, f0, f1, frames) == (tid % 5, 1.0 * tid, 1.0 * tid + 2.5, 25 * tid, 25 * tid + 62, 63)
    boxes = _rows(url, select(schema.track_boxes.c.frame, func.count()).where(schema.track_boxes.c.run_id == 1)
                  .group_by(schema.track_boxes.c.frame))
    assert boxes and all(n == 3 for _, n in boxes), "a frame's boxes were half written"
    assert len(boxes) >= committed


def test_kill_9_keeps_every_committed_event_and_a_rerun_appends(store_url):
    open_engine(store_url).dispose()  # create the schema before the child, so the kill never hits DDL
    committed = _kill_mid_run(store_url)
    if store_url.startswith("sqlite"):
        db = store_url.removeprefix("sqlite:///")
        assert sqlite3.connect(db).execute("pragma integrity_check").fetchone()[0] == "ok"
    _check_no_partial_rows(store_url, committed)
    before = _rows(store_url, select(schema.action_events).where(schema.action_events.c.run_id == 1)
                   .order_by(schema.action_events.c.id))
    assert _rows(store_url, select(schema.runs.c.status)) == [("running",)]  # killed: never marked as ended
    writer = StoreWriter(open_engine(store_url))  # a rerun on the same store
    assert writer.begin_run() == 2
    writer.add_action_event(_event(1))
    writer.close()
    after = _rows(store_url, select(schema.action_events).where(schema.action_events.c.run_id == 1)
                  .order_by(schema.action_events.c.id))
    assert after == before


def test_kill_9_of_a_real_pipeline_run_keeps_committed_events(shared, yolo_weights, tmp_path):
    """The whole pipeline on a real video (CAVIAR corridor), SIGKILLed once events are committed."""
    import json

    video = shared / "data" / "caviar_oneleaveshop1" / "OneLeaveShop1cor.mpg"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"cameras: [{{id: cor, source: '{video}'}}]\n"
        f"detector: {{weights: '{yolo_weights}'}}\n"
        "reid: {enabled: false}\n"
        "events: {min_duration_s: 0.3, smoothing_s: 0.2, track_end_s: 0.5}\n"
        "store: {flush_interval_s: 0.1}\nrun: {progress: false}\n"
    )
    out = tmp_path / "out"
    db = out / "events.db"
    proc = subprocess.Popen([sys.executable, "run_pipeline.py", "-q", "run", "--config", str(cfg), "--output", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = 0
    try:
        deadline = time.monotonic() + 240
        while seen < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if db.is_file():
                try:
                    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
                        seen = con.execute("select count(*) from action_events").fetchone()[0]
                except sqlite3.Error:
                    pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert seen >= 2, "no events were committed in time"
    con = sqlite3.connect(db)
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    cols = "camera_id, track_id, action, source, start_frame, end_frame, frames"
    stored = con.execute(f"select {cols} from action_events where run_id = 1").fetchall()
    assert len(stored) >= seen
    logged = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    logged = {tuple(e[k.strip()] for k in cols.split(",")) for e in logged}
    assert set(stored) <= logged  # every stored event is whole and was really emitted
    assert con.execute("select status from runs").fetchall() == [("running",)]
    con.close()
    rerun = subprocess.run([sys.executable, "run_pipeline.py", "-q", "run", "--config", str(cfg), "--output", str(out),
                            "--max-frames", "5", "--overwrite"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    con = sqlite3.connect(db)
    assert con.execute(f"select {cols} from action_events where run_id = 1").fetchall() == stored
    assert con.execute("select id, status from runs order by id").fetchall() == [(1, "running"), (2, "completed")]
