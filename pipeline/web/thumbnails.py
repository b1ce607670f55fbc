"""`ThumbnailStage` (stage `thumbnails`): keeps the best view of every track as a small JPEG for the store.

Per camera and track it scores each frame's box with the Re-ID cropper's quality (size, not cut by the border, not
covered by another box; `pipeline.reid.cropper.crop_quality`) times a sharpness factor (variance of the Laplacian of
the crop; a box that fails a gate scores at most `POOR_VIEW`, so every track gets a thumbnail, and a clear view
replaces it), keeps the best crop resized to `height` px (aspect kept, width at most `height`), and hands it on as a
`Thumbnail` message (`step.thumbnails`, `end.thumbnails`; the store stage records it in `track_thumbnails`) when the
track ends (unseen `end_after_s`), when the camera ends, at the run's end, and while the track is alive at most every
`refresh_s` when it has improved (so the review app of a live run shows thumbnails early). Memory is bounded: at most
`max_tracks` kept crops per camera (least recently seen tracks are handed on and dropped first), each at most
`height` x `height` x 3 bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from core.types import Frame, Tracks
from pipeline.reid.cropper import covered_fraction, crop_quality
from pipeline.stages.base import CameraEnd, RunEnd, Stage, Step, register_stage

THUMBNAIL_HEIGHT = 128  # px
POOR_VIEW = 0.01  # score ceiling of a view that fails the cropper's gates: any view that passes them is better


@dataclass(frozen=True)
class Thumbnail:
    """A track's best view so far: JPEG bytes of width x height px; quality 0..1 (higher is better); ts (s, run
    clock) and frame of the crop. The store keeps one per track, replaced only by a higher quality."""

    camera_id: str
    track_id: int
    jpeg: bytes
    quality: float
    width: int
    height: int
    ts: float
    frame: int


@dataclass
class _Best:
    score: float
    image: np.ndarray  # uint8 BGR (h, w, 3), h = the stage's height
    ts: float
    frame: int
    last_index: int
    last_ts: float
    sent_score: float = 0.0
    sent_ts: float | None = None


def thumbnail_crop(image: np.ndarray, box: np.ndarray, height: int = THUMBNAIL_HEIGHT) -> np.ndarray:
    """The box (xyxy px, clipped to the image) of a BGR image resized to `height` px high, aspect kept (width at
    most `height`, at least 8 px) -> uint8 BGR (height, w, 3)."""
    h_img, w_img = image.shape[:2]
    x1, y1 = min(max(int(box[0]), 0), w_img - 1), min(max(int(box[1]), 0), h_img - 1)
    x2, y2 = min(int(np.ceil(box[2])), w_img), min(int(np.ceil(box[3])), h_img)
    patch = image[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)]
    width = int(np.clip(round(height * patch.shape[1] / max(patch.shape[0], 1)), 8, height))
    interp = cv2.INTER_AREA if patch.shape[0] > height else cv2.INTER_LINEAR
    return cv2.resize(patch, (width, int(height)), interpolation=interp)


def sharpness(crop: np.ndarray, reference: float = 100.0) -> float:
    """0..1 from the variance of the Laplacian of a BGR crop (1 at `reference` or more): blur and smear score low."""
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    return float(min(1.0, cv2.Laplacian(gray, cv2.CV_32F).var() / reference))


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """uint8 BGR image -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


