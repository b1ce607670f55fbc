"""ffmpeg plumbing: locating the binary, probing a file from `ffmpeg -i` output, spawning a rawvideo decoder through
ffmpeg-python, draining its stderr in a thread and stopping it promptly.

Network URLs never go on ffmpeg's command line (which every local user can read with `ps`): `spawn_decoder(...,
hide_uri=True)` writes a one-entry ffconcat script (`file '<url>'` plus `option` lines for the input options) into an
anonymous pipe and gives ffmpeg `-f concat -i pipe:<fd>`; ffmpeg's concat demuxer opens the URL with those options.
Needs ffmpeg >= 5 (the ffconcat `option` directive)."""

from __future__ import annotations

import functools
import re
import shutil
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import ffmpeg

GLOBAL_ARGS = ["-nostdin", "-hide_banner", "-nostats", "-loglevel", "info"]

# "Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 360x288, ..., 25 fps, ..."
_SIZE_RE = re.compile(r"(?<![\w/.])(\d{2,5})x(\d{2,5})(?![\w])")
_FPS_RE = re.compile(r"(\d+(?:\.\d+)?)(k?) fps\b")
_TBR_RE = re.compile(r"(\d+(?:\.\d+)?)(k?) tbr\b")
_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """ffmpeg on PATH, else the binary shipped by imageio-ffmpeg."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=1)
def ffmpeg_major_version() -> int:
    """Major version of ffmpeg_exe() (git builds without a number count as new: 99)."""
    try:
        out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 99
    match = re.search(r"ffmpeg version n?(\d+)\.", out)
    return int(match.group(1)) if match else 99


def sync_args() -> dict[str, str]:
    """Output option that passes every decoded frame through (no duplicates/drops for variable frame rates)."""
    return {"fps_mode": "passthrough"} if ffmpeg_major_version() >= 5 else {"vsync": "passthrough"}


def socket_timeout_args(uri: str, timeout_s: float) -> dict[str, int]:
    """Input option for a socket read timeout in microseconds (rtsp: -timeout since ffmpeg 5, -stimeout before)."""
    micros = max(1, int(timeout_s * 1_000_000))
    if uri.lower().startswith(("rtsp://", "rtsps://")) and ffmpeg_major_version() < 5:
        return {"stimeout": micros}
    return {"timeout": micros} if uri.lower().startswith(("rtsp://", "rtsps://", "http://", "https://")) else {}


@dataclass
class VideoStreamInfo:
    """What an ffmpeg `Stream #..: Video:` line and the container header say. fps/duration may be None."""

    width: int
    height: int
    fps: float | None = None
    duration_s: float | None = None

    @property
    def expected_frames(self) -> int | None:
        """Frame count estimated from the container duration and frame rate (None when unknown)."""
        if self.fps and self.duration_s and self.duration_s > 0:
            return int(round(self.duration_s * self.fps))
        return None


def _rate(match: re.Match[str] | None) -> float | None:
    if not match:
        return None
    value = float(match.group(1)) * (1000.0 if match.group(2) else 1.0)
    return value if value > 0 else None


def parse_video_line(line: str) -> VideoStreamInfo | None:
    """Parse one `Stream #i:j...: Video: ...` line of ffmpeg's log; None if it is not one or has no size."""
    if "Stream #" not in line or "Video:" not in line:
        return None
    tail = line.split("Video:", 1)[1]
    size = _SIZE_RE.search(tail)
    if not size:
        return None
    fps = _rate(_FPS_RE.search(tail)) or _rate(_TBR_RE.search(tail))
    return VideoStreamInfo(int(size.group(1)), int(size.group(2)), fps)


def parse_duration(text: str) -> float | None:
    """Seconds from the first `Duration: HH:MM:SS.ss` of ffmpeg's log (None for N/A)."""
    match = _DURATION_RE.search(text)
    if not match:
        return None
    h, m, s = match.groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


