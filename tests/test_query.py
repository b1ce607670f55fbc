"""`query` command on a known small store: identities, events and timeline as tables and --json, with filters."""

import json

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.commands.query import fmt_time, parse_time
from pipeline.events.hysteresis import ActionEvent
from pipeline.store import StoreWriter, open_engine
from core.types import Tracks
from tests.store_backends import store_url  # noqa: F401 - fixture


def _fill(url: str) -> None:
    """Run 1 (an old run) and run 2: cameras c0 and c1; c0:1 and c1:5 are global identity 7 (offline-refined from
    the online 9), c0:2 is never linked."""
    old = StoreWriter(open_engine(url))
    old.begin_run()
    old.add_tracks("c0", 0, 0.0, Tracks(np.array([1]), np.zeros((1, 4)), np.ones(1), np.zeros(1)))
    old.close()
    w = StoreWriter(open_engine(url), flush_interval_s=0.05)
    w.begin_run()
    for cam, tid, frames in [("c0", 1, range(0, 100)), ("c0", 2, range(50, 150)), ("c1", 5, range(120, 200))]:
        for f in frames:
            w.add_tracks(cam, f, f / 10, Tracks(np.array([tid]), np.array([[0, 0, 10, 30]]), np.ones(1), np.zeros(1)))
    ev = [ActionEvent("c0", 1, 9, "walking", "model", 0.5, 6.0, 5, 60, 0.91, 0.8, 6, 56),
          ActionEvent("c0", 2, None, "standing", "motion", 5.0, 14.9, 50, 149, 0.7, 0.65, 0, 100),
          ActionEvent("c0", 1, 9, "running", "model", 6.5, 9.9, 65, 99, 0.85, 0.7, 3, 35),
          ActionEvent("c1", 5, 9, "walking", "model", 12.0, 19.9, 120, 199, 0.95, 0.9, 8, 80)]
    for e in ev:
        w.add_action_event(e)
    rows = [dict(camera_id="c0", track_id=1, global_id=9, first_ts=0.0, last_ts=9.9),
            dict(camera_id="c1", track_id=5, global_id=9, first_ts=12.0, last_ts=19.9)]
    w.set_identities("online", rows)
    w.set_identities("offline", [dict(r, global_id=7) for r in rows])
    w.close()


def _query(capsys, url, *args):
    code = main(["query", *args, "--store", url])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def _fill_ground(url: str) -> None:
    """A fused run stored through the real store stage at 25 fps for 4 s: online ground id 9 (the offline pass
    gave its tracks identity 7) walks from (0, 0) m along x at 1 m/s; id 4 stands still at (5, 5) m; id 12 walks
    from (0, 3) m along x at 1 m/s placed to 0.3 m for 2 s, then far from every camera: placed to only 5 m, its
    positions jumping 4 m a step; the store keeps one position per identity per 0.2 s."""
    from pipeline.fusion.stage import GroundPoint
    from pipeline.stages.base import RunEnd, Step
    from pipeline.store.stage import StoreStage

    stage = StoreStage(StoreWriter(open_engine(url), flush_interval_s=0.05), ground_every_s=0.2)
    stage.begin_run({}, "out")
    for i in range(100):
        t = i / 25
        far = t >= 2.0 - 1e-9
        step = Step(i, t, ground=[GroundPoint("fused", 9, t, t * 1.0, 0.0, 1.0, 0.0, ("c0", "c1")),
                                  GroundPoint("fused", 4, t, 5.0, 5.0, 0.0, 0.0, ("c1",)),
                                  GroundPoint("fused", 12, t, t + (4.0 * (i % 2) if far else 0.0), 3.0, 1.0, 0.0,
                                              ("c0",), 5.0 if far else 0.3)])
        stage.on_step(step)
    rows = [dict(camera_id="c0", track_id=1, global_id=9, first_ts=0.0, last_ts=3.96),
            dict(camera_id="c1", track_id=2, global_id=4, first_ts=0.0, last_ts=3.96),
            dict(camera_id="c0", track_id=3, global_id=12, first_ts=0.0, last_ts=3.96)]
    stage.writer.set_identities("online", rows)
    stage.writer.set_identities("offline", [dict(rows[0], global_id=7), rows[1], rows[2]])
    stage.close(RunEnd("completed"))


