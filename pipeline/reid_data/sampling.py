"""Identity sampler (P identities x K tracklets per batch) and temporal clip sampling."""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np


def sample_train_indices(n: int, t: int, mode: str = "restricted_random", rng: random.Random | None = None) -> list[int]:
    """T frame indices of a length-n tracklet for training.

    restricted_random (the paper's): split the tracklet into T equal chunks and take one random frame from each;
    random: T sorted random frames; evenly: T evenly spaced frames. Short tracklets repeat frames.
    """
    rng = rng or random
    if n <= 0:
        raise ValueError("empty tracklet")
    if mode == "evenly":
        return sample_evenly(n, t)
    if n < t:
        return sorted(rng.choice(range(n)) for _ in range(t)) if mode == "random" else sorted(list(range(n)) + [n - 1] * (t - n))
    if mode == "random":
        return sorted(rng.sample(range(n), t))
    edges = np.linspace(0, n, t + 1)
    out = []
    for i in range(t):
        lo, hi = int(edges[i]), max(int(edges[i]) + 1, int(edges[i + 1]))
        out.append(rng.randrange(lo, hi))
    return out


def sample_evenly(n: int, t: int) -> list[int]:
    return [int(round(x)) for x in np.linspace(0, n - 1, t)]


def dense_clips(n: int, t: int, max_clips: int | None = None, select: str = "evenly") -> list[list[int]]:
    """Consecutive chunks of T frames covering the tracklet; the last one is padded with its last frame.
    With `max_clips`, only that many chunks (bounded compute on long tracklets): `select="evenly"` spreads them over
    the tracklet, `select="first"` keeps the first ones (the official code: at most 41 clips, from the start)."""
    if select not in ("evenly", "first"):
        raise ValueError(f"dense clip selection must be 'evenly' or 'first', got {select!r}")
    clips = []
    for start in range(0, n, t):
        idx = list(range(start, min(start + t, n)))
        clips.append(idx + [idx[-1]] * (t - len(idx)))
    if max_clips and len(clips) > max_clips:
        if select == "first":
            return clips[:max_clips]
        keep = sorted({int(round(x)) for x in np.linspace(0, len(clips) - 1, max_clips)})
        clips = [clips[i] for i in keep]
    return clips


EPOCHS = ("tracklets", "identities")


class RandomIdentitySampler:
    """Yields batches (lists of dataset indices) of P distinct identities x K tracklets each.

    epoch="tracklets": one epoch covers every training tracklet about once: each identity's tracklets are shuffled
    and cut into chunks of K (an identity with < K tracklets repeats some to make one chunk), and batches draw P
    identities among those with chunks left; len = sum over identities of max(1, n_i // K), divided by P.
    epoch="identities" (the official Re-ID-AR code): one epoch is one pass over the identities in random order, each
    drawn once with K of its tracklets (without replacement when it has >= K, else with replacement), grouped P by P;
    the incomplete last batch is dropped, so len = n_identities // P (625 // 16 = 39 on MARS)."""

    def __init__(self, pids: list[int], p: int, k: int, seed: int | None = None, epoch: str = "tracklets") -> None:
        if epoch not in EPOCHS:
            raise ValueError(f"sampler epoch must be one of {EPOCHS}, got {epoch!r}")
        self.p, self.k, self.epoch = p, k, epoch
        self.index: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            self.index[pid].append(i)
        self.pids = sorted(self.index)
        if len(self.pids) < p:
            raise ValueError(f"P x K sampler needs at least P={p} identities, the training set has {len(self.pids)}")
        self.rng = random.Random(seed)

    def batches(self) -> list[list[int]]:
        """One epoch of batches (P * K indices each)."""
        if self.epoch == "identities":
            return self._identity_pass()
        chunks: dict[int, list[list[int]]] = {}
        for pid in self.pids:
            idx = list(self.index[pid])
            if len(idx) < self.k:
                idx = idx + [self.rng.choice(idx) for _ in range(self.k - len(idx))]
            self.rng.shuffle(idx)
            chunks[pid] = [idx[i:i + self.k] for i in range(0, len(idx) - self.k + 1, self.k)]
        avail = [pid for pid in self.pids if chunks[pid]]
        out = []
        while len(avail) >= self.p:
            chosen = self.rng.sample(avail, self.p)
            batch = []
            for pid in chosen:
                batch.extend(chunks[pid].pop())
                if not chunks[pid]:
                    avail.remove(pid)
            out.append(batch)
        return out

    def _identity_pass(self) -> list[list[int]]:
        order = list(self.pids)
        self.rng.shuffle(order)
        out = []
        for start in range(0, len(order) - self.p + 1, self.p):
            batch = []
            for pid in order[start:start + self.p]:
                idx = self.index[pid]
                if len(idx) >= self.k:
                    batch.extend(self.rng.sample(idx, self.k))
                else:
                    batch.extend(self.rng.choice(idx) for _ in range(self.k))
            out.append(batch)
        return out

    def __iter__(self):
        for batch in self.batches():
            yield batch

    def __len__(self) -> int:
        if self.epoch == "identities":
            return len(self.pids) // self.p
        return max(1, sum(max(1, len(v) // self.k) for v in self.index.values()) // self.p)
