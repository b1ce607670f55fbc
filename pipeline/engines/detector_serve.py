"""The person detector as a Ray Serve deployment (`detector.service: true`): one detector call for many cameras.

    camera actor (no detector of its own): DetectorClient.detect([frame]) -> the frame, uint8 (H, W, 3), downscaled
            on the actor to the size the detector's letterbox would resize it to (frames larger than detector.imgsz
            only; smaller ones travel as they are) -> DeploymentHandle.detect.remote(image, camera_id), blocking
    DetectorDeployment replicas (detector.replicas, detector.num_gpus and 0 CPUs each, no HTTP proxy):
            @serve.batch(max_batch_size=min(detector.max_batch, cameras / replicas) frames, batch_wait_timeout_s=
            detector.max_wait_ms / 1000) merges the frames that arrive within the wait window (any camera; a batch
            with a frame of every camera runs at once: each camera has one frame in flight) -> one
            PersonDetector.detect call ->
            each request gets its Detections (in the image it sent) and the size of the model batch it was part of
    camera actor: boxes scaled back to the camera's pixels -> tracker, as with its own detector

The pre-scaled frame is what Ultralytics' letterbox makes of the full frame (same size, same cv2.INTER_LINEAR), so
the model sees the same pixels: boxes differ from a per-camera detector's by float rounding of the scale only; frames
no larger than imgsz (EPFL Terrace's 360x288) give identical boxes. A static-batch export (the shipped OpenVINO INT8
model, batch 1) still runs one inference per frame inside the merged call; a dynamic-batch or PyTorch model on a GPU
runs the batch at once, which is what the service is for.

Faults: a replica that dies is restarted by Serve's controller; a request that fails (dead replica, timeout, error) is
sent once more, then the frame is dropped: the camera's tracker gets no detections for it (its tracks coast) and it is
counted (`dropped_frames`); the camera goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time

import numpy as np
from ray import serve

from core.types import Detections
from pipeline.engines.reid_serve import REQUEST_TIMEOUT_S

log = logging.getLogger("mcsa.engine.detector")


class DetectorDeployment:
    """The Serve deployment's body: one `PersonDetector` per replica, batches of up to `max_batch` frames.

    cameras_per_replica: the run's cameras / replicas (rounded up); a batch is full at min(max_batch, this).
    `detect(image (H, W, 3) uint8, camera_id)` -> (Detections in that image's pixels, batch_frames: frames in the model
    call, batch_cameras: cameras in it, batch_model_s: the call's seconds, in_replica_s: this request's time in the
    replica (batch wait + model)).
    """

    def __init__(self, detector_config, cameras_per_replica: int | None = None) -> None:
        from models.detector import PersonDetector

        self.detector = PersonDetector.from_config(detector_config)
        # a camera has one frame in flight (its tracker waits for the detections), so a batch holding a frame of
        # every camera that this replica serves is full: it runs at once instead of waiting out max_wait_ms
        self._batched.set_max_batch_size(max(1, min(int(detector_config.max_batch),
                                                    cameras_per_replica or detector_config.max_batch)))
        self._batched.set_batch_wait_timeout_s(float(detector_config.max_wait_ms) / 1000.0)

    def describe(self) -> dict:
        d = self.detector
        return {"host": socket.gethostname(), "pid": os.getpid(), "weights": str(d.weights), "format": d.format,
                "device": d.device, "imgsz": d.imgsz}

    async def detect(self, image: np.ndarray, camera_id: str) -> tuple:
        t0 = time.perf_counter()
        dets, batch, cameras, model_s = await self._batched(image, camera_id)
        return dets, batch, cameras, model_s, time.perf_counter() - t0

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)  # set from the config
    async def _batched(self, images: list[np.ndarray], cameras: list[str]) -> list[tuple]:
        t0 = time.perf_counter()
        # in a thread: requests keep arriving (and queue for the next batch) while the model runs
        dets = await asyncio.get_running_loop().run_in_executor(None, self.detector.detect, images)
        model_s = time.perf_counter() - t0
        n_cameras = len(set(cameras))
        return [(d, len(images), n_cameras, model_s) for d in dets]


def letterbox_size(width: int, height: int, imgsz: int) -> tuple[int, int]:
    """(width, height) px Ultralytics' letterbox resizes a frame to before padding (`LetterBox`, scale-up included)."""
    r = min(imgsz / height, imgsz / width)
    return max(round(width * r), 1), max(round(height * r), 1)