@register_stage("thumbnails")
class ThumbnailStage(Stage):
    """Best crop per (camera, track) -> `Thumbnail` messages on `step.thumbnails` / `end.thumbnails`.

    height: thumbnail height in px; min_box_height, border_margin, max_overlap: the cropper's quality gates (px, px,
    fraction); end_after_s: a track unseen this long (run clock) has ended; refresh_s: a live track's improved
    thumbnail is handed on at most this often (s); max_tracks: kept crops per camera; jpeg_quality: 1..100.
    """

    writes = ("step.thumbnails", "end.thumbnails")

    def __init__(self, height: int = THUMBNAIL_HEIGHT, min_box_height: float = 40.0, border_margin: float = 2.0,
                 max_overlap: float = 0.6, end_after_s: float = 2.0, refresh_s: float = 5.0, max_tracks: int = 256,
                 jpeg_quality: int = 85) -> None:
        if height < 16:
            raise ValueError(f"thumbnail height {height} px is too small (use 16 or more, e.g. {THUMBNAIL_HEIGHT})")
        self.height = int(height)
        self.min_box_height, self.border_margin, self.max_overlap = min_box_height, border_margin, max_overlap
        self.end_after_s, self.refresh_s = float(end_after_s), float(refresh_s)
        self.max_tracks, self.jpeg_quality = int(max_tracks), int(jpeg_quality)
        self._best: dict[str, OrderedDict[int, _Best]] = {}
        self._out: list[Thumbnail] = []
        self.sent = 0
        self.bytes_sent = 0

    @classmethod
    def from_config(cls, config, params: dict) -> "ThumbnailStage | None":
        """Built when `store.thumbnails` is on: `store.thumbnail_height`, the cropper's gates from `reid`."""
        if not config.store.thumbnails:
            return None
        r = config.reid
        return cls(config.store.thumbnail_height, r.min_box_height, r.border_margin, r.max_overlap, **params)

    # ---- stage protocol -------------------------------------------------------------------------------------------
    def on_frame(self, frame: Frame, tracks: Tracks) -> None:
        """Score this frame's boxes of one camera; keep better crops; queue the thumbnails of tracks that ended."""
        best = self._best.setdefault(frame.camera_id, OrderedDict())
        h_img, w_img = frame.image.shape[:2]
        covered = covered_fraction(tracks.xyxy)
        for i, tid in enumerate(tracks.track_ids.tolist()):
            kept = best.get(tid)
            if kept is not None:
                kept.last_index, kept.last_ts = frame.index, frame.timestamp_s
                best.move_to_end(tid)
            base = crop_quality(tracks.xyxy[i], float(covered[i]), w_img, h_img, self.min_box_height,
                                self.border_margin, self.max_overlap)
            if base <= 0.0:  # fails a gate (small, cut by the border, covered): a poor view, kept only until a
                height = float(tracks.xyxy[i, 3] - tracks.xyxy[i, 1])  # gated one comes (every track gets one)
                if not np.isfinite(tracks.xyxy[i]).all():
                    continue
                base = POOR_VIEW * min(1.0, max(height, 0.0) / (2.0 * self.min_box_height)) * (1.0 - float(covered[i]))
            if base <= 0.0 or (kept is not None and base <= kept.score):
                continue  # sharpness is at most 1: this box cannot beat the kept crop
            crop = thumbnail_crop(frame.image, tracks.xyxy[i], self.height)
            score = base * (0.5 + 0.5 * sharpness(crop))
            if kept is None:
                best[tid] = _Best(score, crop, frame.timestamp_s, frame.index, frame.index, frame.timestamp_s)
            elif score > kept.score:
                kept.score, kept.image, kept.ts, kept.frame = score, crop, frame.timestamp_s, frame.index
        now = frame.timestamp_s
        for tid, kept in list(best.items()):
            if now - kept.last_ts > self.end_after_s:
                self._emit(frame.camera_id, tid, best.pop(tid))
            elif kept.score > kept.sent_score and (kept.sent_ts is None or now - kept.sent_ts >= self.refresh_s):
                self._emit(frame.camera_id, tid, kept, now)
        while len(best) > self.max_tracks:
            tid, kept = best.popitem(last=False)
            self._emit(frame.camera_id, tid, kept)

    def on_step(self, step: Step) -> None:
        step.thumbnails.extend(self.take())

    def on_camera_end(self, end: CameraEnd) -> None:
        camera_id = end.camera_id if isinstance(end, CameraEnd) else str(end)
        for tid, kept in self._best.pop(camera_id, OrderedDict()).items():
            self._emit(camera_id, tid, kept)

    def close(self, end: RunEnd | None = None) -> None:
        for camera_id in list(self._best):
            for tid, kept in self._best.pop(camera_id).items():
                self._emit(camera_id, tid, kept)
        if end is not None:
            end.thumbnails.extend(self.take())

    def counters(self) -> dict:
        return dict(thumbnails=self.sent, kB=round(self.bytes_sent / 1024))

    def take(self) -> list[Thumbnail]:
        """The thumbnails made since the last call (the loop hands them on through `on_step` / `close`)."""
        out, self._out = self._out, []
        return out

    # ---- internals ------------------------------------------------------------------------------------------------
    def _emit(self, camera_id: str, tid: int, kept: _Best, now: float | None = None) -> None:
        if kept.score <= kept.sent_score:
            return
        jpeg = encode_jpeg(kept.image, self.jpeg_quality)
        h, w = kept.image.shape[:2]
        self._out.append(Thumbnail(camera_id, int(tid), jpeg, float(kept.score), int(w), int(h), float(kept.ts),
                                   int(kept.frame)))
        kept.sent_score, kept.sent_ts = kept.score, now
        self.sent += 1
        self.bytes_sent += len(jpeg)


__all__ = ["THUMBNAIL_HEIGHT", "Thumbnail", "ThumbnailStage", "encode_jpeg", "sharpness", "thumbnail_crop"]
