"""Local live-stream servers for tests: they play a video file to clients over the network, can be stopped and
restarted on the same port (to test reconnection), and hand out URLs with optional (ignored) credentials.

* `RtspTestServer`: a real RTSP server (GStreamer's gst-rtsp-server, run by the system `python3` through PyGObject).
  ffmpeg cannot serve RTSP to a pulling client: `-rtsp_flags listen` exists only on its RTSP *demuxer* (it waits
  for a publisher), so an ffmpeg-only RTSP camera is impossible. Needs the Debian packages `python3-gi`,
  `gir1.2-gst-rtsp-server-1.0`, `gstreamer1.0-plugins-base`, `gstreamer1.0-plugins-good` and
  `gstreamer1.0-plugins-bad`; `RtspTestServer.available()` says whether they are there (tests skip otherwise).
  Serves H.264 in MP4/MOV files (`filesrc ! qtdemux ! h264parse ! rtph264pay`), each client from the start (so a
  60 s video streams for 60 s per connection).

`RtspTestServer(video_path, port=None).start()` / `.stop()` / `.restart()` / `.url(user=None, password=None)`, usable as
context managers; `port` is a free local port when None.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

SYSTEM_PYTHON = "/usr/bin/python3"

_GST_SCRIPT = r"""
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer
Gst.init(None)
port, path, mount = sys.argv[1], sys.argv[2], sys.argv[3]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
location = path.replace("\\", "\\\\").replace('"', '\\"')
factory.set_launch(f'( filesrc location="{location}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )')
factory.set_shared(False)
server.get_mount_points().add_factory(mount, factory)
if server.attach(None) == 0:
    sys.exit("cannot listen on port " + port)
print("ready", flush=True)
GLib.MainLoop().run()
"""


class ServerUnavailable(RuntimeError):
    """The tools this server needs are not installed (tests should skip)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_listening(port: int) -> bool:
    """True when something listens on 127.0.0.1:port (read from /proc/net/tcp: no connection is made, since an
    ffmpeg listen-mode server would take a probe connection as its one client)."""
    try:
        with open("/proc/net/tcp") as fh:
            rows = fh.read().splitlines()[1:]
    except OSError:
        return False
    want = f"{port:04X}"
    for row in rows:
        parts = row.split()
        if len(parts) > 3 and parts[1].endswith(":" + want) and parts[3] == "0A":
            return True
    return False


class _LiveTestServer:
    scheme = ""

    def __init__(self, video_path: str | os.PathLike, port: int | None = None, mount: str = "/cam") -> None:
        self.video_path = str(video_path)
        if not Path(self.video_path).is_file():
            raise FileNotFoundError(self.video_path)
        self.port = port or free_port()
        self.mount = mount if mount.startswith("/") else "/" + mount
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._running = threading.Event()

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """scheme://[user[:password]@]127.0.0.1:PORT/cam (credentials are accepted and ignored by the server)."""
        auth = ""
        if user is not None:
            auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password is not None else "") + "@"
        return f"{self.scheme}://{auth}127.0.0.1:{self.port}{self.mount}"

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def restart(self, pause_s: float = 0.0) -> None:
        """Stop (clients are cut off), wait pause_s seconds, start again on the same port."""
        self.stop()
        time.sleep(pause_s)
        self.start()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _kill(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def _wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not is_listening(self.port):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{type(self).__name__} did not listen on port {self.port} within {timeout_s} s")
            time.sleep(0.02)

    def start(self) -> "_LiveTestServer":
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class RtspTestServer(_LiveTestServer):
    """A real RTSP server (gst-rtsp-server) playing `video_path` (H.264 MP4) at rtsp://127.0.0.1:PORT/cam."""

    scheme = "rtsp"

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def available() -> bool:
        """Whether the system python3 has PyGObject with GstRtspServer and the needed GStreamer elements."""
        if not os.path.exists(SYSTEM_PYTHON):
            return False
        check = (
            "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0');"
            "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
            "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in "
            "('filesrc','qtdemux','h264parse','rtph264pay')) else 1)"
        )
        try:
            return subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    def start(self) -> "RtspTestServer":
        """Start serving (returns once the port listens); no-op when running."""
        if self._running.is_set():
            return self
        if not self.available():
            raise ServerUnavailable(
                "RTSP test server needs GStreamer's RTSP server: apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        self._proc = subprocess.Popen(
            [SYSTEM_PYTHON, "-c", _GST_SCRIPT, str(self.port), self.video_path, self.mount],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        self._running.set()
        self._wait_listening(15.0)
        return self

    def stop(self) -> None:
        """Kill the server (connected clients lose the stream); idempotent."""
        self._running.clear()
        self._kill()


if __name__ == "__main__":  # manual use: python tests/rtsp_server.py VIDEO
    server = RtspTestServer(sys.argv[1])
    with server:
        print(server.url(), flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
