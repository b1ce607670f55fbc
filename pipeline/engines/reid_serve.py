"""Re-ID-AR as a Ray Serve deployment (`reid.ray_service: serve`): the model's batches merge the cameras' requests.

    driver: ServedReIDStage, each step: one request per camera that has clips due, its clips as ONE uint8 array
            (k, T, H, W, 3), k <= reid.max_batch -> DeploymentHandle.encode.remote(clips, camera_id), all sent at
            once without waiting (a thread per request waits for its answer)
    ReIDDeployment replicas (reid.replicas, reid.num_gpus and 0 CPUs each, no HTTP proxy):
            @serve.batch(max_batch_size=reid.max_batch clips, batch_wait_timeout_s=reid.max_wait_ms / 1000) merges
            the requests that arrive within the wait window (any camera, any step) -> one ClipEncoder.encode call
            -> each request gets its rows back, with the size of the model batch it was part of

The batch is formed by Serve from whatever arrives within its window, so what the model sees depends on timing:
results differ from the actor service's by float rounding only, but a recorded file's outputs are no longer
bit-identical run to run (`reid.ray_service: actor` is the default for recorded files). Results are applied as in the
local stage: recorded files `reid.file_result_lag_steps` steps after their request (waiting if needed), live cameras
at the first step after they are ready.

Faults: a replica that dies is restarted by Serve's controller; a request that fails because its replica died is sent
once more, then its clips are dropped and counted (`lost_in_service`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from ray import serve

from pipeline.engines.reid_service import PrecroppedReIDStage
from pipeline.reid.clips import ClipRequest, ClipResult

log = logging.getLogger("mcsa.engine.reid")

REQUEST_TIMEOUT_S = 300.0  # one request's longest wait (model load after a replica restart included)


def clip_count(items: list) -> int:
    """`@serve.batch`'s batch size: clips, not requests (each request is a (k, T, H, W, 3) array)."""
    return sum(len(x) for x in items)


class ReIDDeployment:
    """The Serve deployment's body: one `ClipEncoder` per replica, batches of up to `max_batch` clips.

    `encode(clips (k, T, H, W, 3) uint8, camera_id)` -> (embeddings (k, D) float32, action_probs (k, A) float32,
    batch_clips: clips in the model call, batch_cameras: cameras in it, batch_model_s: the model call's seconds,
    in_replica_s: this request's time in the replica (batch wait + model)).
    """

    def __init__(self, reid_config) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from pipeline.engines.reid_service import ReIDService

        self.service = ReIDService(reid_config, warm_up=False)
        # one thread runs every model call, warmed up first (PyTorch keeps cuDNN's plans per thread)
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reid-model")
        self._model_thread.submit(self.service.encoder.warm_up, reid_config.max_batch, reid_config.clip_len).result()
        self._batched.set_max_batch_size(int(reid_config.max_batch))
        self._batched.set_batch_wait_timeout_s(float(reid_config.max_wait_ms) / 1000.0)

    def describe(self) -> dict:
        return self.service.describe()

    async def encode(self, clips: np.ndarray, camera_id: str) -> tuple:
        t0 = time.perf_counter()
        emb, probs, batch_clips, batch_cameras, model_s = await self._batched(clips, camera_id)
        return emb, probs, batch_clips, batch_cameras, model_s, time.perf_counter() - t0

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.05, batch_size_fn=clip_count)  # set from the config
    async def _batched(self, clips: list[np.ndarray], cameras: list[str]) -> list[tuple]:
        merged = np.concatenate(clips) if len(clips) > 1 else clips[0]
        t0 = time.perf_counter()
        # in a thread: requests keep arriving (and queue for the next batch) while the model runs
        emb, probs = await asyncio.get_running_loop().run_in_executor(self._model_thread, self.service.encode, merged)
        model_s = time.perf_counter() - t0
        n_cameras = len(set(cameras))
        out, start = [], 0
        for c in clips:
            out.append((emb[start:start + len(c)], probs[start:start + len(c)], len(merged), n_cameras, model_s))
            start += len(c)
        return out


