"""The loop's set-up rules: the output folder, --duration, cameras that cannot be opened."""

from __future__ import annotations

import os

import pytest

from pipeline.config import parse_config
from pipeline.runner import Pipeline, RunSetupError, prepare_output_dir


def test_output_folder_with_an_earlier_run_is_refused_unless_overwrite(tmp_path):
    out = prepare_output_dir(tmp_path / "out")
    assert out.is_dir()
    (out / "events.db").write_bytes(b"")  # the store and events.jsonl are shared by runs: no reason to refuse
    prepare_output_dir(out)
    (out / "mot").mkdir()
    (out / "mot" / "c0.txt").write_text("1,1,0,0,1,1,1,-1,-1,-1\n")
    with pytest.raises(RunSetupError, match=r"already holds a run's mot/.*--overwrite"):
        prepare_output_dir(out)
    assert prepare_output_dir(out, overwrite=True) == out
    assert (out / "mot" / "c0.txt").read_text()  # nothing is deleted before the run writes


def test_output_folder_that_is_a_file_or_cannot_be_created(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunSetupError, match="is an existing file"):
        prepare_output_dir(tmp_path / "f")
    if os.geteuid() != 0:  # root may write anywhere; the message is checked through the file case otherwise
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(RunSetupError, match="cannot create output folder"):
            prepare_output_dir(locked / "sub")
    with pytest.raises(RunSetupError, match="cannot create output folder"):
        prepare_output_dir(tmp_path / "f" / "sub")


def test_no_camera_opens_fails_before_any_model_loads(tmp_path):
    cfg = parse_config({"cameras": [{"id": "a", "source": str(tmp_path / "missing.mp4")}],
                        "detector": {"weights": str(tmp_path / "no_weights.pt")}, "run": {"progress": False}})
    summary = Pipeline(cfg, tmp_path / "out").run()  # the missing detector weights are never reached
    assert summary.status == "failed" and summary.exit_code == 1
    assert summary.cameras[0].status == "failed" and "not found" in summary.cameras[0].error
    import sqlite3

    con = sqlite3.connect(tmp_path / "out" / "events.db")  # recorded as failed, with the camera's error
    assert con.execute("select status from runs").fetchall() == [("failed",)]
    assert con.execute("select camera_id, status, error from cameras").fetchone()[:2] == ("a", "failed")


def test_duration_counts_the_frame_loop_not_model_start_up(shared, yolo_weights, tmp_path):
    cfg = parse_config({"cameras": [{"id": "view001", "source": str(shared / "data/pets09_s2l1/vtest.avi"), "fps": 7}],
                        "detector": {"weights": str(yolo_weights)}, "reid": {"enabled": False},
                        "run": {"progress": False, "duration_s": 1.5}})
    summary = Pipeline(cfg, tmp_path).run()
    assert summary.exit_code == 0, summary.table()
    assert 0 < summary.cameras[0].frames < 795 and summary.cameras[0].status == "stopped"


def test_full_disk_keeps_what_was_committed_and_ends_with_one_line(shared, yolo_weights, tmp_path):
    """A real full disk (a 300 kB tmpfs): exit 1, the summary, one error line naming the database and the fix, no
    traceback, and a store that opens with what was committed."""
    import sqlite3
    import subprocess
    import sys

    from core.paths import REPO_ROOT

    disk = tmp_path / "tiny"
    disk.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)],
                                                   capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("needs root to mount a small tmpfs as a full disk")
    try:
        proc = subprocess.run(
            [sys.executable, "run_pipeline.py", "run", "--output", str(disk / "out"), "--no-progress", "--max-frames",
             "300", "--source", f"view001={shared}/data/pets09_s2l1/vtest.avi", "--weights", str(yolo_weights)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 1, proc.stderr[-2000:]
        problems = [x for x in proc.stderr.splitlines() if x.startswith("error") or " ERROR " in x]
        assert len(problems) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        # the store or another output file may meet the full disk first: the line names the database or the folder
        assert ("events.db" in problems[0] or str(disk / "out") in problems[0]) and "free disk space" in problems[0]
        assert "view001" in proc.stdout and "frames/s overall" in proc.stdout  # the summary is still printed
        con = sqlite3.connect(f"file:{disk / 'out' / 'events.db'}?mode=ro", uri=True)
        assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert con.execute("select count(*) from runs").fetchone()[0] == 1
        con.close()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_run_whose_every_camera_failed_is_recorded_failed(shared, yolo_weights, tmp_path):
    import sqlite3

    cut = tmp_path / "cut.mp4"  # this MP4 keeps its index at the end: it opens, then nothing decodes
    data = (shared / "data/epfl_terrace1/terrace1-c1.mp4").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    cfg = parse_config({"cameras": [{"id": "cut", "source": str(cut)}], "detector": {"weights": str(yolo_weights)},
                        "reid": {"enabled": False}, "run": {"progress": False}})
    summary = Pipeline(cfg, tmp_path / "out").run()
    assert summary.exit_code == 1 and summary.cameras[0].status == "failed", summary.table()
    con = sqlite3.connect(tmp_path / "out" / "events.db")
    assert con.execute("select status from runs").fetchone()[0] == "failed"
    assert con.execute("select status from cameras").fetchone()[0] == "failed"
