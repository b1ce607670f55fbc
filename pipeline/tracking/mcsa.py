"""`mcsa`: the project's default per-camera tracker (ByteTrack-style two-stage association on a filterpy Kalman filter,
with OC-SORT's observation-centric ideas and an optional appearance cost).

Written for this project from the papers' descriptions (SORT, ByteTrack, BoT-SORT, OC-SORT); no code was copied.

Motion model
    One `filterpy.kalman.KalmanFilter` per track, constant velocity. State (8): centre x, centre y, width w, height h
    and their velocities; measurement (4): cx, cy, w, h. Width and height are estimated directly (BoT-SORT's choice:
    the aspect-ratio state of ByteTrack fits box widths worse). Process and measurement noise are scaled by the
    current box size (position std = w/20, h/20, velocity std = w/160, h/160 per frame), so small far-away people
    and large near ones get comparable relative uncertainty. The measurement noise takes the LARGER of the predicted
    and the detected size: a detection cut short by an occluder (an upper body) is not trusted more than a whole one,
    so it does not shrink the box at once (scaling it by the detection alone cost 3-4 HOTA on Terrace c1 once the
    OC-SORT recovery is off; DeepSORT and BoT-SORT scale it by the prediction). While a track is lost, its height/width
    velocities are zeroed before each prediction so the box does not grow or shrink without evidence.

Association (per frame)
    1. confirmed + lost tracks  x  high-score detections (score >= `high_thresh`); cost = 1 - IoU (times the detection
       score when `fuse_score`), pairs with IoU < `iou_gate` are infeasible; optional OC-SORT momentum term (`inertia`)
       rewards detections lying in the direction the track was moving; optional appearance term (see below).
    2. still-unmatched tracks that were matched last frame  x  low-score detections (`low_thresh` <= score <
       `high_thresh`), IoU >= `low_iou_gate` (ByteTrack's second stage).
    3. observation-centric recovery (OC-SORT): remaining tracks' LAST OBSERVED box  x  remaining high-score
       detections, IoU >= `ocr_iou_gate` (recovers tracks whose prediction drifted during a short occlusion; with
       `ocr_max_gap` > 0 only for tracks lost at most that many frames). Only on cameras at <= `ocr_max_fps`
       frames/s: between frames far apart (PETS09 at 7 fps) the prediction drifts and the last observation is the
       better cue; at 25 fps the prediction is good and this stage mostly hands a lost person's identity to whoever
       now stands where they were last seen (Terrace: -2 / -4 HOTA with it).
    4. tentative tracks  x  remaining high-score detections, IoU >= `tentative_iou_gate`, fused cost <=
       `tentative_match_thresh`.
    5. remaining high-score detections with score >= `new_track_thresh` start tentative tracks.
    Every stage solves a gated assignment (pipeline.tracking.utils.linear_assignment): it maximises the summed margin
    below the stage's cost limit, so one clear pair wins over two marginal ones (the objective of lapjv with a cost
    limit, as ByteTrack uses), instead of maximising the number of pairs.

Observation-centric re-update (OC-SORT's ORU)
    When a track that missed >= 1 frame is matched again, its filter is rolled back to the state at its last
    observation (filterpy's own `x_post` / `P_post`, which `predict` leaves alone: no per-frame snapshot copies) and
    re-run along a virtual linear trajectory between that observation and the new one, so that the velocity
    accumulated while coasting does not survive the gap.
    Lost tracks in stage 1 may use a widened box (`lost_buffer`, BIoU-like) and a decaying velocity
    (`lost_velocity_decay`); both are off by default (they lowered HOTA/IDF1 in the benchmark).

Lifecycle (time-based: the camera's `frame_rate` turns seconds into frames)
    tentative (new) -> confirmed after `n_init` matches in a row (a tentative track that misses a frame is deleted)
    -> lost when unmatched (predicted only, kept `max_age` frames) -> removed. `max_age` = round(`max_lost_s` x
    frame_rate) and `n_init` = max(2, round(`confirm_s` x frame_rate)) unless given in frames: 11 / 2 at 7 fps, 38 / 4
    at 25 fps (frame counts tuned at one rate were wrong at the other: PETS09 wanted 9-12 / 2, Terrace >= 30 / 3-4).
    The pipeline passes each camera's own rate (`build_tracker_from_config(..., frame_rate=source.fps)`).
    During the first frame of a run every new track is confirmed at once. Ids are unique per instance and never
    reused, also across `reset()`.

Appearance hook
    `update(..., embeddings=E)` with one row per detection (NaN rows: no embedding for that detection) stores an
    exponential moving average (`embedding_momentum`) in `track.embedding`. With `appearance_weight` > 0, stage-1 pairs
    whose track and detection both have an embedding get cost (1 - a) * iou_cost + a * cosine_distance, and pairs with
    cosine distance > `appearance_gate` are infeasible (in stage 1 and in the stage-3 recovery, so that appearance
    vetoes an identity transfer after an occlusion). With `appearance_lost_only` (default) stage 1 applies it only to
    tracks that missed >= 1 frame: frame-level OSNet x0.25 embeddings of 360x288 Terrace crops are too weak to
    re-rank people who are tracked frame to frame (on every pair: -4.9 HOTA on Terrace c0 with the earlier frame-based
    defaults). Lost tracks only, with the current defaults (`bench/tracking.py --appearance`): +1.9 HOTA on PETS09,
    -0.7 on Terrace c0, +2.5 on c1; it needs per-detection embeddings, which cost more than the tracker itself.

Output
    Confirmed tracks matched in this frame. `output_box: filter` (default) reports the Kalman posterior, `detection`
    the matched detection's box (exact for downstream crops/Re-ID). In bench/tracking.py the filter box scored
    +0.4 HOTA on PETS09, +0.6 on PETS09 public detections and -0.1 on Terrace.

Measured (`python3 bench/tracking.py --repeat 3 --perturb 10`, same cached detections for every tracker, shared
defaults of configs/trackers/mcsa.yaml, each sequence's recorded frame rate)
    HOTA / IDF1, best Ultralytics tracker in brackets: PETS09-S2L1 58.74 / 78.93 (BoT-SORT 58.12 / 75.98),
    Terrace-c0 49.93 / 64.05 (BoT-SORT@ours 47.61 / 58.32), Terrace-c1 40.55 / 50.93 (BoT-SORT@ours 40.48 / 50.22),
    PETS09 public 50.85 / 71.21 (ByteTrack@ours 49.53 / 64.52). Mean over 10 perturbed copies of the detections:
    57.19 / 77.30 (56.29 / 74.03), 46.14 / 59.08 (46.08 / 56.97), 39.88 / 50.20 (37.98 / 47.35), 50.00 / 70.52
    (48.48 / 64.15). Tracker-only speed 1.20-1.24x Ultralytics ByteTrack's on the same detections (per-track filterpy
    predict/update kept; boxes, costs and bookkeeping vectorised; no ORU snapshot copies; empty frames return at once).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from filterpy.kalman import KalmanFilter

from pipeline.tracking.base import TRACKERS, Tracker
from pipeline.tracking.utils import clean_detections, iou_matrix, linear_assignment
from core.types import Detections, Tracks

TENTATIVE, CONFIRMED, LOST = 0, 1, 2

_F = np.eye(8)
_F[:4, 4:] = np.eye(4)
_H = np.eye(4, 8)
_STD_POS = 1.0 / 20.0
_STD_VEL = 1.0 / 160.0
# Q = diag(p*w, p*h, p*w, p*h, v*w, v*h, v*w, v*h)^2 and R = diag(p*w, p*h, p*w, p*h)^2 as w^2 * _QW + h^2 * _QH (no
# per-call np.diag)
_QW = np.diag(np.array([_STD_POS, 0, _STD_POS, 0, _STD_VEL, 0, _STD_VEL, 0]) ** 2)
_QH = np.diag(np.array([0, _STD_POS, 0, _STD_POS, 0, _STD_VEL, 0, _STD_VEL]) ** 2)
_RW = np.diag(np.array([_STD_POS, 0, _STD_POS, 0]) ** 2)
_RH = np.diag(np.array([0, _STD_POS, 0, _STD_POS]) ** 2)


def _to_z(box: np.ndarray) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    return np.array([[box[0] + w / 2.0], [box[1] + h / 2.0], [w], [h]])


def _z_to_xyxy(x: np.ndarray) -> np.ndarray:
    """(N, >=4) rows starting with cx, cy, w, h -> (N, 4) xyxy."""
    x = np.asarray(x).reshape(len(x), -1)
    w = np.maximum(x[:, 2], 1e-3)
    h = np.maximum(x[:, 3], 1e-3)
    return np.stack([x[:, 0] - w / 2, x[:, 1] - h / 2, x[:, 0] + w / 2, x[:, 1] + h / 2], axis=1)


class McsaTrack:
    """One track's filter and bookkeeping (kept lean: one object per track, no per-frame allocations beyond filterpy).

    The filter state at the last observation (needed by ORU) is filterpy's own `kf.x_post` / `kf.P_post`: `predict`
    leaves them alone, so no snapshot is copied per frame.
    """

    __slots__ = (
        "track_id", "kf", "state", "hits", "time_since_update", "score", "class_id", "embedding",
        "last_obs", "last_obs_frame", "obs_history", "start_frame",
    )

    def __init__(self, box: np.ndarray, score: float, class_id: int, track_id: int, frame_id: int) -> None:
        kf = KalmanFilter(dim_x=8, dim_z=4)
        kf.F = _F
        kf.H = _H
        z = _to_z(box)
        kf.x[:4] = z
        w, h = float(z[2, 0]), float(z[3, 0])
        std = np.array([2 * _STD_POS * w, 2 * _STD_POS * h, 2 * _STD_POS * w, 2 * _STD_POS * h,
                        10 * _STD_VEL * w, 10 * _STD_VEL * h, 10 * _STD_VEL * w, 10 * _STD_VEL * h])
        kf.P = np.diag(std**2)
        kf.x_post, kf.P_post = kf.x.copy(), kf.P.copy()  # the state at the last observation (ORU rolls back to it)
        self.kf = kf
        self.track_id = track_id
        self.state = TENTATIVE
        self.hits = 1
        self.time_since_update = 0
        self.score, self.class_id = score, class_id
        self.embedding: np.ndarray | None = None
        self.last_obs = np.asarray(box, dtype=np.float64)
        self.last_obs_frame = frame_id
        self.start_frame = frame_id
        self.obs_history: deque = deque([(frame_id, self.last_obs)], maxlen=8)

    # -- Kalman steps --------------------------------------------------------------------------------------------
    def _q(self) -> np.ndarray:
        x = self.kf.x
        w, h = max(x[2, 0], 1.0), max(x[3, 0], 1.0)
        return _QW * (w * w) + _QH * (h * h)

    def _r(self, z: np.ndarray) -> np.ndarray:
        """Measurement noise for observing `z`, scaled by the larger of the predicted and the observed size: a
        detection cut short by an occluder is not trusted more (and does not shrink the box faster) than the size
        the track already has."""
        x = self.kf.x
        w, h = max(x[2, 0], z[2, 0], 1.0), max(x[3, 0], z[3, 0], 1.0)
        return _RW * (w * w) + _RH * (h * h)

    def predict(self, velocity_decay: float = 1.0) -> None:
        x = self.kf.x
        if self.time_since_update > 0:  # lost (or missed the last frame): no size change without evidence
            x[6, 0] = x[7, 0] = 0.0
            if velocity_decay < 1.0:
                x[4, 0] *= velocity_decay
                x[5, 0] *= velocity_decay
        if x[2, 0] + x[6, 0] <= 1.0:
            x[6, 0] = 0.0
        if x[3, 0] + x[7, 0] <= 1.0:
            x[7, 0] = 0.0
        self.kf.predict(Q=self._q())
        self.time_since_update += 1

    def correct(self, box: np.ndarray, frame_id: int, oru: bool) -> None:
        z = _to_z(box)
        kf = self.kf
        gap = frame_id - self.last_obs_frame
        if oru and gap > 1:
            # Observation-centric re-update: replay the gap on a straight line between the two observations.
            kf.x, kf.P = kf.x_post.copy(), kf.P_post.copy()
            z0 = _to_z(self.last_obs)
            for i in range(1, gap):
                zi = z0 + (z - z0) * (i / gap)
                kf.predict(Q=self._q())
                kf.update(zi, R=self._r(zi))
            kf.predict(Q=self._q())
        kf.update(z, R=self._r(z))
        self.last_obs = box
        self.last_obs_frame = frame_id
        self.obs_history.append((frame_id, box))
        self.time_since_update = 0
        self.hits += 1

    def velocity_direction(self, delta_t: int) -> np.ndarray | None:
        """Unit vector of the observed centre motion over about `delta_t` frames (OC-SORT momentum), or None."""
        if len(self.obs_history) < 2:
            return None
        f_last, b_last = self.obs_history[-1]
        ref = self.obs_history[0]
        for f, b in self.obs_history:
            if f_last - f <= delta_t:
                ref = (f, b)
                break
        if ref[0] == f_last:
            return None
        d = np.array([(b_last[0] + b_last[2]) - (ref[1][0] + ref[1][2]), (b_last[1] + b_last[3]) - (ref[1][1] + ref[1][3])])
        n = np.hypot(d[0], d[1])
        return d / n if n > 1e-6 else None


def _filter_boxes(tracks: list[McsaTrack]) -> np.ndarray:
    """(N, 4) xyxy of the tracks' current filter states, in one vectorised step."""
    if not tracks:
        return np.zeros((0, 4))
    return _z_to_xyxy(np.concatenate([t.kf.x[:4] for t in tracks], axis=1).T)