class ServeClient:
    """The driver's side of the deployment; looks like a `ClipEncoder` to the Re-ID stage (source, input_size, ...).

    `submit(clips, camera_id)` sends one request and returns a `Future` of (embeddings, action_probs); counters of the
    model's batches come back with each answer (a request of k clips in a batch of B adds k / B batches, so the sums
    are exact whatever the replicas)."""

    def __init__(self, handle, info: dict, app_name: str, replicas: int) -> None:
        self.handle = handle
        self.app_name = app_name
        self.source = info["source"]
        self.backend = f"{info['backend']} (Ray Serve deployment {app_name}, {replicas} replica(s))"
        self.input_size = tuple(info["input_size"])
        self.embedding_dim = info["embedding_dim"]
        self.action_names = list(info["action_names"])
        self.actions_trained = info["actions_trained"]
        self.resize = info["resize"]
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="reid-serve")
        self._lock = threading.Lock()
        self.requests = 0
        self.clips = 0
        self.model_batches = 0.0  # sum of k / B
        self.cross_camera_batches = 0.0  # the same over batches holding clips of 2+ cameras
        self.max_batch = 0  # largest model batch (clips)
        self.max_request = 0  # largest request (clips): a model batch larger than this merged requests
        self.model_s = 0.0  # sum of model_s * k / B: each batch's model time once
        # timing of the requests answered at the first try (a retry waits for a replica's restart)
        self.timed_requests = 0
        self.timed_clips = 0
        self.call_s = 0.0  # sum of the requests' wall times
        self.in_replica_s = 0.0
        self.wait_s = 0.0  # sum of the requests' batch waits in the replica (in_replica - model)
        self.lost_clips = 0
        self.errors = 0
        self.retries = 0

    def submit(self, clips: np.ndarray, camera_id: str) -> Future:
        return self._pool.submit(self._call, clips, camera_id)

    def encode(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One blocking request (`ClipEncoder.encode`'s signature)."""
        return self._call(clips, "")

    def _call(self, clips: np.ndarray, camera_id: str) -> tuple[np.ndarray, np.ndarray]:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        for attempt in (0, 1):
            try:
                t0 = time.perf_counter()
                emb, probs, batch, cameras, model_s, in_replica = self.handle.encode.remote(clips, camera_id).result(
                    timeout_s=REQUEST_TIMEOUT_S)
                wall = time.perf_counter() - t0
            except (RayActorError, ActorDiedError, ActorUnavailableError) as err:
                if attempt:
                    with self._lock:
                        self.lost_clips += len(clips)
                    log.warning("Re-ID deployment: %d clips lost with a dead replica (%s)", len(clips),
                                str(err).splitlines()[0][:120])
                    raise
                with self._lock:
                    self.retries += 1
                log.warning("Re-ID deployment: a replica died; sending its request again (Serve restarts it)")
                time.sleep(1.0)
                continue
            except Exception:
                with self._lock:
                    self.errors += 1
                    self.lost_clips += len(clips)
                log.exception("Re-ID deployment: a request of %d clips failed", len(clips))
                raise
            share = len(clips) / batch
            with self._lock:
                self.requests += 1
                self.clips += len(clips)
                self.model_batches += share
                self.cross_camera_batches += share if cameras > 1 else 0.0
                self.max_batch = max(self.max_batch, int(batch))
                self.max_request = max(self.max_request, len(clips))
                self.model_s += model_s * share
                if not attempt:
                    self.timed_requests += 1
                    self.timed_clips += len(clips)
                    self.call_s += wall
                    self.in_replica_s += in_replica
                    self.wait_s += in_replica - model_s
            return emb, probs
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class ServedReIDStage(PrecroppedReIDStage):
    """`PrecroppedReIDStage` whose model is the Serve deployment: each step sends one request per camera (its clips
    as one array, split at `reid.max_batch`) without waiting; Serve merges them into the model's batches. The local
    `ReIDBatcher` is not used."""

    def __init__(self, cfg, client: ServeClient) -> None:
        super().__init__(cfg, client)
        self.batcher.stop()  # batching happens in the deployment
        self._sent: deque[tuple[int, list[ClipRequest], Future]] = deque()  # (step, clips, answer) in send order
        self._inflight = 0
        self.submitted = 0
        self.processed = 0
        self.dropped = 0

    def _submit(self, requests: list[ClipRequest]) -> None:
        self._requests.extend(requests)

    def on_step(self, step) -> None:
        self._send(step.index)
        if self.grouped:
            lag = self.cfg.file_result_lag_steps
            while self._sent and self._sent[0][0] <= step.index - lag:
                step.appearance.extend(self._apply(self._collect([self._sent.popleft()])))
        else:
            done, waiting = [], deque()
            for sent in self._sent:
                (done if sent[2].done() else waiting).append(sent)
            self._sent = waiting
            if done:
                step.appearance.extend(self._apply(self._collect(done)))

    def results_now(self, timeout: float = 120.0):
        self._send(1 << 62)
        sent, self._sent = list(self._sent), deque()
        return self._apply(self._collect(sent, timeout))

    def close(self, end) -> None:
        try:
            super().close(end)
        finally:
            self.encoder.close()

    def _send(self, step_index: int) -> None:
        """This step's clips: one request per camera, in chunks of at most `reid.max_batch` clips."""
        if not self._requests:
            return
        by_camera: dict[str, list[ClipRequest]] = {}
        for r in self._requests:
            by_camera.setdefault(r.camera_id, []).append(r)
        self._requests = []
        n = self.cfg.max_batch
        for camera_id, clips in by_camera.items():
            for i in range(0, len(clips), n):
                chunk = clips[i:i + n]
                self.submitted += len(chunk)
                if not self.grouped and self._inflight + len(chunk) > self.cfg.max_queue:
                    self.dropped += len(chunk)  # live and the service is behind: the newest clips wait for later
                    if self.dropped == len(chunk):
                        log.warning("Re-ID is falling behind: dropping clips (%d in flight)", self._inflight)
                    continue
                future = self.encoder.submit(np.stack([r.crops for r in chunk]), camera_id)
                self._inflight += len(chunk)
                self._sent.append((step_index, chunk, future))

    def _collect(self, sent: list, timeout: float | None = None) -> list[ClipResult]:
        """The results of these requests, in send order (clips of a failed request are missing)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for _, clips, future in sent:
            self._inflight -= len(clips)
            try:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                emb, probs = future.result(timeout=left)
            except Exception:  # noqa: BLE001 - counted by the client (lost, errors) or timed out
                if not future.done():
                    log.warning("Re-ID: %d clips not done in time", len(clips))
                    future.cancel()
                continue
            self.processed += len(clips)
            for r, e, p in zip(clips, emb, probs):
                out.append(r.result(e, p))
        return out

    def counters(self) -> dict:
        """The local stage's counters (batches: the model's, as Serve formed them) plus the deployment's: requests,
        largest model batch, batches holding clips of 2+ cameras, clips lost with a dead replica, hand-off cost."""
        e = self.encoder
        batches = e.model_batches
        return dict(processed=self.processed, submitted=self.submitted, dropped=self.dropped,
                    batches=int(round(batches)), mean_batch=e.clips / batches if batches else 0.0,
                    busy_s=e.model_s, errors=e.errors, skipped=sum(self.skipped_on_cameras.values()),
                    tracks_with_embedding=sum(len(a.tracks) for a in self.appearances.values()),
                    requests=e.requests, mean_request=e.clips / e.requests if e.requests else 0.0,
                    max_batch=e.max_batch, max_request=e.max_request, cross_camera_batches=int(round(e.cross_camera_batches)),
                    lost_in_service=e.lost_clips, retries=e.retries, service_call_s=round(e.call_s, 3),
                    service_model_s=round(e.model_s, 3),
                    batch_wait_ms=round(1000 * e.wait_s / e.timed_requests, 3) if e.timed_requests else 0.0,
                    handoff_ms_per_clip=(round(1000 * (e.call_s - e.in_replica_s) / e.timed_clips, 3)
                                         if e.timed_clips else 0.0))

    def summary_line(self) -> str:
        c = self.counters()
        return (f"Re-ID (Ray Serve): {c['processed']} clips in {c['requests']} requests, {c['batches']} model "
                f"batches (mean {c['mean_batch']:.1f}, largest {c['max_batch']}, {c['cross_camera_batches']} across "
                f"cameras), {c['dropped']} dropped, {c['lost_in_service']} lost in the service, "
                f"{c['tracks_with_embedding']} tracks with an embedding, model busy {c['busy_s']:.1f} s, batch wait "
                f"{c['batch_wait_ms']:.0f} ms/request, hand-off {c['handoff_ms_per_clip']:.2f} ms/clip")


__all__ = ["ReIDDeployment", "ServeClient", "ServedReIDStage", "clip_count"]
