"""`TrackletCropper`: per-camera crops of confirmed tracks, kept in bounded ring buffers, cut into clips.

Memory is bounded whatever the number of tracks: at most `max_tracks` buffers of at most `window` crops each
(H x W x 3 bytes per crop; the defaults hold <= 64 x 16 x 256 x 128 x 3 B = 100 MB per camera, typically far less).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from pipeline.reid.clips import ClipRequest
from pipeline.reid.schedule import ClipSchedule
from core.types import Frame, Tracks


@dataclass
class _Crop:
    image: np.ndarray  # uint8 (H, W, 3) RGB
    timestamp_s: float
    box: np.ndarray  # float32 (4,)
    quality: float


@dataclass
class _TrackBuffer:
    crops: deque
    frames_seen: int = 0
    last_index: int = -1
    new_since_emit: int = 0


def covered_matrix(xyxy: np.ndarray) -> np.ndarray:
    """(N, N): the fraction of box i's area (boxes (N, 4) xyxy) that box j covers (1 on the diagonal)."""
    x1 = np.maximum(xyxy[:, None, 0], xyxy[None, :, 0])
    y1 = np.maximum(xyxy[:, None, 1], xyxy[None, :, 1])
    x2 = np.minimum(xyxy[:, None, 2], xyxy[None, :, 2])
    y2 = np.minimum(xyxy[:, None, 3], xyxy[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = np.maximum((xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]), 1e-6)
    return inter / area[:, None]


def covered_fraction(xyxy: np.ndarray) -> np.ndarray:
    """For each box (N, 4), the largest fraction of its area covered by any one other box -> (N,)."""
    n = len(xyxy)
    if n < 2:
        return np.zeros(n, np.float32)
    frac = covered_matrix(xyxy)
    np.fill_diagonal(frac, 0.0)
    return frac.max(axis=1).astype(np.float32)


def crop_quality(box: np.ndarray, covered: float, w_img: int, h_img: int, min_box_height: float = 40.0,
                 border_margin: float = 2.0, max_overlap: float = 0.6) -> float:
    """Quality of a person crop, 0..1 (0: unusable): box height (full marks at 2 x `min_box_height` px), not cut by
    the image border (`border_margin` px), and the part not covered by another box (at most `max_overlap`)."""
    x1, y1, x2, y2 = np.asarray(box, np.float64).tolist()
    height = y2 - y1
    if not np.isfinite(height) or height < min_box_height or x2 - x1 < 2:
        return 0.0
    m = border_margin
    if x1 < m or y1 < m or x2 > w_img - m or y2 > h_img - m:
        return 0.0
    if covered > max_overlap:
        return 0.0
    return float(min(1.0, height / (2.0 * min_box_height)) * (1.0 - covered))


def frame_crop_quality(xyxy: np.ndarray, w_img: int, h_img: int, min_box_height: float = 40.0,
                       border_margin: float = 2.0, max_overlap: float = 0.6) -> np.ndarray:
    """`crop_quality` of every box (N, 4) of one frame, each box covered by the others (`covered_fraction`) -> (N,);
    0 where the pipeline's Re-ID would not crop it. Used where crops are gated outside a run (tracklet export,
    benches) so they gate exactly as the cropper does."""
    covered = covered_fraction(xyxy)
    return np.array([crop_quality(b, c, w_img, h_img, min_box_height, border_margin, max_overlap)
                     for b, c in zip(xyxy, covered.tolist())], np.float64).reshape(len(xyxy))


RESIZE = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def crop_resize(image: np.ndarray, box: np.ndarray, size: tuple[int, int], resize: str = "bilinear") -> np.ndarray:
    """The box (xyxy px, clipped to the image) of a BGR image, resized to size (H, W) with `resize` (bilinear |
    bicubic, as the model was trained) -> uint8 RGB (H, W, 3)."""
    h_img, w_img = image.shape[:2]
    x1, y1 = min(max(int(box[0]), 0), w_img - 1), min(max(int(box[1]), 0), h_img - 1)
    x2, y2 = min(int(np.ceil(box[2])), w_img), min(int(np.ceil(box[3])), h_img)
    patch = image[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)]
    resized = cv2.resize(patch, (int(size[1]), int(size[0])), interpolation=RESIZE[resize])
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def sample_indices(n: int, t: int) -> np.ndarray:
    """T indices spread evenly over n buffered crops (repeating the last ones when n < T); deterministic."""
    if n >= t:
        return np.linspace(0, n - 1, t).round().astype(int)
    return np.sort(np.resize(np.arange(n), t))


