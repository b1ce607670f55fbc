"""Image folders: a MOTChallenge sequence (dir with img1/ and seqinfo.ini), its img1/ folder, or any folder of
jpg/png images, read in natural sort order."""

from __future__ import annotations

import configparser
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2

from core.types import Frame

from .base import FrameSource, StreamOptions, log

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
DEFAULT_FPS = 25.0


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def seqinfo_frame_rate(seq_dir: Path) -> float | None:
    """frameRate from a MOTChallenge seqinfo.ini in `seq_dir` (None when absent or unreadable)."""
    ini = seq_dir / "seqinfo.ini"
    if not ini.is_file():
        return None
    parser = configparser.ConfigParser()
    try:
        parser.read(ini)
        for section in parser.sections():
            for key, value in parser.items(section):
                if key.lower() == "framerate":
                    rate = float(value)
                    return rate if rate > 0 else None
    except (configparser.Error, ValueError, OSError):
        return None
    return None


class FolderSource(FrameSource):
    """Sorted images of a folder as frames; timestamp = start_time_s + index / fps (index = position in folder)."""

    is_live = False

    def __init__(
        self,
        camera_id: str,
        folder: str,
        *,
        fps: float | None = None,
        start_time_s: float = 0.0,
        max_frames: int | None = None,
        options: StreamOptions | None = None,
    ) -> None:
        super().__init__(camera_id, folder, options)
        root = Path(folder)
        img_dir = root / "img1" if (root / "img1").is_dir() else root
        seq_dir = root if img_dir != root else root.parent
        self.paths = sorted((p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if not self.paths:
            raise self.error(f"no jpg/png images in folder {img_dir}", "point the source at a video file or an image folder")
        self.start_time_s = float(start_time_s)
        self.max_frames = max_frames
        self.total_frames = len(self.paths) if max_frames is None else min(len(self.paths), max_frames)
        seq_fps = seqinfo_frame_rate(seq_dir)
        if fps:
            self.fps, origin = float(fps), "override"
        elif seq_fps:
            self.fps, origin = seq_fps, "seqinfo.ini frameRate"
        else:
            self.fps, origin = DEFAULT_FPS, "default"
        first = cv2.imread(str(self.paths[0]), cv2.IMREAD_COLOR)
        if first is not None:
            self.size = (int(first.shape[1]), int(first.shape[0]))
        self._closed = threading.Event()
        log.info("camera %s: image folder %s (%d images, %g fps from %s)", self.camera_id, img_dir,
                 len(self.paths), self.fps, origin)

    def frames(self) -> Iterator[Frame]:
        bad = 0
        for index, path in enumerate(self.paths):
            if self._closed.is_set() or (self.max_frames is not None and index >= self.max_frames):
                return
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                bad += 1
                self.stats.last_error = f"unreadable image {path.name}"
                log.warning("camera %s: skipping unreadable image %s", self.camera_id, path)
                if bad == len(self.paths):
                    raise self.error(f"no readable image in {path.parent}", "check the image files")
                continue
            self.stats.frames_read += 1
            yield Frame(self.camera_id, index, self.start_time_s + index / self.fps, image)

    def close(self) -> None:
        self._closed.set()
