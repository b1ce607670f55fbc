"""Annotated video export, the `video` stage (`output.video`): boxes, global ids and the current action drawn on each
camera's frames, read from the tracks (`tracks.global_ids` from the association, `tracks.current_actions` from the
events stage).

`per_camera` writes `DIR/video/<camera_id>.mp4`; `mosaic` writes one `DIR/video/mosaic.mp4` whose tiles hold every
camera's latest annotated frame (a mosaic frame is written for each frame of the first camera still running); with
`association.mode: fused` (and `output.ground`) one more tile per fused group shows the ground plane from above:
where each identified person stands, the last 3 s of their path, in their box colour
(`pipeline.fusion.ground_map.GroundView`).
Labels: `G<global id>` once the track is linked across cameras, else `<camera>:<local id>`; then the confirmed
current action and its smoothed score. Encoding is OpenCV's `mp4v` (readable by ffmpeg and browsers via re-mux).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np

from core.types import Frame, Tracks
from pipeline.stages.base import CameraEnd, CameraInfo, RunEnd, RunInfo, Stage, Step, register_stage

log = logging.getLogger("mcsa.video")


def _colour(key: int) -> tuple[int, int, int]:
    h = (int(key) * 2654435761) & 0xFFFFFF
    return (64 + (h & 0x7F), 64 + ((h >> 8) & 0x7F), 64 + ((h >> 16) & 0x7F))


@register_stage("video")
class AnnotatedVideoStage(Stage):
    """Draws tracks on frames and writes MP4 files (one per camera, or one mosaic) under `directory` (default: the
    run's `DIR/video`); fps: the videos' frame rate (default: each camera's)."""

    def __init__(self, mode: str = "per_camera", fps: float | None = None, directory: str | Path | None = None,
                 ground_views: dict | None = None) -> None:
        if mode not in ("per_camera", "mosaic"):
            raise ValueError(f"output.video {mode!r}: expected per_camera or mosaic")
        self.directory = Path(directory) if directory is not None else None
        self.mode = mode
        self.fps = fps
        # mosaic + fused mode: one bird's-eye tile per fused group after the camera tiles (group name -> GroundView)
        self.ground_views = dict(ground_views or {}) if mode == "mosaic" else {}
        self._fps: dict[str, float] = {}
        self._writers: dict[str, cv2.VideoWriter] = {}
        self._latest: dict[str, np.ndarray] = {}
        self._order: list[str] = []
        self._ended: set[str] = set()
        self.frames_written = 0

    @classmethod
    def from_config(cls, config, params: dict) -> "AnnotatedVideoStage | None":
        if config.output.video == "off":
            return None
        views = {}
        if config.output.video == "mosaic":
            from pipeline.fusion.ground_map import ground_views

            views = ground_views(config)
        return cls(config.output.video, config.output.video_fps, ground_views=views)

    def open(self, run: RunInfo) -> None:
        if self.directory is None:
            self.directory = Path(run.output_dir) / "video"
        self.directory.mkdir(parents=True, exist_ok=True)

    def open_camera(self, camera: CameraInfo) -> None:
        if camera.camera_id not in self._order:
            self._order.append(camera.camera_id)
        self._fps[camera.camera_id] = float(self.fps or camera.fps or 25.0)
        for view in self.ground_views.values():
            view.set_frame_size(camera.camera_id, camera.size)

    def annotate(self, frame: Frame, tracks: Tracks) -> np.ndarray:
        """A copy of the frame with boxes and labels."""
        img = frame.image.copy()
        cam = frame.camera_id
        gids = tracks.global_ids.tolist() if tracks.global_ids is not None else [-1] * len(tracks)
        actions = tracks.current_actions or [None] * len(tracks)
        for i, (tid, box) in enumerate(zip(tracks.track_ids.tolist(), tracks.xyxy.tolist())):
            gid = gids[i] if gids[i] >= 0 else None
            label = f"G{gid}" if gid is not None else f"{cam}:{tid}"
            predicted = tracks.predicted is not None and bool(tracks.predicted[i])
            if predicted:  # projected from the ground track: this camera's detector missed the person
                label += " (pred)"
            if actions[i] is not None:
                label += f" {actions[i]} {float(tracks.current_action_scores[i]):.2f}"
            colour = _colour(gid if gid is not None else hash((cam, tid)))
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(img, (x1, y1), (x2, y2), colour, 1 if predicted else 2)
            (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
            ty = max(y1, th + 4)
            cv2.rectangle(img, (x1, ty - th - 4), (x1 + tw + 4, ty), colour, -1)
            cv2.putText(img, label, (x1 + 2, ty - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.putText(img, f"{cam} #{frame.index} t={frame.timestamp_s:.2f}s", (4, img.shape[0] - 6),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1, cv2.LINE_AA)
        return img

    def _writer(self, name: str, size: tuple[int, int], fps: float) -> cv2.VideoWriter:
        writer = self._writers.get(name)
        if writer is None:
            path = self.directory / f"{name}.mp4"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
            if not writer.isOpened():
                raise OSError(f"cannot write annotated video {path} (check permissions and free space)")
            self._writers[name] = writer
        return writer

    def _mosaic(self) -> np.ndarray:
        ref = self._latest[self._order[0]] if self._order[0] in self._latest else next(iter(self._latest.values()))
        th, tw = ref.shape[:2]
        n = len(self._order) + len(self.ground_views)
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        canvas = np.zeros((rows * th, cols * tw, 3), np.uint8)
        for k, cam in enumerate(self._order):
            tile = self._latest.get(cam)
            if tile is None:
                continue
            if tile.shape[:2] != (th, tw):
                tile = cv2.resize(tile, (tw, th))
            r, c = divmod(k, cols)
            canvas[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tile
        for k, view in enumerate(self.ground_views.values(), start=len(self._order)):
            r, c = divmod(k, cols)
            canvas[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = view.render(tw, th)
        return canvas

    def on_frame(self, frame: Frame, tracks: Tracks) -> None:
        cam = frame.camera_id
        if cam not in self._order:
            self.open_camera(CameraInfo(cam, cam))
        img = self.annotate(frame, tracks)
        if self.mode == "per_camera":
            self._writer(cam, (img.shape[1], img.shape[0]), self._fps[cam]).write(img)
            self.frames_written += 1
            return
        self._latest[cam] = img
        running = [c for c in self._order if c not in self._ended]
        if running and cam == running[0]:
            mosaic = self._mosaic()
            self._writer("mosaic", (mosaic.shape[1], mosaic.shape[0]), self._fps[cam]).write(mosaic)
            self.frames_written += 1

    def on_step(self, step: Step) -> None:
        """The fused people of this step go to the bird's-eye tiles (shown from the next mosaic frame on)."""
        if not self.ground_views:
            return
        by_group: dict[str, list] = {}
        for point in step.ground:
            by_group.setdefault(point.group, []).append(point)
        for name, points in by_group.items():
            if name in self.ground_views:
                self.ground_views[name].add(points)

    def on_camera_end(self, end: CameraEnd) -> None:
        self._ended.add(end.camera_id)

    def close(self, end: RunEnd | None = None) -> None:
        for writer in self._writers.values():
            writer.release()
        self._writers.clear()


__all__ = ["AnnotatedVideoStage"]
