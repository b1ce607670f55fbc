"""File outputs of a run: MOTChallenge text files, one per camera (`DIR/mot/<camera_id>.txt`)."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from pipeline.sinks import TrackSink
from core.types import Frame, Tracks


class MotWriter(TrackSink):
    """Writes `frame,id,x,y,w,h,score,-1,-1,-1` lines (frame 1-based, box top-left + size in px) per camera."""

    def __init__(self, directory: Path, flush_every: int = 100) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.flush_every = flush_every
        self._files: dict[str, TextIO] = {}
        self._since_flush: dict[str, int] = {}

    def path(self, camera_id: str) -> Path:
        return self.directory / f"{camera_id}.txt"

    def open_camera(self, camera_id: str, fps: float | None = None, size: tuple[int, int] | None = None) -> None:
        """Create (truncate) the camera's file, so a camera with no tracks still has one."""
        if camera_id not in self._files:
            self._files[camera_id] = open(self.path(camera_id), "w", encoding="ascii")
            self._since_flush[camera_id] = 0

    def on_tracks(self, frame: Frame, tracks: Tracks) -> None:
        self.write(frame.camera_id, frame.index, tracks)

    def write(self, camera_id: str, frame_index: int, tracks: Tracks) -> None:
        """Append one frame's tracks; `frame_index` is 0-based (written 1-based)."""
        self.open_camera(camera_id)
        f = self._files[camera_id]
        frame = frame_index + 1
        for tid, (x1, y1, x2, y2), score in zip(tracks.track_ids.tolist(), tracks.xyxy.tolist(), tracks.scores.tolist()):
            f.write(f"{frame},{tid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{score:.4f},-1,-1,-1\n")
        self._since_flush[camera_id] += 1
        if self._since_flush[camera_id] >= self.flush_every:
            f.flush()
            self._since_flush[camera_id] = 0

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