@dataclass(kw_only=True)
class TrackletCropper:
    """Crops confirmed tracks of ONE camera and emits a `ClipRequest` every `clip_every` frames per track and when a
    track ends (unseen for `end_after_frames`) or the camera ends (`flush`).

    input_size: (H, W) crop size in px; clip_len: T crops per clip, spread over the track's last `window` crops.
    Quality gates: box height >= `min_box_height` px; not cut by the image border (`border_margin` px); at most
    `max_overlap` of the box covered by another track's box. schedule: an optional `ClipSchedule` that skips periodic
    clips of tracks whose appearance is stable (fed the clip results through `on_result`).
    """

    camera_id: str
    input_size: tuple[int, int] = (256, 128)
    clip_len: int = 4
    clip_every: int = 10
    window: int = 16
    min_box_height: float = 40.0
    border_margin: float = 2.0
    max_overlap: float = 0.6
    max_tracks: int = 64
    end_after_frames: int = 30
    resize: str = "bilinear"
    schedule: ClipSchedule | None = None
    _buffers: "OrderedDict[int, _TrackBuffer]" = field(default_factory=OrderedDict, init=False, repr=False)
    crops_rejected: int = field(default=0, init=False)
    frames: int = field(default=0, init=False)  # frames seen (the next frame's 0-based count)

    def on_tracks(
        self, frame: Frame, tracks: Tracks, has_embedding: Callable[[int], bool] | None = None
    ) -> list[ClipRequest]:
        """Buffer this frame's crops and return the clips that are due (periodic and ended tracks)."""
        out: list[ClipRequest] = []
        h_img, w_img = frame.image.shape[:2]
        if self.schedule is not None:
            self.schedule.advance(self.frames, frame.timestamp_s)
        covered = covered_fraction(tracks.xyxy)
        for i, tid in enumerate(tracks.track_ids.tolist()):
            buf = self._buffers.get(tid)
            if buf is None:
                buf = self._buffers[tid] = _TrackBuffer(deque(maxlen=self.window))
            self._buffers.move_to_end(tid)
            buf.frames_seen += 1
            buf.last_index = frame.index
            box = tracks.xyxy[i]
            if self.schedule is not None:
                self.schedule.observe(tid, box, float(covered[i]))
            quality = self._quality(box, covered[i], w_img, h_img)
            if quality > 0:
                buf.crops.append(_Crop(self._crop(frame.image, box), frame.timestamp_s, box.copy(), quality))
                buf.new_since_emit += 1
            else:
                self.crops_rejected += 1
            if (buf.new_since_emit and buf.frames_seen % self.clip_every == 0
                    and (self.schedule is None or self.schedule.due(tid, frame.timestamp_s))):
                out.append(self._emit(tid, buf, "periodic", has_embedding, frame.timestamp_s))
                if self.schedule is not None:
                    self.schedule.emitted(tid, frame.timestamp_s, box)
        # tracks unseen for too long have ended; too many buffers: evict the least recently seen
        for tid in [t for t, b in self._buffers.items() if frame.index - b.last_index > self.end_after_frames]:
            out.extend(self._finish(tid, has_embedding))
        while len(self._buffers) > self.max_tracks:
            out.extend(self._finish(next(iter(self._buffers)), has_embedding))
        self.frames += 1
        return out

    def flush(self, has_embedding: Callable[[int], bool] | None = None) -> list[ClipRequest]:
        """The camera ended: final clips of every buffered track; buffers are released."""
        out: list[ClipRequest] = []
        for tid in list(self._buffers):
            out.extend(self._finish(tid, has_embedding))
        return out

    def on_result(self, track_id: int, embedding: np.ndarray, cut_frame: int = -1,
                  cut_t_s: float | None = None) -> None:
        """A clip result of one of this camera's tracks (for the schedule; in the order the clips were cut), with
        the clip's `cut_frame` / `cut_t_s` (the schedule's result lag counts from them)."""
        if self.schedule is not None:
            self.schedule.on_result(track_id, embedding, cut_frame, cut_t_s)

    @property
    def buffered_crops(self) -> int:
        return sum(len(b.crops) for b in self._buffers.values())

    @property
    def buffered_tracks(self) -> int:
        return len(self._buffers)

    # ---- internals ------------------------------------------------------------------------------------------------
    def _quality(self, box: np.ndarray, covered: float, w_img: int, h_img: int) -> float:
        return crop_quality(box, covered, w_img, h_img, self.min_box_height, self.border_margin, self.max_overlap)

    def _crop(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        return crop_resize(image, box, self.input_size, self.resize)

    def _emit(self, tid: int, buf: _TrackBuffer, reason: str, has_embedding,
              t_s: float | None = None) -> ClipRequest:
        crops = list(buf.crops)
        idx = sample_indices(len(crops), self.clip_len)
        chosen = [crops[i] for i in idx]
        buf.new_since_emit = 0
        return ClipRequest(
            camera_id=self.camera_id,
            track_id=int(tid),
            crops=np.stack([c.image for c in chosen]),
            timestamps_s=np.array([c.timestamp_s for c in chosen], np.float64),
            boxes=np.stack([c.box for c in chosen]).astype(np.float32),
            quality=float(np.mean([c.quality for c in chosen])),
            reason=reason,
            has_embedding=bool(has_embedding(tid)) if has_embedding else False,
            cut_frame=self.frames if t_s is not None else -1,
            cut_t_s=float(t_s) if t_s is not None else float("nan"),
        )

    def _finish(self, tid: int, has_embedding) -> list[ClipRequest]:
        buf = self._buffers.pop(tid)
        if self.schedule is not None:
            self.schedule.forget(tid)
        if buf.new_since_emit and buf.crops:
            return [self._emit(tid, buf, "end", has_embedding)]
        return []