def test_ground_query_says_who_came_near_a_floor_point_and_how_far_they_walked(store_url, capsys):
    _fill_ground(store_url)
    rows = json.loads(_query(capsys, store_url, "ground", "--json"))
    # final ids; 4 s at one per 0.2 s
    assert [(r["identity"], r["positions"]) for r in rows] == [(4, 20), (7, 20), (12, 20)]
    walker = rows[1]
    assert abs(walker["walked_m"] - 3.8) < 0.05 and abs(walker["mean_speed_mps"] - 1.0) < 0.02
    assert rows[0]["walked_m"] == 0.0 and rows[0]["approximate"] == walker["approximate"] == 0
    # the far walker: only its 10 positions placed to 0.3 m count (1.8 m in 1.8 s), not the jumping ones
    far = rows[2]
    assert far["approximate"] == 10 and abs(far["walked_m"] - 1.8) < 0.05 and abs(far["mean_speed_mps"] - 1.0) < 0.02
    near = json.loads(_query(capsys, store_url, "ground", "--near", "2,0.5", "--radius", "0.6", "--json"))
    assert [(r["identity"], r["closest_m"], r["closest_ts"]) for r in near] == [(7, 0.5, 2.0)]
    # an approximate position is no evidence of having been near: (7.2, 3) m lies 0.2 m from two of 12's approximate
    # positions (7.0 and 7.4 m at 3.0 and 3.4 s) and over 5 m from its placed ones
    assert json.loads(_query(capsys, store_url, "ground", "--near", "7.2,3", "--radius", "0.3", "--json")) == []
    assert [r["identity"] for r in json.loads(_query(capsys, store_url, "ground", "--near", "1,3", "--radius", "0.3",
                                                     "--json"))] == [12]
    assert json.loads(_query(capsys, store_url, "ground", "--near", "40,40", "--json")) == []
    seen_by_c0 = json.loads(_query(capsys, store_url, "ground", "--camera", "c0", "--since", "1", "--json"))
    assert [(r["identity"], r["first_ts"]) for r in seen_by_c0] == [(7, 1.0), (12, 1.0)]
    path = json.loads(_query(capsys, store_url, "ground", "--identity", "7", "--json"))[0]["path"]
    assert len(path) == 20 and path[0] == [0.0, 0.0, 0.0, None] and path[-1][0] == 3.8  # sigma unknown: placed
    far_path = json.loads(_query(capsys, store_url, "ground", "--identity", "12", "--json"))[0]["path"]
    assert [q[3] for q in far_path] == [0.3] * 10 + [5.0] * 10
    out = _query(capsys, store_url, "ground", "--near", "2,0")
    assert out.splitlines()[0] == "run 1: 1 people placed on the ground" and "closest m" in out.splitlines()[1]
    assert main(["query", "ground", "--near", "2", "--store", store_url]) == 2
    assert "expected a floor point X,Y in metres" in capsys.readouterr().err
    assert main(["query", "events", "--near", "2,0", "--store", store_url]) == 2
    assert "--near works with `query ground` only" in capsys.readouterr().err


def test_query_reads_a_v4_store_as_it_is_and_refuses_older(store_url, capsys):
    """A store written before positions carried sigma_m (schema v4) is queried without migrating it (a query never
    writes): every position counts as placed. A v3 store is refused in one line that says how to upgrade it."""
    from sqlalchemy import create_engine, text

    _fill_ground(store_url)
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("alter table ground_positions drop column sigma_m"))
        conn.execute(text("update schema_info set value='4' where key='version'"))
    rows = json.loads(_query(capsys, store_url, "ground", "--identity", "12", "--json"))
    assert rows[0]["approximate"] == 0 and rows[0]["path"][0][3] is None and rows[0]["walked_m"] > 5  # v5: 1.8
    with engine.begin() as conn:
        conn.execute(text("update schema_info set value='3' where key='version'"))
    engine.dispose()
    assert main(["query", "ground", "--store", store_url]) == 2
    assert "schema version 3, older than this program's 5 (a run on it migrates it in place" in capsys.readouterr().err


def test_identities_table(store_url, capsys):
    _fill(store_url)
    out = _query(capsys, store_url, "identities")
    assert out.splitlines() == [
        "run 2: 2 identities",
        "identity  cameras  tracks     first seen  last seen  boxes  action events",
        "-" * 80,
        "7         c0,c1    c0:1,c1:5  0.00        19.90      180    1 running, 2 walking",
        "c0:2      c0       c0:2       5.00        14.90      100    1 standing",
    ]


