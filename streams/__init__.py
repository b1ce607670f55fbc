"""Frame sources for mcsa: video files, image folders, RTSP/HTTP network cameras and webcams, each read by a
`CameraReader` in its own thread. Credentials in URIs are never logged (see `redact_uri`)."""

from .base import FrameSource, SourceError, SourceStats, StreamOptions
from .factory import open_source
from .ffmpeg_util import ffmpeg_exe
from .file_source import FileSource
from .folder_source import FolderSource
from .reader import CameraReader
from .redact import redact_text, redact_uri
from .rtsp_source import LiveStreamSource, RtspSource
from .webcam_source import WebcamSource

__all__ = [
    "CameraReader", "FileSource", "FolderSource", "FrameSource", "LiveStreamSource", "RtspSource", "SourceError",
    "SourceStats", "StreamOptions", "WebcamSource", "ffmpeg_exe", "open_source", "redact_text", "redact_uri",
]
