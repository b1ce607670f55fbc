"""Self-alignment of overlapping views on the ground plane: one affine correction per camera, learnt while running.

Homographies fitted by hand disagree systematically about where a person stands: on the EPFL scenes two views of one
person land 0.5-0.6 m apart (median, 1.1-1.6 m at the 99th percentile), and most of that is a smooth, per-camera
error (a small shift, scale and shear of the floor). With one affine map per camera fitted so that every view agrees
with the others, the ground-truth boxes of those scenes disagree by 0.2 m (median) instead (Laboratory: 0.64 ->
0.20 m, Terrace: 0.51 -> 0.19 m); learnt online by the fusion from a simulated detector (no labels), the Laboratory
views reach 0.28 m.

`ViewAlignment` learns these maps from the fusion's own confident moments, no labels: a confirmed person seen by two
or more views at once, by uncut confident boxes, with nobody else within `isolation_m` (so the views cannot be
looking at two different people). Every `every_s` seconds it refits all cameras by alternating least squares (each
camera's map to the mean of the others' corrected points), ridge-regularised towards the identity (a camera seen
over a small patch of floor gets mostly a shift), then removes the mean map (the corrections agree with each other,
they do not move the whole site). A camera gets its map once it has `min_samples` samples. A refit reads the samples
once, into their second moments (one matrix product), and iterates on those: about 1.5 ms for a full buffer of 5000
samples and 4 cameras.

    align = ViewAlignment(["c0", "c1"])
    pts_m = align.apply("c0", raw_pts_m)              # (N, 2) m -> (N, 2) m in the aligned frame
    align.add({"c0": p0, "c1": p1})                   # one person, one moment, raw points (2,) m per view
    align.refit(time_s)                               # no-op until every_s has passed
"""

from __future__ import annotations

import numpy as np


