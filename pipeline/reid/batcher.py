"""`ReIDBatcher`: one queue shared by all cameras, batched Re-ID-AR inference on a worker thread.

A batch closes when it holds `max_batch` clips or its oldest clip has waited `max_wait_ms`. Results come back as
`ClipResult`s keyed by (camera_id, track_id), whatever the completion order. Back-pressure: when `max_queue` clips are
pending, a new clip evicts the oldest pending clip of a track that already has an embedding (else the oldest clip);
every drop is counted.

Recorded files use groups instead (`submit_group` / `wait_group`): a group's clips are batched only with each other,
in submission order, never dropped, and its results are collected whole, so what the model sees and returns depends
on the data only, not on timing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.reid.clips import ClipRequest, ClipResult

log = logging.getLogger("mcsa.reid")


@dataclass
class BatcherStats:
    submitted: int = 0
    processed: int = 0
    dropped: int = 0
    dropped_with_embedding: int = 0
    batches: int = 0
    errors: int = 0
    busy_s: float = 0.0  # time spent in the model

    @property
    def mean_batch(self) -> float:
        return self.processed / self.batches if self.batches else 0.0


class ReIDBatcher:
    """Batches `ClipRequest`s from all cameras through a `ClipEncoder`-like object (`encode(clips) -> (emb, probs)`)."""

    def __init__(self, encoder, max_batch: int = 32, max_wait_ms: float = 50.0, max_queue: int = 256) -> None:
        self.encoder = encoder
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self.stats = BatcherStats()
        self._pending: deque[tuple[float, ClipRequest, tuple[int, int] | None]] = deque()  # (t, clip, (group, slot))
        self._results: list[ClipResult] = []
        self._groups: dict[int, list[ClipResult | None]] = {}
        self._group_left: dict[int, int] = {}
        self._next_group = 0
        self._inflight = 0
        self._cond = threading.Condition()
        self._stop = False
        self._flushing = 0
        self._thread = threading.Thread(target=self._worker, name="reid-batcher", daemon=True)

    def start(self, warm_up: Callable[[], object] | None = None) -> "ReIDBatcher":
        """Start the worker thread. warm_up: run first ON that thread, and waited for here (e.g. the encoder's
        `warm_up`): PyTorch caches cuDNN's execution plans per thread, so a warm-up elsewhere would not spare the
        worker its slow first call at each batch shape. A failing warm-up is logged; batches still run."""
        self._warm_up = warm_up
        self._warmed = threading.Event()
        self._thread.start()
        self._warmed.wait()
        return self

    def submit(self, request: ClipRequest) -> None:
        """Queue a clip (never blocks; evicts a clip when the queue is full)."""
        with self._cond:
            self.stats.submitted += 1
            ungrouped = [i for i, (_, _, tag) in enumerate(self._pending) if tag is None]
            if len(ungrouped) >= self.max_queue:
                victim = next((i for i in ungrouped if self._pending[i][1].has_embedding), ungrouped[0])
                dropped = self._pending[victim][1]
                del self._pending[victim]
                self.stats.dropped += 1
                self.stats.dropped_with_embedding += int(dropped.has_embedding)
                if self.stats.dropped == 1:
                    log.warning("Re-ID is falling behind: dropping clips (tracks that have an embedding first)")
            self._pending.append((time.monotonic(), request, None))
            self._cond.notify_all()

    def submit_group(self, requests: list[ClipRequest]) -> int:
        """Queue clips as one group (batched only among themselves, in order, never dropped); returns its ticket."""
        with self._cond:
            group = self._next_group
            self._next_group += 1
            self._groups[group] = [None] * len(requests)
            self._group_left[group] = len(requests)
            now = time.monotonic()
            for slot, request in enumerate(requests):
                self._pending.append((now, request, (group, slot)))
            self.stats.submitted += len(requests)
            self._cond.notify_all()
        return group

    def wait_group(self, group: int, timeout: float | None = None) -> list[ClipResult]:
        """Block until every clip of `group` is done (or `timeout` s pass); its results in submission order (clips of
        a failed batch are missing)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._group_left.get(group, 0) > 0 and self._thread.is_alive():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    log.warning("Re-ID: %d clips of a group not done in time", self._group_left[group])
                    break
                self._cond.wait(remaining)
            self._group_left.pop(group, None)
            results = self._groups.pop(group, [])
        return [r for r in results if r is not None]

    def poll(self) -> list[ClipResult]:
        """The results finished since the last call (never blocks)."""
        with self._cond:
            out, self._results = self._results, []
        return out

    def drain(self, timeout: float = 120.0) -> list[ClipResult]:
        """Process everything queued now (partial batches included) and return all unread results."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while (self._pending or self._inflight) and self._thread.is_alive():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        log.warning("Re-ID drain timed out with %d clips pending", len(self._pending))
                        break
                    self._cond.wait(remaining)
            finally:
                self._flushing -= 1
        return self.poll()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending) + self._inflight

    # ---- worker -------------------------------------------------------------------------------------------------
    def _next_batch(self) -> list[tuple[ClipRequest, tuple[int, int] | None]] | None:
        with self._cond:
            while not self._pending and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            head = self._pending[0][2]
            if head is None:  # live clips: wait for the batch to fill, at most max_wait_ms
                deadline = self._pending[0][0] + self.max_wait_s
                while len(self._pending) < self.max_batch and not self._stop and not self._flushing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            batch = []  # consecutive clips of one group (or ungrouped ones), never mixed
            while self._pending and len(batch) < self.max_batch:
                tag = self._pending[0][2]
                if (tag is None) != (head is None) or (tag is not None and tag[0] != head[0]):
                    break
                batch.append(self._pending.popleft()[1:])
            self._inflight += len(batch)
            return batch

    def _worker(self) -> None:
        try:
            if self._warm_up is not None:
                self._warm_up()
        except Exception:  # noqa: BLE001 - a warm-up is an optimisation: the batches will tune themselves
            log.exception("Re-ID warm-up failed; continuing without it")
        finally:
            self._warmed.set()
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            results: list[tuple[ClipResult, tuple[int, int] | None]] = []
            start = time.perf_counter()
            try:
                emb, probs = self.encoder.encode(np.stack([r.crops for r, _ in batch]))
                for (r, tag), e, p in zip(batch, emb, probs):
                    results.append((r.result(e, p), tag))
            except Exception:  # noqa: BLE001 - a failing batch must not kill the stage
                self.stats.errors += 1
                log.exception("Re-ID batch of %d clips failed", len(batch))
            elapsed = time.perf_counter() - start
            with self._cond:
                self._inflight -= len(batch)
                for _, tag in batch:
                    if tag is not None and tag[0] in self._group_left:
                        self._group_left[tag[0]] -= 1
                for result, tag in results:
                    if tag is None:
                        self._results.append(result)
                    elif tag[0] in self._groups:
                        self._groups[tag[0]][tag[1]] = result
                self.stats.processed += len(results)
                self.stats.batches += 1
                self.stats.busy_s += elapsed
                self._cond.notify_all()
