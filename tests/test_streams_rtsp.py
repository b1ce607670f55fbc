"""Live RTSP tests: connection failure, reconnection after the camera restarts, bounded lag, no leaked secrets."""

from __future__ import annotations

import logging
import os
import subprocess
import time
import uuid

import pytest

from streams import CameraReader, SourceError, StreamOptions, open_source
from tests.rtsp_server import RtspTestServer, free_port

FAST = StreamOptions(read_timeout_s=2.0, connect_attempts=3, reconnect_initial_s=0.05, reconnect_max_s=0.4)


def test_unreachable_rtsp_fails_fast_and_clearly(caplog):
    caplog.set_level(logging.DEBUG, logger="mcsa.streams")
    port = free_port()  # nothing listens there
    uri = f"rtsp://user:secret@127.0.0.1:{port}/cam"
    src = open_source("c1", uri, options=FAST)
    assert src.is_live and src.display_uri == f"rtsp://***@127.0.0.1:{port}/cam"
    t0 = time.monotonic()
    with pytest.raises(SourceError) as err:
        for _ in src.frames():
            pass
    assert time.monotonic() - t0 < 5.0
    assert str(err.value) == (
        f"camera c1: cannot connect to rtsp://***@127.0.0.1:{port}/cam (Connection refused) after 3 attempts; "
        "check the URL, credentials and that the camera is reachable"
    )
    assert "secret" not in caplog.text and "user:" not in caplog.text

    reader = CameraReader(open_source("c1", uri, options=FAST))
    reader.start()
    deadline = time.monotonic() + 10
    while not reader.done and time.monotonic() < deadline:
        reader.get(timeout=0.1)
    assert reader.failed and reader.error.startswith("camera c1: cannot connect to rtsp://***@")


@pytest.fixture
def rtsp_server(shared):
    if not RtspTestServer.available():
        pytest.skip("no RTSP test server: apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad")
    with RtspTestServer(shared / "data" / "epfl_terrace1" / "terrace1-c0.mp4") as server:
        yield server


def _consume(reader: CameraReader, seconds: float, sleep_s: float) -> list[tuple[int, float]]:
    """(index, age at get in s) of the frames a slow consumer gets during `seconds`."""
    got = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        frame = reader.get(timeout=1.0)
        if frame is not None:
            assert frame.image.shape == (288, 360, 3)
            got.append((frame.index, time.time() - frame.timestamp_s))
        time.sleep(sleep_s)
    return got


def test_rtsp_reconnect_and_bounded_lag(rtsp_server, caplog):
    caplog.set_level(logging.DEBUG, logger="mcsa.streams")
    url = rtsp_server.url(user="user", password="secret")
    assert "secret" in url
    reader = CameraReader(open_source("c1", url, options=FAST))
    reader.start()
    try:
        first = _consume(reader, 2.5, sleep_s=0.2)  # consumer at ~5 fps, camera at 25 fps
        assert len(first) >= 5
        assert max(age for _, age in first) < 1.0  # never older than ~1 s: lag does not grow
        assert reader.stats.frames_dropped > 0
        assert reader.source.size == (360, 288) and reader.source.fps == 25.0
        indexes = [i for i, _ in first]
        assert indexes == sorted(indexes)

        rtsp_server.stop()  # the camera goes away ...
        time.sleep(0.7)
        rtsp_server.start()  # ... and comes back
        deadline = time.monotonic() + 15
        while reader.stats.reconnects < 1 and time.monotonic() < deadline:
            reader.get(timeout=0.2)
        assert reader.stats.reconnects >= 1
        after = _consume(reader, 1.5, sleep_s=0.2)
        assert len(after) >= 3 and max(age for _, age in after) < 1.0
        assert after[0][0] > indexes[-1]  # indexes keep counting across reconnects
        assert not reader.failed and not reader.done
    finally:
        t0 = time.monotonic()
        reader.stop()
        assert time.monotonic() - t0 < 2.0
    assert "secret" not in caplog.text
    assert "rtsp://***@127.0.0.1" in caplog.text
    assert "secret" not in (reader.stats.last_error or "")


def _all_command_lines() -> list[str]:
    """Every process's command line, as `ps -eo args` shows it (read from /proc: no truncation)."""
    lines = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    lines.append(fh.read().replace(b"\0", b" ").decode("utf-8", "replace"))
            except OSError:  # the process ended meanwhile
                pass
    return lines


def test_rtsp_password_never_on_a_command_line(rtsp_server, caplog):
    caplog.set_level(logging.DEBUG, logger="mcsa.streams")
    password = f"pw-{uuid.uuid4().hex}"  # unique: no other process on the machine can hold it by chance
    url = rtsp_server.url(user="operator", password=password)
    assert password in url
    reader = CameraReader(open_source("c1", url, options=FAST))
    reader.start()
    try:
        got = _consume(reader, 2.0, sleep_s=0.05)
        assert len(got) >= 5  # frames still arrive through the hidden URL
        decoder = reader.source._proc
        assert decoder is not None and decoder.poll() is None
        with open(f"/proc/{decoder.pid}/cmdline", "rb") as fh:
            decoder_args = fh.read().replace(b"\0", b" ").decode()
        assert "ffmpeg" in decoder_args and "-f concat" in decoder_args  # the live ffmpeg child, URL off its argv
        leaked = [line for line in _all_command_lines() if password in line]
        assert leaked == []
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=10).stdout
        assert password not in ps and "operator:" not in ps
    finally:
        reader.stop()
    assert password not in caplog.text
