"""MOTChallenge text files of a run, one per camera: the `mot` stage.

Without association: `DIR/mot/<camera_id>.txt` with the cameras' local track ids, written live. With association:
the local ids go live to `DIR/mot_local/<camera_id>.txt`, and at the end (`close`, also after Ctrl-C) the stage
rewrites them with the run's final global ids (`end.identities`, from the association stage) into `DIR/mot/`
(offline-refined ids when present, with the online ones in `DIR/mot_online/`). `mot_local/` is this stage's own
spool: no other stage reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from core.types import Frame, Tracks
from pipeline.stages.base import CameraInfo, RunEnd, RunInfo, Stage, register_stage

LOCAL_DIR, GLOBAL_DIR, ONLINE_DIR = "mot_local", "mot", "mot_online"


def relabel_mot_file(src: Path, dst: Path, camera_id: str, ids: dict[tuple[str, int], int]) -> int:
    """Copy a MOT file replacing each local id (column 2) by `ids[(camera_id, id)]`; ids without a global one get
    fresh ids above all others. A flagged predicted box (score 0, written after the frame's own boxes) whose identity
    the frame already has is left out: the view's own box of that person is there (the fused mode's offline pass can
    give a view's box the identity a predicted box showed). Returns the number of lines written."""
    fresh: dict[int, int] = {}
    top = max(list(ids.values()) + [0])
    n = 0
    shown: set[int] = set()  # identities written in the current frame
    frame = None
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="ascii") as fin, open(dst, "w", encoding="ascii") as fout:
        for line in fin:
            parts = line.rstrip("\n").split(",")
            if len(parts) < 6:
                continue
            if parts[0] != frame:
                frame, shown = parts[0], set()
            local = int(float(parts[1]))
            gid = ids.get((camera_id, local))
            if gid is None:
                gid = fresh.setdefault(local, top + len(fresh) + 1)
            if gid in shown and len(parts) > 6 and float(parts[6]) == 0.0:
                continue
            shown.add(gid)
            parts[1] = str(gid)
            fout.write(",".join(parts) + "\n")
            n += 1
    return n


class MotWriter:
    """Writes `frame,id,x,y,w,h,score,-1,-1,-1` lines (frame 1-based, box top-left + size in px) per camera."""

    def __init__(self, directory: Path, flush_every: int = 100) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.flush_every = flush_every
        self._files: dict[str, TextIO] = {}
        self._since_flush: dict[str, int] = {}

    def path(self, camera_id: str) -> Path:
        return self.directory / f"{camera_id}.txt"

    def open_camera(self, camera_id: str) -> None:
        """Create (truncate) the camera's file, so a camera with no tracks still has one."""
        if camera_id not in self._files:
            self._files[camera_id] = open(self.path(camera_id), "w", encoding="ascii")
            self._since_flush[camera_id] = 0

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


@register_stage("mot")
class MotStage(Stage):
    """The run's MOTChallenge files; `global_ids`: relabel them with the final global ids at the end."""

    def __init__(self, global_ids: bool = False) -> None:
        self.global_ids = bool(global_ids)
        self.writer: MotWriter | None = None
        self.output_dir: Path | None = None
        self.cameras: list[str] = []

    @classmethod
    def from_config(cls, config, params: dict) -> "MotStage | None":
        if not (config.output.mot or config.association.enabled):
            return None
        return cls(global_ids=config.association.enabled)

    def open(self, run: RunInfo) -> None:
        self.output_dir = Path(run.output_dir)
        self.writer = MotWriter(self.output_dir / (LOCAL_DIR if self.global_ids else GLOBAL_DIR))

    def open_camera(self, camera: CameraInfo) -> None:
        self.cameras.append(camera.camera_id)
        self.writer.open_camera(camera.camera_id)

    def on_frame(self, frame: Frame, tracks: Tracks) -> None:
        self.writer.write(frame.camera_id, frame.index, tracks)

    def close(self, end: RunEnd) -> None:
        if self.writer is None:
            return
        self.writer.close()
        final = end.final_identities
        if not self.global_ids or final is None:
            return
        for cam in self.cameras:
            src = self.writer.path(cam)
            if not src.is_file():
                continue
            relabel_mot_file(src, self.output_dir / GLOBAL_DIR / f"{cam}.txt", cam, final)
            if "offline" in end.identities:
                relabel_mot_file(src, self.output_dir / ONLINE_DIR / f"{cam}.txt", cam, end.identities["online"])
        self.writer = None


__all__ = ["GLOBAL_DIR", "LOCAL_DIR", "MotStage", "MotWriter", "ONLINE_DIR", "relabel_mot_file"]