def error_cause(lines: list[str] | str, uri: str | None = None) -> str:
    """The most telling error of ffmpeg's log in one line, e.g. 'Invalid data found when processing input (moov
    atom not found)', without '[tcp @ 0x..]' prefixes, the input's path or credentials."""
    from .redact import redact_text

    if isinstance(lines, str):
        lines = lines.splitlines()
    prefix = re.compile(r"^\[[^\]]*@ ?0x[0-9a-f]+\]\s*")
    keys = ("error", "invalid", "refused", "not found", "no such", "failed", "denied", "unauthorized", "timed out",
            "timeout", "does not contain", "unsupported", "could not", "unable", "no route")
    status = re.compile(r"\b(401|403|404)\b")  # HTTP / RTSP status codes, as whole numbers

    def telling(line: str) -> bool:
        text = line.replace(uri, "") if uri else line  # the URL itself (a port like 42403) tells nothing
        return any(k in text.lower() for k in keys) or bool(status.search(text))

    cleaned = [prefix.sub("", ln.strip()) for ln in lines if ln.strip() and not ln.lstrip().startswith("frame=")]
    hits = [ln for ln in cleaned if telling(ln)]
    if not hits:
        return redact_text(cleaned[-1] if cleaned else "no output from ffmpeg", uri)
    generic = re.compile(r"^(Error opening input files?:?\s*|Error opening input:\s*)", re.IGNORECASE)
    main = generic.sub("", hits[-1]).strip()
    if uri and main.startswith("file " + uri):
        main = "cannot open input"
    details = [generic.sub("", h).strip() for h in hits if not h.lower().startswith("error opening input")]
    details = [d for d in details if d and d != main and "Connection to tcp://" not in d]
    cause = f"{main} ({details[0]})" if details else main
    if uri:
        cause = cause.replace(f"{uri}: ", "").replace(uri, "<input>")
    return redact_text(cause, uri)


class StderrDrain:
    """Reads a process's stderr in a daemon thread (so ffmpeg never blocks on it), keeps the last lines and
    calls `on_line` for each line."""

    def __init__(self, stream, on_line: Callable[[str], None] | None = None, keep: int = 80) -> None:
        self.lines: deque[str] = deque(maxlen=keep)
        self.all_text_head: list[str] = []  # the first lines (header: Duration, streams) are kept whole
        self._on_line = on_line
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(stream,), name="mcsa-ffmpeg-stderr", daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()
                if not line:
                    continue
                self.lines.append(line)
                if len(self.all_text_head) < 200:
                    self.all_text_head.append(line)
                if self._on_line:
                    try:
                        self._on_line(line)
                    except Exception:  # a parsing bug must never stop the draining
                        pass
        except (OSError, ValueError):
            pass
        finally:
            self.finished.set()

    def join(self, timeout: float = 1.0) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        return "\n".join(self.lines)


class OutputSizeWatcher:
    """Watches ffmpeg's log for the output rawvideo stream (`Output #0` ... `Video: rawvideo ..., WxH`) and the
    input video stream, signalling `ready` once the output frame size is known."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.output: VideoStreamInfo | None = None
        self.input: VideoStreamInfo | None = None
        self.duration_s: float | None = None
        self._in_output = False

    def __call__(self, line: str) -> None:
        if line.startswith("Output #"):
            self._in_output = True
            return
        if line.startswith("Input #"):
            self._in_output = False
            return
        if self.duration_s is None and "Duration:" in line:
            self.duration_s = parse_duration(line)
        info = parse_video_line(line)
        if info is None:
            return
        if self._in_output:
            if self.output is None:
                self.output = info
                self.ready.set()
        elif self.input is None:
            self.input = info


def _widen_pipe(pipe, size: int = 1 << 20) -> None:
    """Linux: raise the pipe's buffer from 64 KiB to up to 1 MiB, so a raw frame crosses in a few reads instead of
    dozens (fewer wake-ups of the reader thread, less GIL traffic beside the detector). Best effort."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, size)
    except (ImportError, AttributeError, OSError, ValueError):
        pass


# protocols a network camera URL may need (the concat demuxer otherwise restricts what its entry may open)
HIDDEN_URI_PROTOCOLS = "pipe,rtsp,rtsps,rtp,srtp,tcp,udp,tls,crypto,data,http,https,httpproxy,rtmp,rtmps,rtmpt,srt"


class HiddenUriUnsupported(RuntimeError):
    """The ffmpeg found is too old to take a URL off its command line; the message names it and the fix."""


def _ffconcat_quote(text: str) -> str:
    """Quote a value for an ffconcat script line: '...' with embedded quotes as '\\'' (ffmpeg's own escaping)."""
    if "\n" in text or "\r" in text:
        raise ValueError("a stream URL cannot contain a line break")
    return "'" + text.replace("'", "'\\''") + "'"


def ffconcat_script(uri: str, input_kwargs: dict | None = None) -> str:
    """A one-entry ffconcat script opening `uri` with `input_kwargs` as its open options (e.g. rtsp_transport)."""
    lines = ["ffconcat version 1.0", f"file {_ffconcat_quote(uri)}"]
    for key, value in (input_kwargs or {}).items():
        lines.append(f"option {key} {_ffconcat_quote(str(value))}")
    return "\n".join(lines) + "\n"


