"""`open_source`: pick the right FrameSource for a uri and validate what can be checked up front.

URL sources are found by scheme in the `SOURCES` registry: a new kind of network source is one module with a
`FrameSource` subclass and one line, `register_source("name", schemes=("myscheme",))(MySource)` (or as a class
decorator). Webcam indexes, image folders and video files are recognised from the uri itself.
"""

from __future__ import annotations

import os
import re

from core.registry import Registry

from .base import FrameSource, SourceError, StreamOptions
from .file_source import FileSource
from .folder_source import FolderSource
from .redact import redact_uri
from .rtsp_source import LIVE_SCHEMES, LiveStreamSource
from .webcam_source import WebcamSource

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

SOURCES: Registry = Registry("source")
_SCHEMES: dict[str, str] = {}  # URL scheme -> registered source name


def register_source(name: str, schemes: tuple[str, ...]):
    """Register a `FrameSource` class for URLs of these schemes; it is built as cls(camera_id, url, fps=, options=)."""

    def decorator(cls):
        SOURCES.register(name)(cls)
        for scheme in schemes:
            _SCHEMES[scheme.lower()] = name
        return cls

    return decorator


register_source("live", schemes=tuple(LIVE_SCHEMES))(LiveStreamSource)


def open_source(
    camera_id: str,
    uri: str | int,
    *,
    fps: float | None = None,
    start_time_s: float = 0.0,
    max_frames: int | None = None,
    options: StreamOptions | None = None,
) -> FrameSource:
    """A FrameSource for `uri`: rtsp(s)/http(s)/rtmp/srt/udp URL (live), webcam index (int or digits, live),
    image folder, or video file. fps: per-camera override (frames/s); start_time_s: clock offset of frame 0 (file and
    folder sources); max_frames: stop after this many frames (files/folders; live sources ignore it).
    Raises SourceError for a missing file, an unreadable video or an unsupported scheme."""
    options = options or StreamOptions()
    if fps is not None and fps <= 0:
        raise SourceError(f"camera {camera_id}: fps must be positive, got {fps} (fix the camera's fps in the config)")
    if isinstance(uri, bool):
        raise SourceError(f"camera {camera_id}: invalid source {uri!r} (give a file, folder, URL or webcam index)")
    if isinstance(uri, int) or (isinstance(uri, str) and uri.strip().isdigit()):
        return WebcamSource(camera_id, int(uri), fps=fps, options=options)
    text = str(uri).strip()
    if not text:
        raise SourceError(f"camera {camera_id}: empty source (set the camera's source in the config or --source)")
    match = _SCHEME_RE.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme == "file":
            text = text[len("file://"):]
        elif scheme in _SCHEMES:
            if not re.match(r"^[A-Za-z0-9+.\-]+://[^/\s]+", text):
                raise SourceError(f"camera {camera_id}: URL without a host: {redact_uri(text)} "
                                  "(write it as rtsp://[user:pass@]host[:port]/path)")
            return SOURCES.get(_SCHEMES[scheme])(camera_id, text, fps=fps, options=options)
        else:
            raise SourceError(
                f"camera {camera_id}: unsupported source scheme '{scheme}://' in {redact_uri(text)} "
                f"(use one of {', '.join(s + '://' for s in sorted(_SCHEMES))}, a video file, an image folder or a "
                "webcam index)"
            )
    path = os.path.expanduser(text)
    if os.path.isdir(path):
        return FolderSource(camera_id, path, fps=fps, start_time_s=start_time_s, max_frames=max_frames, options=options)
    if not os.path.exists(path):
        raise SourceError(f"camera {camera_id}: video file not found: {path} (check the path in the config or --source)")
    return FileSource(camera_id, path, fps=fps, start_time_s=start_time_s, max_frames=max_frames, options=options)
