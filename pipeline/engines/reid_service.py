"""The Ray engine's Re-ID-AR: the model in one service actor, batching on the driver, crops made on the cameras.

    camera actors: TrackletCropper -> ClipRequest (crops uint8 (T, H, W, 3)) on each CameraFrame
    driver:        PrecroppedReIDStage -> ReIDBatcher (the local engine's batching, groups for recorded files)
                   -> RemoteEncoder.encode((B, T, H, W, 3)) -> one Ray call with the whole batch
    ReIDService actor (`reid.num_gpus`): ClipEncoder.encode -> embeddings (B, D), action_probs (B, A)

A batch is one numpy array through Ray's object store (zero-copy on the same node), never one call per crop.
Batches are formed exactly as in the local engine (same groups, same `reid.max_batch`), so recorded files give the
same results under both engines: this is `reid.ray_service: actor`, the default for recorded files. The Ray Serve
deployment (`reid_serve.py`, `reid.ray_service: serve`) forms batches from whatever requests arrive within its wait
window instead, so what the model sees depends on timing.
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

    def __init__(self, reid_config, warm_up: bool = True) -> None:
        """warm_up: run every padded batch size once now (CUDA), on this thread, the one a plain actor runs its
        calls on (PyTorch keeps cuDNN's plans per thread); the Serve deployment warms its own model thread."""
        from pipeline.reid.encoder import ClipEncoder

        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.encoder = ClipEncoder.from_config(reid_config)
        if warm_up:
            self.encoder.warm_up(reid_config.max_batch, reid_config.clip_len)
        self.calls = 0
        self.model_s = 0.0

    def describe(self) -> dict:
        e = self.encoder
        import socket

        return {"source": e.source, "backend": e.backend, "input_size": tuple(e.input_size),
                "embedding_dim": int(e.embedding_dim), "action_names": list(e.action_names),
                "actions_trained": bool(getattr(e, "actions_trained", False)), "host": socket.gethostname(),
                "resize": getattr(e, "resize", "bilinear")}

    def encode(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        t0 = time.perf_counter()
        out = self.encoder.encode(clips)
        self.model_s += time.perf_counter() - t0
        return out

    def stats(self) -> dict:
        """calls and seconds spent in the model since the service (re)started."""
        return {"calls": self.calls, "model_s": self.model_s}


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
        self.resize = info["resize"]  # how the camera actors resize crops (as the model was trained)
        self.lost_clips = 0
        self.restarts_seen = 0
        self.call_s = 0.0  # wall time of the Ray calls (model + hand-off of crops and results)
        self.clips = 0

    def encode(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import ray
        from ray.exceptions import RayActorError

        for attempt in (0, 1):
            try:
                t0 = time.perf_counter()
                out = ray.get(self.actor.encode.remote(clips))
                self.call_s += time.perf_counter() - t0
                self.clips += len(clips)
                return out
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
        self.skipped_on_cameras: dict[str, int] = {}  # camera -> periodic clips its actor's schedule skipped

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
        """The local stage's counters plus the service's: clips lost with a dead service, and the hand-off cost
        (wall time of the Ray calls minus the model's own time in the service, ms per clip)."""
        import ray

        c = super().counters()
        c["skipped"] += sum(self.skipped_on_cameras.values())
        e = self.encoder
        c["lost_in_service"] = e.lost_clips
        c["service_call_s"] = round(e.call_s, 3)
        try:
            model_s = ray.get(e.actor.stats.remote(), timeout=10)["model_s"]
        except Exception:  # noqa: BLE001 - the service is gone: no split
            model_s = float("nan")
        c["service_model_s"] = round(model_s, 3)
        c["handoff_ms_per_clip"] = round(1000 * (e.call_s - model_s) / e.clips, 3) if e.clips else 0.0
        return c

    def summary_line(self) -> str:
        c = self.counters()
        return (super().summary_line() + f"; Ray service calls {c['service_call_s']:.1f} s (model "
                f"{c['service_model_s']:.1f} s, hand-off {c['handoff_ms_per_clip']:.2f} ms/clip)")


__all__ = ["PrecroppedReIDStage", "RemoteEncoder", "ReIDService"]