def _moment(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a^T b (P, Q) of a (S, P) and b (S, Q), summed over the samples S in numpy's own loop, not a BLAS gemm: a
    multi-threaded gemm over thousands of samples leaves OpenBLAS's worker threads spinning after it, which cost a
    second core's worth of CPU for the rest of every step (bench/fusion.py --speed, steady state: 2.4 ms of CPU per
    step with the gemm, 1.2 ms without)."""
    return np.einsum("si,sj->ij", a, b)


class ViewAlignment:
    """Per-camera affine ground corrections g' = A g + b (A (2, 2), b (2,) m), identity until learnt."""

    def __init__(self, cameras, min_samples: int = 100, every_s: float = 1.0, ridge: float = 20.0,
                 max_samples: int = 5000) -> None:
        self.cameras = list(cameras)
        self.min_samples = min_samples
        self.every_s = every_s
        self.ridge = ridge  # pull towards the identity, in samples' worth of evidence
        self._index = {c: k for k, c in enumerate(self.cameras)}
        # ring buffer of samples (max_samples, C, 2) raw points, NaN where a camera did not see; the oldest goes first
        self._buf = np.full((max(int(max_samples), 1), len(self.cameras), 2), np.nan)
        self._count = 0  # samples ever added
        self.maps = {c: (np.eye(2), np.zeros(2)) for c in self.cameras}
        self.residual_m: dict[str, float] = {}  # RMS disagreement of each camera with the others after alignment
        self.last_fit: float | None = None
        self.fits = 0

    def apply(self, cam: str, pts: np.ndarray) -> np.ndarray:
        """Raw ground points (N, 2) m of camera `cam` -> aligned points (N, 2) m."""
        a, b = self.maps.get(cam, (None, None))
        if a is None:
            return pts
        return pts @ a.T + b

    def linear(self, cam: str) -> np.ndarray:
        """The camera's linear part A (2, 2) (covariances transform as A C A^T)."""
        return self.maps.get(cam, (np.eye(2), None))[0]

    def add(self, sample: dict[str, np.ndarray]) -> None:
        """One person at one moment: raw ground points (2,) m of two or more cameras."""
        if len(sample) < 2:
            return
        row = self._buf[self._count % len(self._buf)]
        row[:] = np.nan
        for c, p in sample.items():
            if c in self._index:
                row[self._index[c]] = p
        self._count += 1

    @property
    def samples(self) -> np.ndarray:
        """The kept samples (S, C, 2) raw points in metres, NaN where a camera did not see the person (a view of the
        ring buffer, in no particular order: every use is order-free)."""
        return self._buf[:min(self._count, len(self._buf))]

    def counts(self) -> dict[str, int]:
        """Samples per camera."""
        valid = np.isfinite(self.samples[:, :, 0])
        return dict(zip(self.cameras, valid.sum(axis=0).tolist()))

    def refit(self, t: float) -> bool:
        """Refit every camera's map from the samples (when every_s has passed); True when the maps changed."""
        if self.last_fit is not None and t - self.last_fit < self.every_s:
            return False
        self.last_fit = t
        pts = self.samples  # (S, C, 2) raw points, NaN where a camera did not see the person
        if not len(pts):
            return False
        valid = np.isfinite(pts[:, :, 0])
        ready = [k for k in range(len(self.cameras)) if valid[:, k].sum() >= self.min_samples]
        if len(ready) < 2:
            return False
        n_cam = len(self.cameras)
        # every camera's map as one (3, 2) matrix W = [A^T; b] acting on x = [raw point, 1]: corrected = x W
        w_maps = np.stack([np.vstack([self.maps[c][0].T, self.maps[c][1]]) for c in self.cameras])  # (C, 3, 2)
        reg = np.diag([self.ridge, self.ridge, 0.0])
        target = np.vstack([np.eye(2), np.zeros((1, 2))])
        # x of every camera side by side (S, 3 C), zero rows where a camera did not see the person
        x = np.concatenate([np.nan_to_num(pts), np.ones(pts.shape[:2] + (1,))], axis=2) * valid[:, :, None]
        x = x.reshape(len(pts), 3 * n_cam)
        seen = valid.sum(axis=1)  # views per sample
        shared = seen > 1  # samples another view also saw
        inv_others = np.where(shared, 1.0 / np.maximum(seen - 1, 1), 0.0)  # (S,) 1 / (other views)
        # second moments, all the least squares needs (the samples themselves are not touched again):
        # own[k] = sum over shared samples of x_k x_k^T; cross[k, j] = sum of x_k x_j^T / (other views)
        own = _moment(x * shared[:, None], x).reshape(n_cam, 3, n_cam, 3).transpose(0, 2, 1, 3)
        own = own[np.arange(n_cam), np.arange(n_cam)]  # (C, 3, 3)
        cross = _moment(x * inv_others[:, None], x).reshape(n_cam, 3, n_cam, 3).transpose(0, 2, 1, 3)  # (C, C, 3, 3)
        for _ in range(3):
            for k in ready:
                # each camera's corrected points against the mean of the other views' corrected points, per sample:
                # ridge towards A = I: minimise |x_k W_k - mean_others|^2 + ridge |A_k - I|^2 (the shift is free)
                rhs = sum(cross[k, j] @ w_maps[j] for j in range(n_cam) if j != k)
                w_maps[k] = np.linalg.solve(own[k] + reg, rhs + reg @ target)
        # the corrections agree with each other; remove their mean so the whole site does not drift
        a, b = w_maps[:, :2].transpose(0, 2, 1), w_maps[:, 2]
        inv = np.linalg.inv(a[ready].mean(axis=0))
        b_mean = b[ready].mean(axis=0)
        for k in ready:
            self.maps[self.cameras[k]] = (inv @ a[k], inv @ (b[k] - b_mean))
            w_maps[k] = np.vstack([self.maps[self.cameras[k]][0].T, self.maps[self.cameras[k]][1]])
        self.fits += 1
        self.residual_m = self._residuals(x, valid, inv_others, own, cross, w_maps, ready)
        return True

    def _residuals(self, x: np.ndarray, valid: np.ndarray, inv_others: np.ndarray, own: np.ndarray,
                   cross: np.ndarray, w_maps: np.ndarray, ready: list[int]) -> dict[str, float]:
        """RMS distance (m) of each ready camera's aligned points to the mean of the other views' aligned points, over
        the samples it shares with another view, from the second moments of `refit` (x (S, 3 C), moments, maps
        (C, 3, 2)): |x_k W_k - sum_j x_j W_j / n|^2 summed = W_k' own W_k - 2 W_k' cross_kj W_j + W_j' P_jl W_l."""
        n_cam = len(self.cameras)
        out = {}
        for k in ready:
            others = w_maps.copy()
            others[k] = 0.0
            flat = others.reshape(3 * n_cam, 2)
            wk = w_maps[k]
            p = _moment(x * (inv_others ** 2 * valid[:, k])[:, None], x)  # (3 C, 3 C): sum of x_j x_l^T / n^2
            total = (np.trace(wk.T @ own[k] @ wk)
                     - 2.0 * np.trace(wk.T @ cross[k].transpose(1, 0, 2).reshape(3, 3 * n_cam) @ flat)
                     + np.trace(flat.T @ p @ flat))
            n = int((valid[:, k] & (inv_others > 0)).sum())
            out[self.cameras[k]] = float(np.sqrt(max(total, 0.0) / max(n, 1)))
        return out

    def pair_disagreement(self) -> dict[tuple[str, str], float]:
        """Median distance (m) between two cameras' raw points of one person, per camera pair seen together."""
        pts = self.samples
        out = {}
        for i in range(len(self.cameras)):
            for j in range(i + 1, len(self.cameras)):
                both = np.isfinite(pts[:, i, 0]) & np.isfinite(pts[:, j, 0])
                if both.sum() >= self.min_samples:
                    d = np.linalg.norm(pts[both, i] - pts[both, j], axis=1)
                    out[(self.cameras[i], self.cameras[j])] = float(np.median(d))
        return out
