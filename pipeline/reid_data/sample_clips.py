"""Real test clips for parity checks and throughput benchmarks: crops of MOT boxes cut from a video."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from pipeline.reid.cropper import crop_resize


def clips_from_mot(video: str | Path, boxes: str | Path, count: int, clip_len: int, size: tuple[int, int],
                   min_height: float = 40.0, frame_step: int = 3, max_frames: int | None = None) -> np.ndarray:
    """Up to `count` clips uint8 RGB (N, T, H, W, 3): each clip is T crops of one person (MOT id) from every
    `frame_step`-th frame, boxes at least `min_height` px high, resized to size (H, W) as the pipeline does."""
    video, boxes = Path(video), Path(boxes)
    if not video.is_file() or not boxes.is_file():
        raise FileNotFoundError(f"clips need a video and its MOT boxes: {video} / {boxes} (is ../shared there?)")
    rows = np.loadtxt(boxes, delimiter=",", ndmin=2)
    by_frame: dict[int, np.ndarray] = defaultdict(lambda: np.zeros((0, rows.shape[1])))
    for f in np.unique(rows[:, 0]).astype(int):
        by_frame[f] = rows[rows[:, 0] == f]
    cap = cv2.VideoCapture(str(video))
    pending: dict[int, list[np.ndarray]] = defaultdict(list)
    clips: list[np.ndarray] = []
    index = 0
    try:
        while len(clips) < count:
            ok, image = cap.read()
            if not ok or (max_frames is not None and index >= max_frames):
                break
            index += 1  # MOT frames are 1-based
            if index % frame_step:
                continue
            for r in by_frame.get(index, ()):
                if r[5] < min_height:
                    continue
                crops = pending[int(r[1])]
                crops.append(crop_resize(image, np.array([r[2], r[3], r[2] + r[4], r[3] + r[5]]), size))
                if len(crops) == clip_len:
                    clips.append(np.stack(crops))
                    pending[int(r[1])] = []
                    if len(clips) == count:
                        break
    finally:
        cap.release()
    if not clips:
        raise ValueError(f"no clip of {clip_len} crops >= {min_height} px in {video} with {boxes}")
    return np.stack(clips)


def terrace_clips(shared: Path, count: int, clip_len: int, size: tuple[int, int], camera: str = "c0") -> np.ndarray:
    """`clips_from_mot` on EPFL Terrace-1 (the shared folder's `data/epfl_terrace1`)."""
    d = Path(shared) / "data" / "epfl_terrace1"
    return clips_from_mot(d / f"terrace1-{camera}.mp4", d / f"gt_{camera}" / "gt.txt", count, clip_len, size)
