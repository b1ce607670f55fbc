"""A real RTSP camera beside a file camera: the server is killed and restarted mid-run; the pipeline reconnects,
the file camera never stops, and the live lag stays bounded (latest-frame semantics)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import pytest

from pipeline.config import parse_config
from pipeline.runner import Pipeline
from tests.rtsp_server import RtspTestServer


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _settled(read, quiet_s: float, timeout: float) -> int:
    """The value of read() once it has not changed for quiet_s seconds."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:
            raise AssertionError(f"still changing after {timeout} s (now {value})")
        time.sleep(0.1)
        if (now := read()) != value:
            value, since = now, time.monotonic()
    return value


def test_rtsp_reconnects_while_file_camera_continues(shared, yolo_weights, tmp_path, caplog):
    if not RtspTestServer.available():
        pytest.skip("RTSP test server needs Debian's gst-rtsp-server (python3-gi, gir1.2-gst-rtsp-server-1.0, "
                    "gstreamer1.0-plugins-{base,good,bad}); .ci/run installs them")
    caplog.set_level(logging.INFO)
    with RtspTestServer(shared / "data/epfl_terrace1/terrace1-c1.mp4") as server:
        cfg = parse_config({
            "cameras": [
                {"id": "live", "source": server.url("admin", "s3cretpw")},
                {"id": "file", "source": str(shared / "data/pets09_s2l1/vtest.avi"), "fps": 7},
            ],
            "streams": {"read_timeout_s": 2, "reconnect_initial_s": 0.2, "reconnect_max_s": 1, "connect_attempts": 5},
            "run": {"progress": False, "duration_s": 120},
        })
        pipeline = Pipeline(cfg, tmp_path)
        result = {}
        thread = threading.Thread(target=lambda: result.setdefault("summary", pipeline.run()), daemon=True)
        thread.start()
        summaries = pipeline.summaries
        _wait(lambda: "live" in summaries and summaries["live"].frames >= 20, 60, "20 live frames")

        server.stop()
        live_at_stop, file_at_stop = summaries["live"].frames, summaries["file"].frames
        # frames already buffered or in flight (reader buffer, socket, decoder) may still come; then nothing may
        live_settled = _settled(lambda: summaries["live"].frames, quiet_s=2.0, timeout=15)
        assert live_settled <= live_at_stop + 8, "live frames kept coming after the RTSP server was stopped"
        assert summaries["file"].frames > file_at_stop + 5, "the file camera stalled while the RTSP camera was down"

        server.start()
        _wait(lambda: summaries["live"].frames >= live_at_stop + 20, 60, "live frames after the restart")
        pipeline.stop()
        thread.join(60)
    summary = result["summary"]
    live, file = (next(c for c in summary.cameras if c.camera_id == k) for k in ("live", "file"))
    assert live.reconnects >= 1
    assert live.dropped > 0  # the stream (25 fps) outpaces the CPU detector: old frames are dropped, not queued
    # lag bounded by a few processing steps, not growing with the run: queued frames would lag by their count over
    # the processing rate (>10 s here); the bound widens on a machine so busy that one step takes more than 0.4 s
    step_s = 1.0 / max(live.fps, 1e-3)
    assert live.max_lag_s < max(2.0, 5.0 * step_s), f"live lag grew to {live.max_lag_s:.2f} s ({step_s:.2f} s/step)"
    assert file.status in ("stopped", "completed") and file.error is None and file.frames > 40
    con = sqlite3.connect(tmp_path / "events.db")
    frames = dict(con.execute("select camera_id, frames from cameras"))
    assert frames == {"live": live.frames, "file": file.frames}
    assert "s3cretpw" not in caplog.text
    assert "s3cretpw" not in con.execute("select config || source from runs, cameras").fetchone()[0]
