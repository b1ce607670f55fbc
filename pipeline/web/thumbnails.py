"""`ThumbnailStage`: keeps the best view of every track and stores it as a small JPEG (`track_thumbnails`).

Per camera and track it scores each frame's box with the Re-ID cropper's quality (size, not cut by the border, not
covered by another box; `pipeline.reid.cropper.crop_quality`) times a sharpness factor (variance of the Laplacian of
the crop; a box that fails a gate scores at most `POOR_VIEW`, so every track gets a thumbnail, and a clear view
replaces it), keeps the best crop resized to `height` px (aspect kept, width at most `height`), and sends it to the
`StoreWriter` when the track ends (unseen `end_after_s`), when the camera ends, at `close()`, and while the track is
alive at most every `refresh_s` when it has improved (so a live run's review app shows thumbnails early). Memory is
bounded: at most `max_tracks` kept crops per camera (least recently seen tracks are sent and dropped first), each at
most `height` x `height` x 3 bytes.

Loop protocol (see the pipeline's stage seam): `open_camera(camera_id)`, `on_frame(frame, tracks)` after each
camera's tracker update, `on_camera_end(camera_id)`, `close()`, `counters()`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from core.types import Frame, Tracks
from pipeline.reid.cropper import covered_fraction, crop_quality

THUMBNAIL_HEIGHT = 128  # px
POOR_VIEW = 0.01  # score ceiling of a view that fails the cropper's gates: any view that passes them is better


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


class ThumbnailStage:
    """Best crop per (camera, track) -> `writer.add_thumbnail` (one JPEG per track, replaced by better ones).

    writer: a `StoreWriter` (anything with `add_thumbnail`); height: thumbnail height in px; min_box_height,
    border_margin, max_overlap: the cropper's quality gates (px, px, fraction); end_after_s: a track unseen this long
    (run clock) has ended; refresh_s: a live track's improved thumbnail is re-sent at most this often (s);
    max_tracks: kept crops per camera; jpeg_quality: 1..100.
    """

    def __init__(self, writer, height: int = THUMBNAIL_HEIGHT, min_box_height: float = 40.0, border_margin: float = 2.0,
                 max_overlap: float = 0.6, end_after_s: float = 2.0, refresh_s: float = 5.0, max_tracks: int = 256,
                 jpeg_quality: int = 85) -> None:
        if height < 16:
            raise ValueError(f"thumbnail height {height} px is too small (use 16 or more, e.g. {THUMBNAIL_HEIGHT})")
        self.writer = writer
        self.height = int(height)
        self.min_box_height, self.border_margin, self.max_overlap = min_box_height, border_margin, max_overlap
        self.end_after_s, self.refresh_s = float(end_after_s), float(refresh_s)
        self.max_tracks, self.jpeg_quality = int(max_tracks), int(jpeg_quality)
        self._best: dict[str, OrderedDict[int, _Best]] = {}
        self.sent = 0
        self.bytes_sent = 0

    # ---- loop protocol --------------------------------------------------------------------------------------------
    def open_camera(self, camera_id: str, *_args) -> None:
        self._best.setdefault(camera_id, OrderedDict())

    def on_frame(self, frame: Frame, tracks: Tracks) -> None:
        """Score this frame's boxes of one camera; keep better crops; send the thumbnails of tracks that ended."""
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
                self._send(frame.camera_id, tid, best.pop(tid))
            elif kept.score > kept.sent_score and (kept.sent_ts is None or now - kept.sent_ts >= self.refresh_s):
                self._send(frame.camera_id, tid, kept, now)
        while len(best) > self.max_tracks:
            tid, kept = best.popitem(last=False)
            self._send(frame.camera_id, tid, kept)

    def on_camera_end(self, camera_id: str) -> None:
        best = self._best.pop(camera_id, OrderedDict())
        for tid, kept in best.items():
            self._send(camera_id, tid, kept)

    def close(self, *_args) -> None:
        for camera_id in list(self._best):
            self.on_camera_end(camera_id)

    def counters(self) -> dict:
        return dict(thumbnails_sent=self.sent, thumbnail_bytes=self.bytes_sent)

    # ---- internals ------------------------------------------------------------------------------------------------
    def _send(self, camera_id: str, tid: int, kept: _Best, now: float | None = None) -> None:
        if kept.score <= kept.sent_score:
            return
        jpeg = encode_jpeg(kept.image, self.jpeg_quality)
        h, w = kept.image.shape[:2]
        self.writer.add_thumbnail(camera_id, tid, jpeg, kept.score, w, h, kept.ts, kept.frame)
        kept.sent_score, kept.sent_ts = kept.score, now
        self.sent += 1
        self.bytes_sent += len(jpeg)

    # the current loop's sink protocol (`pipeline.sinks.TrackSink`) calls `on_tracks`
    on_tracks = on_frame


def build_thumbnail_stage(config, writer) -> ThumbnailStage | None:
    """The stage a `PipelineConfig` asks for (`store.thumbnails`, `store.thumbnail_height`, the cropper's quality
    gates from `reid`), writing to `writer`; None when thumbnails are off."""
    if not config.store.thumbnails:
        return None
    r = config.reid
    return ThumbnailStage(writer, config.store.thumbnail_height, r.min_box_height, r.border_margin, r.max_overlap)


def run_with_thumbnails(config, output_dir=None):
    """Run a `pipeline.runner.Pipeline` with the config's `ThumbnailStage` on its store writer -> `RunSummary`.

    Interim wiring until the loop builds stages from a registry (the lead's stage seam, issue #14): the stage is
    appended to the sinks `build_sinks` returns, for this call only.
    """
    from unittest import mock

    import pipeline.runner as runner

    original = runner.build_sinks

    def build_sinks(cfg, out_dir, store_writer=None, action_names=None):
        sinks = original(cfg, out_dir, store_writer, action_names)
        stage = build_thumbnail_stage(cfg, store_writer) if store_writer is not None else None
        if stage is not None:
            sinks.append(stage)
        return sinks

    with mock.patch.object(runner, "build_sinks", build_sinks):
        return runner.Pipeline(config, output_dir).run()
