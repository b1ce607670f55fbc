"""Simultaneous detections of overlapping views -> ground observations of one person each.

`cluster_detections` gathers detections of different cameras whose foot points agree (Mahalanobis distance under
their joint covariance, and at most `gate_m` metres apart), at most one detection per camera per cluster, complete
linkage (every pair in a cluster passes the gate), closest pairs first; appearance (cosine distance of embeddings,
when both have one) can veto a pair. `fuse_points` merges a cluster's points into one measurement (information-
weighted mean and its covariance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ViewDetection:
    """One detection of one view on the ground: camera, its row in that camera's input, point (2,) m, cov (2, 2) m^2,
    score, embedding (D,) L2-normalised or None."""

    camera_id: str
    index: int
    point: np.ndarray
    cov: np.ndarray
    score: float
    embedding: np.ndarray | None = None


def mahalanobis2(a: np.ndarray, cov_a: np.ndarray, b: np.ndarray, cov_b: np.ndarray) -> float:
    """Squared Mahalanobis distance between two uncertain points (2,) with covariances (2, 2)."""
    d = a - b
    return float(d @ np.linalg.solve(cov_a + cov_b, d))


def fuse_points(points: np.ndarray, covs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Information-weighted mean (2,) and covariance (2, 2) of points (K, 2) with covariances (K, 2, 2)."""
    if len(points) == 1:  # the common case, without the batch machinery
        return points[0].copy(), covs[0].copy()
    mean, cov = fuse_groups(points, covs, np.array([len(points)]))
    return mean[0], cov[0]


def fuse_groups(points: np.ndarray, covs: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`fuse_points` of many groups at once: points (M, 2) and covs (M, 2, 2) hold the groups one after another,
    sizes (G,) their lengths (>= 1) -> means (G, 2), covariances (G, 2, 2). A group of one is its point."""
    sizes = np.asarray(sizes)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    info = inv2(covs)
    cov = inv2(np.add.reduceat(info, starts, axis=0))
    mean = np.einsum("gij,gj->gi", cov, np.add.reduceat(np.einsum("kij,kj->ki", info, points), starts, axis=0))
    one = sizes == 1
    mean[one], cov[one] = points[starts[one]], covs[starts[one]]
    return mean, cov


def inv2(m: np.ndarray) -> np.ndarray:
    """Inverses of 2x2 matrices (K, 2, 2)."""
    det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    out = np.empty_like(m)
    out[:, 0, 0], out[:, 1, 1] = m[:, 1, 1], m[:, 0, 0]
    out[:, 0, 1], out[:, 1, 0] = -m[:, 0, 1], -m[:, 1, 0]
    return out / det[:, None, None]


def cluster_detections(dets: list[ViewDetection], gate_sigma: float = 3.0, gate_m: float = 1.5,
                       max_app_dist: float | None = None) -> list[list[ViewDetection]]:
    """Clusters (lists of detections of distinct cameras) of `dets`; every detection is in exactly one cluster.

    A pair may join when its Mahalanobis distance <= gate_sigma, its distance <= gate_m metres and, when both have
    embeddings and max_app_dist is set, its cosine distance <= max_app_dist."""
    n = len(dets)
    if n == 0:
        return []
    ok = np.zeros((n, n), bool)
    d2 = np.full((n, n), np.inf)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = dets[i], dets[j]
            if a.camera_id == b.camera_id:
                continue
            if np.linalg.norm(a.point - b.point) > gate_m:
                continue
            m = mahalanobis2(a.point, a.cov, b.point, b.cov)
            if m > gate_sigma ** 2:
                continue
            if max_app_dist is not None and a.embedding is not None and b.embedding is not None:
                if 1.0 - float(a.embedding @ b.embedding) > max_app_dist:
                    continue
            ok[i, j] = ok[j, i] = True
            d2[i, j] = d2[j, i] = m
    cluster_of = list(range(n))
    members = {i: [i] for i in range(n)}
    pairs = sorted(((d2[i, j], i, j) for i in range(n) for j in range(i + 1, n) if ok[i, j]))
    for _, i, j in pairs:
        ci, cj = cluster_of[i], cluster_of[j]
        if ci == cj:
            continue
        mi, mj = members[ci], members[cj]
        cams = {dets[k].camera_id for k in mi}
        if any(dets[k].camera_id in cams for k in mj):
            continue
        if not all(ok[a, b] for a in mi for b in mj):
            continue
        for k in mj:
            cluster_of[k] = ci
        members[ci] = mi + mj
        del members[cj]
    return [[dets[k] for k in sorted(m)] for m in members.values()]