@TRACKERS.register("mcsa")
class McsaTracker(Tracker):
    """The default tracker; parameters are documented in configs/trackers/mcsa.yaml and the module docstring."""

    def __init__(
        self,
        high_thresh: float = 0.3,
        low_thresh: float = 0.1,
        new_track_thresh: float = 0.6,
        iou_gate: float = 0.2,
        match_thresh: float = 0.8,
        fuse_score: bool = True,
        low_iou_gate: float = 0.4,
        ocr_iou_gate: float = 0.15,
        ocr_max_gap: int = 0,
        tentative_iou_gate: float = 0.5,
        tentative_match_thresh: float = 1.0,
        frame_rate: float = 25.0,
        max_lost_s: float = 1.5,
        max_age: int | None = None,
        confirm_s: float = 0.16,
        n_init: int | None = None,
        ocr_max_fps: float = 12.0,
        oru: bool = True,
        lost_buffer: float = 0.0,
        lost_velocity_decay: float = 1.0,
        inertia: float = 0.0,
        delta_t: int = 3,
        output_box: str = "filter",
        appearance_weight: float = 0.0,
        appearance_gate: float = 0.5,
        appearance_lost_only: bool = False,
        embedding_momentum: float = 0.9,
    ) -> None:
        if not 0.0 <= low_thresh <= high_thresh:
            raise ValueError(f"need 0 <= low_thresh <= high_thresh, got {low_thresh}, {high_thresh}")
        if output_box not in ("detection", "filter"):
            raise ValueError(f"output_box must be 'detection' or 'filter', got {output_box!r}")
        if not (np.isfinite(frame_rate) and frame_rate > 0):
            raise ValueError(f"frame_rate must be > 0 frames/s, got {frame_rate}")
        if max_lost_s < 0 or confirm_s < 0 or ocr_max_fps < 0:
            raise ValueError("max_lost_s, confirm_s and ocr_max_fps must be >= 0")
        # time-based lifecycle in frames of THIS camera (an explicit max_age / n_init in frames wins)
        if max_age is None:
            max_age = int(math.floor(max_lost_s * frame_rate + 0.5))  # rounded half up
        if n_init is None:
            n_init = max(2, int(math.floor(confirm_s * frame_rate + 0.5)))
        if n_init < 1 or max_age < 0:
            raise ValueError("n_init must be >= 1 and max_age >= 0")
        for name, value in (("iou_gate", iou_gate), ("low_iou_gate", low_iou_gate), ("ocr_iou_gate", ocr_iou_gate),
                            ("tentative_iou_gate", tentative_iou_gate), ("appearance_weight", appearance_weight),
                            ("embedding_momentum", embedding_momentum)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if ocr_max_gap < 0:
            raise ValueError("ocr_max_gap must be >= 0")
        self.high_thresh, self.low_thresh, self.new_track_thresh = float(high_thresh), float(low_thresh), float(new_track_thresh)
        self.iou_gate, self.match_thresh, self.fuse_score = float(iou_gate), float(match_thresh), bool(fuse_score)
        self.low_iou_gate, self.ocr_iou_gate, self.ocr_max_gap = float(low_iou_gate), float(ocr_iou_gate), int(ocr_max_gap)
        self.tentative_iou_gate, self.tentative_match_thresh = float(tentative_iou_gate), float(tentative_match_thresh)
        self.frame_rate, self.max_lost_s, self.confirm_s = float(frame_rate), float(max_lost_s), float(confirm_s)
        self.ocr_max_fps = float(ocr_max_fps)
        self.n_init, self.max_age, self.oru = int(n_init), int(max_age), bool(oru)
        self.use_ocr = self.frame_rate <= self.ocr_max_fps  # stage 3 on low-frame-rate cameras only
        if lost_buffer < 0 or not 0.0 <= lost_velocity_decay <= 1.0:
            raise ValueError("need lost_buffer >= 0 and 0 <= lost_velocity_decay <= 1")
        self.lost_buffer, self.lost_velocity_decay = float(lost_buffer), float(lost_velocity_decay)
        self.inertia, self.delta_t = float(inertia), int(delta_t)
        self.output_box = output_box
        self.appearance_weight, self.appearance_gate = float(appearance_weight), float(appearance_gate)
        self.appearance_lost_only = bool(appearance_lost_only)
        self.embedding_momentum = float(embedding_momentum)
        self._next_id = 1
        self.reset()

    def reset(self) -> None:
        self.tracks: list[McsaTrack] = []
        self.frame_id = 0

    @property
    def wants_embeddings(self) -> bool:
        """True when `appearance_weight` > 0: the pipeline then passes per-detection embeddings to `update`."""
        return self.appearance_weight > 0

    @property
    def embedding_min_score(self) -> float:
        return self.high_thresh

    # -- cost helpers ----------------------------------------------------------------------------------------------
    def _cosine(self, tracks: list[McsaTrack], embs: np.ndarray | None):
        """(rows, cols, cosine distance) for the pairs whose track and detection both have an embedding, or None."""
        if embs is None or not len(tracks) or not len(embs):
            return None
        rows = [i for i, t in enumerate(tracks) if t.embedding is not None]
        if not rows:
            return None
        cols = np.flatnonzero(np.isfinite(embs).all(axis=1))  # NaN rows: detections without an embedding
        if not len(cols):
            return None
        tr = np.stack([tracks[i].embedding for i in rows])
        return np.asarray(rows), cols, 1.0 - tr @ embs[cols].T

    def _stage1_cost(self, tracks: list[McsaTrack], pred: np.ndarray, tsu: np.ndarray, boxes: np.ndarray,
                     scores: np.ndarray, embs: np.ndarray | None) -> np.ndarray:
        if self.lost_buffer > 0 and len(pred):
            # lost tracks: widen the predicted box by lost_buffer x its size per missed frame (capped at 3 frames)
            k = np.minimum(tsu - 1, 3).astype(np.float64) * self.lost_buffer
            if k.any():
                wh = pred[:, 2:4] - pred[:, 0:2]
                pad = wh * k[:, None] / 2.0
                pred = np.concatenate([pred[:, 0:2] - pad, pred[:, 2:4] + pad], axis=1)
        iou = iou_matrix(pred, boxes)
        cost = 1.0 - (iou * scores[None, :] if self.fuse_score else iou)
        if self.inertia > 0 and len(tracks) and len(boxes):
            cost -= self.inertia * self._momentum(tracks, boxes) * scores[None, :]
        if self.appearance_weight > 0:
            app = self._cosine(tracks, embs)
            if app is not None:
                rows, cols, cos = app
                if self.appearance_lost_only:  # appearance only re-ranks / vetoes lost tracks' recovery
                    keep = tsu[rows] > 1
                    rows, cos = rows[keep], cos[keep]
                if len(rows):
                    ix = np.ix_(rows, cols)
                    a = self.appearance_weight
                    sub = (1.0 - a) * cost[ix] + a * cos
                    sub[cos > self.appearance_gate] = np.inf
                    cost[ix] = sub
        cost[iou < self.iou_gate] = np.inf
        return cost

    def _appearance_veto(self, tracks: list[McsaTrack], embs: np.ndarray | None) -> np.ndarray | None:
        """(N, M) bool: pairs whose track and detection both have an embedding further apart than `appearance_gate`
        (cosine distance); None when the appearance cost is off or nothing can be compared."""
        if self.appearance_weight <= 0:
            return None
        app = self._cosine(tracks, embs)
        if app is None:
            return None
        rows, cols, cos = app
        veto = np.zeros((len(tracks), len(embs)), bool)
        veto[np.ix_(rows, cols)] = cos > self.appearance_gate
        return veto

    def _momentum(self, tracks: list[McsaTrack], boxes: np.ndarray) -> np.ndarray:
        """Cosine between each track's observed direction and the direction from its last observation to each box
        (0 for tracks without a direction)."""
        out = np.zeros((len(tracks), len(boxes)))
        dc = np.stack([boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]], axis=1)
        for i, t in enumerate(tracks):
            d = t.velocity_direction(self.delta_t)
            if d is None:
                continue
            lo = t.last_obs
            v = dc - np.array([lo[0] + lo[2], lo[1] + lo[3]])
            n = np.hypot(v[:, 0], v[:, 1])
            ok = n > 1e-6
            out[i, ok] = (v[ok] @ d) / n[ok]
        return out

    # -- the frame step ----------------------------------------------------------------------------------------------
    def update(
        self, detections: Detections, frame: np.ndarray | None = None, embeddings: np.ndarray | None = None
    ) -> Tracks:
        self.frame_id += 1
        fid = self.frame_id
        dets, embs = clean_detections(detections, frame, embeddings)
        tracks = self.tracks
        if not tracks and not len(dets):
            return Tracks.empty()
        if embs is not None and len(embs):
            embs = embs / np.maximum(np.linalg.norm(embs, axis=1, keepdims=True), 1e-12)
        boxes = dets.xyxy.astype(np.float64)
        scores = dets.scores.astype(np.float64)
        classes = dets.class_ids

        # predict every track; boxes of all tracks in one array (index = position in self.tracks)
        decay = self.lost_velocity_decay
        for t in tracks:
            t.predict(decay)
        pred = _filter_boxes(tracks)
        tsu = np.array([t.time_since_update for t in tracks], dtype=np.intp)
        is_tent = np.array([t.state == TENTATIVE for t in tracks], dtype=bool)

        high = np.flatnonzero(scores >= self.high_thresh)
        pool_i = np.flatnonzero(~is_tent)
        tent_i = np.flatnonzero(is_tent)
        matched: list[tuple[int, int]] = []  # (track index, detection index)

        # 1. confirmed + lost x high
        rest_i = pool_i
        rest_high = high
        if len(pool_i) and len(high):
            pool = [tracks[i] for i in pool_i]
            cost = self._stage1_cost(pool, pred[pool_i], tsu[pool_i], boxes[high], scores[high],
                                     None if embs is None else embs[high])
            m, um_t, um_d = linear_assignment(cost, self.match_thresh)
            matched += zip(pool_i[m[:, 0]].tolist(), high[m[:, 1]].tolist())
            rest_i, rest_high = pool_i[um_t], high[um_d]

        # 2. tracks matched last frame x low-score detections
        if len(rest_i):
            low = np.flatnonzero((scores >= self.low_thresh) & (scores < self.high_thresh))
            cand = rest_i[tsu[rest_i] == 1]
            if len(low) and len(cand):
                iou = iou_matrix(pred[cand], boxes[low])
                m, _, _ = linear_assignment(1.0 - iou, 1.0 - self.low_iou_gate)
                if len(m):
                    matched += zip(cand[m[:, 0]].tolist(), low[m[:, 1]].tolist())
                    rest_i = np.setdiff1d(rest_i, cand[m[:, 0]])

        # 3. observation-centric recovery: last observed boxes x remaining high (low frame rates only)
        if self.use_ocr and len(rest_high) and len(rest_i):
            if self.ocr_max_gap:
                rest_i = rest_i[tsu[rest_i] <= self.ocr_max_gap]
            if len(rest_i):
                rest = [tracks[i] for i in rest_i]
                iou = iou_matrix(np.array([t.last_obs for t in rest]), boxes[rest_high])
                cost = 1.0 - iou
                veto = self._appearance_veto(rest, None if embs is None else embs[rest_high])
                if veto is not None:
                    cost[veto] = np.inf
                m, _, um_d = linear_assignment(cost, 1.0 - self.ocr_iou_gate)
                matched += zip(rest_i[m[:, 0]].tolist(), rest_high[m[:, 1]].tolist())
                rest_high = rest_high[um_d]

        # 4. tentative x remaining high
        if len(tent_i) and len(rest_high):
            iou = iou_matrix(pred[tent_i], boxes[rest_high])
            cost = 1.0 - (iou * scores[rest_high][None, :] if self.fuse_score else iou)
            cost[iou < self.tentative_iou_gate] = np.inf
            m, _, um_d = linear_assignment(cost, self.tentative_match_thresh)
            matched += zip(tent_i[m[:, 0]].tolist(), rest_high[m[:, 1]].tolist())
            rest_high = rest_high[um_d]

        # apply matches
        out_t: list[McsaTrack] = []
        out_j: list[int] = []
        oru, n_init, mom, max_age = self.oru, self.n_init, self.embedding_momentum, self.max_age
        for i, j in matched:
            t = tracks[i]
            t.correct(boxes[j], fid, oru)
            t.score, t.class_id = float(scores[j]), int(classes[j])
            if embs is not None:
                e = embs[j]
                if np.isfinite(e).all():
                    if t.embedding is None:
                        t.embedding = e.copy()
                    else:
                        mixed = mom * t.embedding + (1.0 - mom) * e
                        t.embedding = mixed / max(float(np.linalg.norm(mixed)), 1e-12)
            if t.state != TENTATIVE or t.hits >= n_init:
                t.state = CONFIRMED
                out_t.append(t)
                out_j.append(j)

        survivors: list[McsaTrack] = []
        for t in tracks:
            if t.time_since_update == 0:
                survivors.append(t)
            elif t.state == TENTATIVE:
                continue  # a tentative track that misses a frame is dropped
            elif t.time_since_update <= max_age:
                t.state = LOST
                survivors.append(t)
        # 5. new tracks
        first_frame = fid == 1
        for j in rest_high[scores[rest_high] >= self.new_track_thresh].tolist():
            t = McsaTrack(boxes[j], float(scores[j]), int(classes[j]), self._next_id, fid)
            self._next_id += 1
            if embs is not None and np.isfinite(embs[j]).all():
                t.embedding = embs[j].copy()
            if first_frame or n_init <= 1:
                t.state = CONFIRMED
                out_t.append(t)
                out_j.append(j)
            survivors.append(t)
        self.tracks = survivors

        if not out_t:
            return Tracks.empty()
        if self.output_box == "detection":
            out_boxes = boxes[out_j]
        else:
            out_boxes = _filter_boxes(out_t)
            fresh = [k for k, t in enumerate(out_t) if t.hits == 1]  # new tracks: the filter holds the detection
            out_boxes[fresh] = boxes[[out_j[k] for k in fresh]]
        emb_out = None
        if embs is not None and all(t.embedding is not None for t in out_t):
            emb_out = np.stack([t.embedding for t in out_t]).astype(np.float32)
        return Tracks(np.array([t.track_id for t in out_t]), out_boxes, scores[out_j], classes[out_j], emb_out)