def decoder_command(uri: str, input_kwargs: dict | None = None, hidden_fd: int | None = None) -> list[str]:
    """ffmpeg argv for a rawvideo bgr24 decoder of the first video stream; with hidden_fd the input is the
    ffconcat script on that fd (`-f concat -safe 0 -i pipe:<fd>`), so the URL is not on the argv."""
    if hidden_fd is None:
        stream = ffmpeg.input(uri, **(input_kwargs or {}))["v:0"]
    else:
        stream = ffmpeg.input(f"pipe:{hidden_fd}", f="concat", safe=0,
                              protocol_whitelist=HIDDEN_URI_PROTOCOLS)["v:0"]
    out = stream.output("pipe:", format="rawvideo", pix_fmt="bgr24", an=None, sn=None, **sync_args())
    return out.compile(cmd=[ffmpeg_exe(), *GLOBAL_ARGS])


def spawn_decoder(
    uri: str,
    input_kwargs: dict | None = None,
    on_line: Callable[[str], None] | None = None,
    nice: int = 0,
    hide_uri: bool = False,
) -> tuple[subprocess.Popen, StderrDrain]:
    """Start `ffmpeg -i uri -map 0:v:0 -f rawvideo -pix_fmt bgr24 pipe:` via ffmpeg-python; stderr drained.

    hide_uri: hand the URL (and input_kwargs) to ffmpeg through an ffconcat script on an inherited pipe instead of
    the command line (for URLs with credentials); raises HiddenUriUnsupported with ffmpeg < 5.
    nice > 0 lowers the decoder's CPU priority (Linux: SCHED_IDLE, elsewhere nice): a file decoder that reads ahead
    then runs on the cycles the detector leaves idle instead of pre-empting its threads.
    """
    if not hide_uri:
        cmd = decoder_command(uri, input_kwargs)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    else:
        if ffmpeg_major_version() < 5:
            raise HiddenUriUnsupported(
                f"{ffmpeg_exe()} is ffmpeg {ffmpeg_major_version()}: too old to read a stream URL off its command "
                "line; install ffmpeg >= 5 (or take the old one off PATH: imageio-ffmpeg's binary is used then)"
            )
        script = ffconcat_script(uri, input_kwargs).encode("utf-8")
        read_fd, write_fd = os.pipe()
        try:
            os.write(write_fd, script)  # a few hundred bytes: fits the pipe buffer, never blocks
        finally:
            os.close(write_fd)
        try:
            proc = subprocess.Popen(decoder_command(uri, input_kwargs, hidden_fd=read_fd), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, pass_fds=(read_fd,))
        finally:
            os.close(read_fd)
    try:  # own process group: a Ctrl-C at the terminal reaches the pipeline, which then stops its decoders itself
        os.setpgid(proc.pid, proc.pid)
    except (AttributeError, OSError):
        pass
    _widen_pipe(proc.stdout)
    if nice > 0:
        try:  # Linux SCHED_IDLE: the decoder runs only on cycles nobody else wants (nice alone still takes a share)
            os.sched_setscheduler(proc.pid, os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError):
            try:
                os.setpriority(os.PRIO_PROCESS, proc.pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + int(nice)))
            except (AttributeError, OSError):  # the process is gone already, or not permitted: decoding still works
                pass
    drain = StderrDrain(proc.stderr, on_line)
    return proc, drain


def stop_process(proc: subprocess.Popen | None, grace_s: float = 0.5) -> None:
    """Terminate (then kill) a subprocess and close its pipes; returns within ~grace_s + a little."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(1.0)
            except subprocess.TimeoutExpired:
                pass
        except OSError:
            pass
    for pipe in (proc.stdout, proc.stderr, proc.stdin):
        if pipe is not None:
            try:
                pipe.close()
            except (OSError, ValueError):
                pass


def probe_video(path: str, timeout_s: float = 30.0) -> tuple[VideoStreamInfo | None, list[str]]:
    """Read the header of `path` with `ffmpeg -i` (ffprobe is not shipped by imageio-ffmpeg).

    Returns (info of the first video stream or None, ffmpeg's log lines).
    """
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", path]
    started = time.monotonic()
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, [f"ffmpeg did not read the header within {time.monotonic() - started:.0f} s"]
    lines = res.stderr.decode("utf-8", "replace").splitlines()
    info = None
    for line in lines:
        if line.lstrip().startswith("Output #"):
            break
        info = parse_video_line(line)
        if info is not None:
            break
    if info is not None:
        info.duration_s = parse_duration("\n".join(lines))
    return info, lines
