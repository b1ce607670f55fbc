"""Bad input gets one clear line naming the thing and the fix; one bad camera never stops the good ones."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from core.paths import REPO_ROOT


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, str(REPO_ROOT / "run_pipeline.py"), *args], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


def test_unknown_key_and_wrong_type_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cameras:\n  - id: a\n    source: x.mp4\ntracker:\n  nmae: sort\n")
    proc = _cli("run", "--config", str(cfg), "--output", str(tmp_path / "o"))
    assert proc.returncode == 2 and "unknown key 'tracker.nmae'" in proc.stderr
    cfg.write_text("cameras:\n  - id: a\n    source: x.mp4\n    max_frames: lots\n")
    proc = _cli("run", "--config", str(cfg), "--output", str(tmp_path / "o"))
    assert proc.returncode == 2 and "cameras.0.max_frames" in proc.stderr and "'lots'" in proc.stderr


def test_missing_weights_exit_1_with_one_line(shared, tmp_path):
    proc = _cli("run", "--source", f"a={shared}/data/pets09_s2l1/vtest.avi", "--weights", str(tmp_path / "y.pt"),
                "--output", str(tmp_path / "o"), "--no-progress")
    assert proc.returncode == 1
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and "detector weights not found" in lines[0] and "y.pt" in lines[0]


def test_bad_cameras_fail_alone_and_good_camera_is_stored(shared, yolo_weights, tmp_path):
    cut_avi = tmp_path / "truncated.avi"  # AVI keeps its index up front: the first ~2 % (a dozen frames) decode
    data = (shared / "data/pets09_s2l1/vtest.avi").read_bytes()
    cut_avi.write_bytes(data[: len(data) // 50])
    cut_mp4 = tmp_path / "truncated.mp4"  # this MP4 keeps its index (moov) at the end: nothing decodes
    data = (shared / "data/epfl_terrace1/terrace1-c1.mp4").read_bytes()
    cut_mp4.write_bytes(data[: len(data) // 2])
    port = _free_port()  # nothing listens here
    out = tmp_path / "out"
    proc = _cli(
        "run", "--output", str(out), "--no-progress", "--max-frames", "25",
        "--source", f"good={shared}/data/pets09_s2l1/vtest.avi",
        "--source", f"missing={tmp_path}/no_such_video.mp4",
        "--source", f"dead=rtsp://admin:hunter2@127.0.0.1:{port}/stream",
        "--source", f"cutavi={cut_avi}",
        "--source", f"cutmp4={cut_mp4}",
    )
    assert proc.returncode == 3, proc.stderr[-3000:]  # some cameras failed, others finished
    assert "hunter2" not in proc.stderr + proc.stdout  # credentials never printed
    assert "no_such_video.mp4" in proc.stderr and "not found" in proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr
    con = sqlite3.connect(out / "events.db")
    status = dict(con.execute("select camera_id, status from cameras"))
    assert status == {"good": "completed", "missing": "failed", "dead": "failed", "cutavi": "truncated",
                      "cutmp4": "failed"}
    frames = dict(con.execute("select camera_id, frames from cameras"))
    assert frames["good"] == 25 and 0 < frames["cutavi"] < 25
    assert "truncated.mp4" in proc.stderr
    assert con.execute("select count(*) from track_boxes where camera_id='good'").fetchone()[0] > 0
    assert (out / "mot" / "good.txt").stat().st_size > 0
    assert "hunter2" not in (con.execute("select config from runs").fetchone()[0])