class DetectorClient:
    """A camera actor's side of the deployment; has `PersonDetector.detect`'s signature (one frame per call is what
    a camera sends). Counters of the model's batches come back with each answer (a frame in a batch of B adds 1 / B
    batches, so the sums over cameras are exact whatever the replicas)."""

    def __init__(self, handle, camera_id: str, imgsz: int) -> None:
        self.handle = handle
        self.camera_id = camera_id
        self.imgsz = int(imgsz)
        self._lock = threading.Lock()
        self.frames = 0  # answered
        self.model_batches = 0.0  # sum of 1 / B
        self.cross_camera_batches = 0.0  # the same over batches holding frames of 2+ cameras
        self.max_batch = 0
        self.model_s = 0.0  # sum of model_s / B: each batch's model time once
        self.timed = 0  # answered at the first try (a retry waits for a replica's restart)
        self.call_s = 0.0
        self.in_replica_s = 0.0
        self.wait_s = 0.0  # batch waits in the replica (in_replica - model)
        self.bytes_sent = 0
        self.retries = 0
        self.dropped_frames = 0

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """Detections per BGR uint8 (H, W, 3) image, boxes in its pixels; a frame the service could not answer twice
        gets no detections (counted in `dropped_frames`)."""
        return [self._detect_one(image) for image in images]

    def _detect_one(self, image: np.ndarray) -> Detections:
        import cv2

        h, w = image.shape[:2]
        size = letterbox_size(w, h, self.imgsz)
        sent = image if size[0] >= w else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        sent = np.ascontiguousarray(sent)
        for attempt in (0, 1):
            try:
                t0 = time.perf_counter()
                dets, batch, cameras, model_s, in_replica = self.handle.detect.remote(sent, self.camera_id).result(
                    timeout_s=REQUEST_TIMEOUT_S)
                wall = time.perf_counter() - t0
            except Exception as err:  # noqa: BLE001 - dead replica, timeout or the model's error: retry once
                reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
                if attempt:
                    with self._lock:
                        self.dropped_frames += 1
                    log.warning("camera %s: detector service failed twice on a frame (%s); frame dropped",
                                self.camera_id, reason)
                    return Detections.empty()
                with self._lock:
                    self.retries += 1
                log.warning("camera %s: detector request failed (%s); sending it again", self.camera_id, reason)
                time.sleep(0.5)
                continue
            if sent is not image and len(dets):
                scale = np.array([w / sent.shape[1], h / sent.shape[0]] * 2, np.float32)
                dets = Detections(dets.xyxy * scale, dets.scores, dets.class_ids)
            with self._lock:
                self.frames += 1
                self.model_batches += 1.0 / batch
                self.cross_camera_batches += 1.0 / batch if cameras > 1 else 0.0
                self.max_batch = max(self.max_batch, int(batch))
                self.model_s += model_s / batch
                self.bytes_sent += sent.nbytes
                if not attempt:
                    self.timed += 1
                    self.call_s += wall
                    self.in_replica_s += in_replica
                    self.wait_s += in_replica - model_s
            return dets
        raise AssertionError("unreachable")

    def counters(self) -> dict:
        with self._lock:
            return {k: getattr(self, k) for k in ("frames", "model_batches", "cross_camera_batches", "max_batch",
                                                  "model_s", "timed", "call_s", "in_replica_s", "wait_s",
                                                  "bytes_sent", "retries", "dropped_frames")}


def merge_counters(per_camera: list[dict]) -> dict:
    """The run's detector-service counters from the camera actors' `DetectorClient.counters()`: frames answered,
    model batches (mean and largest, across cameras), dropped frames, retries, batch wait and hand-off per frame."""
    total: dict = {}
    for c in per_camera:
        for k, v in c.items():
            total[k] = max(total.get(k, 0), v) if k == "max_batch" else total.get(k, 0) + v
    frames, batches, timed = total.get("frames", 0), total.get("model_batches", 0.0), total.get("timed", 0)
    return dict(frames=frames, batches=int(round(batches)), mean_batch=frames / batches if batches else 0.0,
                max_batch=total.get("max_batch", 0), cross_camera_batches=int(round(total.get("cross_camera_batches",
                                                                                                  0.0))),
                dropped_frames=total.get("dropped_frames", 0), retries=total.get("retries", 0),
                model_s=round(total.get("model_s", 0.0), 3),
                batch_wait_ms=round(1000 * total.get("wait_s", 0.0) / timed, 3) if timed else 0.0,
                handoff_ms_per_frame=(round(1000 * (total.get("call_s", 0.0) - total.get("in_replica_s", 0.0)) / timed,
                                            3) if timed else 0.0),
                kb_per_frame=round(total.get("bytes_sent", 0) / 1024 / frames, 1) if frames else 0.0)


def summary_line(c: dict) -> str:
    return (f"Detector (Ray Serve): {c['frames']} frames in {c['batches']} model batches (mean {c['mean_batch']:.2f}, "
            f"largest {c['max_batch']}, {c['cross_camera_batches']} across cameras), {c['dropped_frames']} frames "
            f"dropped, {c['retries']} retries, batch wait {c['batch_wait_ms']:.1f} ms/frame, hand-off "
            f"{c['handoff_ms_per_frame']:.2f} ms/frame ({c['kb_per_frame']:.0f} KiB/frame)")


__all__ = ["DetectorClient", "DetectorDeployment", "letterbox_size", "merge_counters", "summary_line"]
