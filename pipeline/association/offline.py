"""Offline refinement for recorded runs: constrained agglomerative clustering of all tracklets.

Every pair of tracklets gets a score (cosine of their embeddings, plus the ground-plane bonus where they are seen at
the same moments in overlapping cameras; ground evidence alone counts as `match_threshold` + bonus) and a cannot-link
flag (`topology.check_pair`: simultaneous in one camera or in non-overlapping cameras, transit window, ground gate).
Average linkage (pair scores weighted by each tracklet's evidence, min(clips, 10)) merges the best pair of clusters
while its score is >= `offline_threshold` and no pair across them is a cannot-link. Refined ids reuse the online id
that covers most boxes of a cluster (each online id at most once), new ids otherwise.
"""

from __future__ import annotations

import numpy as np

from pipeline.association.topology import CameraTopology, check_pair

NO_LINK = -np.inf


def pair_scores(tracks, topology: CameraTopology, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores (N, N) with NaN where there is no evidence, evidence weights (N, N), cannot-link (N, N) bool)."""
    n = len(tracks)
    spans = [t.span() for t in tracks]
    has = np.array([t.embedding is not None for t in tracks], bool)
    dim = next((t.embedding.size for t in tracks if t.embedding is not None), 1)
    emb = np.zeros((n, dim), np.float32)
    for i, t in enumerate(tracks):
        if t.embedding is not None and cfg.use_appearance:
            emb[i] = t.embedding
    has &= bool(cfg.use_appearance)
    scores = np.where(has[:, None] & has[None, :], emb @ emb.T, np.nan).astype(np.float64)
    w = np.array([min(max(t.n_clips, 1), 10) for t in tracks], np.float64)
    weights = w[:, None] * w[None, :]
    cannot = np.zeros((n, n), bool)
    if True:  # with `constraints: false` the topology only keeps one camera's simultaneous tracks apart
        for i in range(n):
            for j in range(i + 1, n):
                v = check_pair(topology, spans[i], spans[j], ground_gate=cfg.ground_gate,
                               overlap_tolerance_s=cfg.overlap_tolerance_s, sync_tolerance_s=cfg.sync_tolerance_s)
                if not v.ok:
                    cannot[i, j] = cannot[j, i] = True
                elif v.ground_distance is not None:
                    bonus = cfg.ground_weight * (1.0 - v.ground_distance / cfg.ground_gate)
                    base = scores[i, j] if not np.isnan(scores[i, j]) else cfg.match_threshold
                    scores[i, j] = scores[j, i] = base + bonus
    np.fill_diagonal(scores, np.nan)
    return scores, weights, cannot


def cluster(scores: np.ndarray, weights: np.ndarray, cannot: np.ndarray, threshold: float) -> np.ndarray:
    """Constrained average-linkage clustering; returns a cluster label (N,) per item."""
    n = len(scores)
    ok = ~np.isnan(scores)
    S = np.where(ok, scores * weights, 0.0)
    C = np.where(ok, weights, 0.0)
    CL = cannot.copy()
    active = np.ones(n, bool)
    label = np.arange(n)
    while True:
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = np.where((C > 0) & ~CL & active[:, None] & active[None, :], S / np.maximum(C, 1e-12), NO_LINK)
        np.fill_diagonal(avg, NO_LINK)
        k = int(np.argmax(avg))
        i, j = divmod(k, n)
        if avg[i, j] < threshold:
            break
        S[i] += S[j]
        S[:, i] += S[:, j]
        C[i] += C[j]
        C[:, i] += C[:, j]
        CL[i] |= CL[j]
        CL[:, i] |= CL[:, j]
        S[i, i] = C[i, i] = 0
        active[j] = False
        S[j] = S[:, j] = C[j] = C[:, j] = 0
        label[label == j] = i
    return label


def refine(tracks, topology: CameraTopology, cfg, online_ids: dict | None = None) -> dict[tuple[str, int], int]:
    """Refined global id per track key (camera, track id) for all `tracks` (`TrackState`s of the whole run)."""
    if not tracks:
        return {}
    scores, weights, cannot = pair_scores(tracks, topology, cfg)
    labels = cluster(scores, weights, cannot, cfg.offline_threshold)
    online_ids = online_ids or {}
    groups: dict[int, list[int]] = {}
    for i, lab in enumerate(labels.tolist()):
        groups.setdefault(lab, []).append(i)
    order = sorted(groups.values(), key=lambda g: -sum(tracks[i].n_boxes for i in g))
    used: set[int] = set()
    next_id = max(list(online_ids.values()) + [0]) + 1
    out: dict[tuple[str, int], int] = {}
    for members in order:
        votes: dict[int, int] = {}
        for i in members:
            g = online_ids.get(tracks[i].key)
            if g is not None and g not in used:
                votes[g] = votes.get(g, 0) + tracks[i].n_boxes
        if votes:
            gid = max(votes, key=lambda g: (votes[g], -g))
        else:
            gid, next_id = next_id, next_id + 1
        used.add(gid)
        for i in members:
            out[tracks[i].key] = gid
    return out
