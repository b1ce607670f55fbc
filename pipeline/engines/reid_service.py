"""The Ray engine's Re-ID-AR: the model in one service actor, batching on the driver, crops made on the cameras.

    camera actors: TrackletCropper -> ClipRequest (crops uint8 (T, H, W, 3)) on each CameraFrame
    driver:        PrecroppedReIDStage -> ReIDBatcher (the local engine's batching, groups for recorded files)
                   -> RemoteEncoder.encode((B, T, H, W, 3)) -> one Ray call with the whole batch
    ReIDService actor (`reid.num_gpus`): ClipEncoder.encode -> embeddings (B, D), action_probs (B, A)

A batch is one numpy array through Ray's object store (zero-copy on the same node), never one call per crop.
Batches are formed exactly as in the local engine (same groups, same `reid.max_batch`), so recorded files give the
same results under both engines. Ray Serve's `@serve.batch` is not used: it forms batches from whatever requests
arrive within its wait window, so what the model sees would depend on timing (recorded files must give the same
outputs every run), and it starts a controller and an HTTP proxy, costly on small machines.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from core.types import Frame, Tracks
from pipeline.reid.appearance import TrackAppearance
from pipeline.reid.stage import ReIDStage
from pipeline.stages.base import CameraEnd, CameraInfo

log = logging.getLogger("mcsa.engine.reid")


class ReIDService:
    """Holds the `ClipEncoder` (the Ray actor's body); `encode(clips (B, T, H, W, 3) uint8)` -> (emb, probs)."""

    def __init__(self, reid_config) -> None:
        from pipeline.reid.encoder import ClipEncoder

        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.encoder = ClipEncoder.from_config(reid_config)
        self.calls = 0

    def describe(self) -> dict:
        e = self.encoder
        import socket

        return {"source": e.source, "backend": e.backend, "input_size": tuple(e.input_size),
                "embedding_dim": int(e.embedding_dim), "action_names": list(e.action_names),
                "actions_trained": bool(getattr(e, "actions_trained", False)), "host": socket.gethostname()}

    def encode(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        return self.encoder.encode(clips)

    def ping(self) -> bool:
        return True


class RemoteEncoder:
    """Looks like a `ClipEncoder` to the `ReIDBatcher`; `encode` is one call to the service actor. A dead service is
    retried once after Ray restarts it; clips of a batch that still fails are dropped and counted (`lost_clips`)."""

    def __init__(self, actor, info: dict) -> None:
        self.actor = actor
        self.source, self.backend = info["source"], f"{info['backend']} (Ray service on {info['host']})"
        self.input_size = tuple(info["input_size"])
        self.embedding_dim = info["embedding_dim"]
        self.action_names = list(info["action_names"])
        self.actions_trained = info["actions_trained"]
        self.handoff_s = 0.0  # time in Ray calls beyond the model's own (measured by the batcher's busy_s)
        self.lost_clips = 0
        self.restarts_seen = 0

    def encode(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import ray
        from ray.exceptions import RayActorError

        for attempt in (0, 1):
            try:
                return ray.get(self.actor.encode.remote(clips))
            except RayActorError:
                if attempt:
                    self.lost_clips += len(clips)
                    raise
                self.restarts_seen += 1
                log.warning("the Re-ID service died; waiting for Ray to restart it")
                time.sleep(1.0)
        raise AssertionError("unreachable")


class PrecroppedReIDStage(ReIDStage):
    """`ReIDStage` whose clips were cut on the camera actors: the driver queues each frame's `ClipRequest`s with
    `queue_clips` before the stages see the frame; everything else (grouping, result lag, appearance) is the local
    stage's."""

    def __init__(self, cfg, encoder: RemoteEncoder) -> None:
        super().__init__(cfg, encoder)
        self._incoming: dict[str, list] = {}

    def queue_clips(self, camera_id: str, clips: list) -> None:
        self._incoming.setdefault(camera_id, []).extend(clips)

    def submit_final(self, clips: list) -> None:
        """Final clips of a camera stopped at the run's end (a completed run flushes every track's buffer)."""
        self._submit(clips)

    def open_camera(self, camera: CameraInfo) -> None:
        if camera.error is None:
            self.appearances[camera.camera_id] = TrackAppearance(camera.camera_id)

    def on_frame(self, frame: Frame, tracks: Tracks) -> None:
        appearance = self.appearances[frame.camera_id]
        self._submit(self._incoming.pop(frame.camera_id, []))
        tracks.embeddings = appearance.embeddings_for(tracks.track_ids, self.encoder.embedding_dim)
        tracks.action_probs = appearance.action_probs_for(tracks.track_ids, len(self.action_names))

    def on_camera_end(self, end: CameraEnd) -> None:
        self._submit(self._incoming.pop(end.camera_id, []))

    def counters(self) -> dict:
        c = super().counters()
        c["lost_in_service"] = self.encoder.lost_clips
        return c


__all__ = ["PrecroppedReIDStage", "RemoteEncoder", "ReIDService"]