def test_events_table_and_filters(store_url, capsys):
    _fill(store_url)
    out = _query(capsys, store_url, "events")
    lines = out.splitlines()
    assert lines[0] == "run 2: 4 events"
    assert lines[1].split() == ["event", "identity", "camera", "track", "action", "source", "start", "end", "dur",
                                "s", "peak", "mean", "clips"]
    assert lines[3].split() == ["1", "7", "c0", "1", "walking", "model", "0.50", "6.00", "5.50", "0.91", "0.80", "6"]
    assert lines[4].split()[:5] == ["2", "-", "c0", "2", "standing"]
    rows = json.loads(_query(capsys, store_url, "events", "--identity", "7", "--json"))
    assert [(r["camera_id"], r["action"]) for r in rows] == [("c0", "walking"), ("c0", "running"), ("c1", "walking")]
    rows = json.loads(_query(capsys, store_url, "events", "--camera", "c0", "--since", "7", "--json"))
    assert [r["id"] for r in rows] == [2, 3]
    rows = json.loads(_query(capsys, store_url, "events", "--action", "walking", "--until", "10", "--json"))
    assert [r["id"] for r in rows] == [1]
    assert _query(capsys, store_url, "events", "--camera", "nope") == "run 2: 0 events\n"
    rows = json.loads(_query(capsys, store_url, "events", "--run", "1", "--json"))
    assert rows == []


def test_timeline_of_one_identity(store_url, capsys):
    _fill(store_url)
    out = _query(capsys, store_url, "timeline", "--identity", "7")
    assert [line.split() for line in out.splitlines()[3:]] == [
        ["7", "0.00", "9.90", "c0", "1", "seen", "-", "-"],
        ["7", "0.50", "6.00", "c0", "1", "walking", "0.80", "model"],
        ["7", "6.50", "9.90", "c0", "1", "running", "0.70", "model"],
        ["7", "12.00", "19.90", "c1", "5", "seen", "-", "-"],
        ["7", "12.00", "19.90", "c1", "5", "walking", "0.90", "model"],
    ]
    rows = json.loads(_query(capsys, store_url, "timeline", "--json"))
    assert [(r["identity"], r["what"]) for r in rows][-2:] == [(None, "seen"), (None, "standing")]


def test_missing_store_and_run_are_clear_errors(tmp_path, capsys):
    assert main(["query", "events", "--output", str(tmp_path)]) == 2
    assert "no store at" in capsys.readouterr().err
    url = f"sqlite:///{tmp_path / 'e.db'}"
    _fill(url)
    assert main(["query", "events", "--store", url, "--run", "5"]) == 2
    assert "no run 5" in capsys.readouterr().err


def test_time_parsing_and_display():
    assert parse_time("12.5") == 12.5
    assert parse_time("2024-05-01T10:00:00+00:00") == 1714557600.0
    assert fmt_time(3.14159) == "3.14" and fmt_time(None) == "-"
    assert fmt_time(1714557600.0).startswith("2024-05-01")
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_bad_limit_and_run_are_one_line_exit_2(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    _fill(url)
    for args, expected in [(["--limit", "-5"], "--limit -5: expected a row count >= 0"),
                           (["--run", "0"], "--run 0: run ids start at 1")]:
        assert main(["query", "events", "--store", url, *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err
    assert main(["query", "events", "--store", url, "--limit", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_query_never_creates_or_writes_a_store(tmp_path, capsys):
    missing = tmp_path / "new" / "dir" / "x.db"
    assert main(["query", "events", "--store", f"sqlite:///{missing}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and str(missing.relative_to("/")) in err
    assert not (tmp_path / "new").exists()  # no folder, no empty database
    # an existing store is opened read-only: its bytes do not change (no migration, no WAL checkpoint, no tables)
    db = tmp_path / "e.db"
    _fill(f"sqlite:///{db}")
    before = db.read_bytes()
    assert main(["query", "timeline", "--store", f"sqlite:///{db}"]) == 0
    capsys.readouterr()
    assert db.read_bytes() == before
    # a SQLite file that is not an mcsa store
    other = tmp_path / "other.db"
    import sqlite3

    sqlite3.connect(other).execute("create table t (x)").connection.commit()
    assert main(["query", "events", "--store", f"sqlite:///{other}"]) == 2
    assert "not an mcsa event store" in capsys.readouterr().err


def test_unreachable_postgresql_is_one_line(capsys):
    pytest.importorskip("psycopg")
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://nobody:secret@127.0.0.1:{port}/none"
    assert main(["query", "events", "--store", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"127.0.0.1:{port}" in err and "cannot open store" in err
    assert "secret" not in err
