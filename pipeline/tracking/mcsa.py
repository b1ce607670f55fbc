"""`mcsa`: the project's default per-camera tracker (ByteTrack-style two-stage association on a filterpy Kalman filter,
with OC-SORT's observation-centric ideas and an optional appearance cost).

Written for this project from the papers' descriptions (SORT, ByteTrack, BoT-SORT, OC-SORT); no code was copied.

Motion model
    One `filterpy.kalman.KalmanFilter` per track, constant velocity. State (8): centre x, centre y, width w, height h
    and their velocities; measurement (4): cx, cy, w, h. Width and height are estimated directly (BoT-SORT's choice:
    the aspect-ratio state of ByteTrack fits box widths worse). Process and measurement noise are scaled by the
    current box size (position std = w/20, h/20, velocity std = w/160, h/160 per frame), so small far-away people
    and large near ones get comparable relative uncertainty. While a track is lost, its height/width velocities are
    zeroed before each prediction so the box does not grow or shrink without evidence.

Association (per frame)
    1. confirmed + lost tracks  x  high-score detections (score >= `high_thresh`); cost = 1 - IoU (times the detection
       score when `fuse_score`), pairs with IoU < `iou_gate` are infeasible; optional OC-SORT momentum term (`inertia`)
       rewards detections lying in the direction the track was moving; optional appearance term (see below).
    2. still-unmatched tracks that were matched last frame  x  low-score detections (`low_thresh` <= score <
       `high_thresh`), IoU >= `low_iou_gate` (ByteTrack's second stage).
    3. observation-centric recovery (OC-SORT): remaining tracks' LAST OBSERVED box  x  remaining high-score
       detections, IoU >= `ocr_iou_gate` (recovers tracks whose prediction drifted during a short occlusion).
    4. tentative tracks  x  remaining high-score detections, IoU >= `tentative_iou_gate`.
    5. remaining high-score detections with score >= `new_track_thresh` start tentative tracks.

Observation-centric re-update (OC-SORT's ORU)
    Lost tracks in stage 1 may use a widened box (`lost_buffer`, BIoU-like) and a decaying velocity
    (`lost_velocity_decay`); both are off by default (they lowered HOTA/IDF1 in the benchmark).

    When a track that missed >= 1 frame is matched again, its filter is rolled back to the state saved at its last
    observation and re-run along a virtual linear trajectory between that observation and the new one, so that the
    velocity accumulated while coasting does not survive the gap.

Lifecycle
    tentative (new) -> confirmed after `n_init` matches in a row (a tentative track that misses a frame is deleted)
    -> lost when unmatched (predicted only, kept `max_age` frames) -> removed. During the first frame of a run every
    new track is confirmed at once. Ids are unique per instance and never reused, also across `reset()`.

Appearance hook
    `update(..., embeddings=E)` with one row per detection (NaN rows: no embedding for that detection) stores an
    exponential moving average (`embedding_momentum`) in `track.embedding`. With `appearance_weight` > 0, stage-1 pairs whose track and detection both have an embedding
    get cost (1 - a) * iou_cost + a * cosine_distance; pairs with cosine distance > `appearance_gate` are infeasible
    (in stage 1 and in the stage-3 recovery, so that appearance vetoes an identity transfer after an occlusion).

Output
    Confirmed tracks matched in this frame. `output_box: detection` (default) reports the matched detection's box,
    `filter` the Kalman posterior. In bench/tracking.py the two are within +-0.5 HOTA of each other (filter slightly
    better on PETS09, detection on Terrace c1); the detection box is the default because it is what the detector saw
    (exact for downstream crops/Re-ID) and does not lag on turns and scale changes.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from filterpy.kalman import KalmanFilter

from pipeline.tracking.base import TRACKERS, Tracker
from pipeline.tracking.utils import clean_detections, iou_matrix, linear_assignment
from pipeline.types import Detections, Tracks

TENTATIVE, CONFIRMED, LOST = 0, 1, 2

_F = np.eye(8)
_F[:4, 4:] = np.eye(4)
_H = np.eye(4, 8)
_STD_POS = 1.0 / 20.0
_STD_VEL = 1.0 / 160.0


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
    """One track's filter and bookkeeping (kept lean: one object per track, no per-frame allocations beyond filterpy)."""

    __slots__ = (
        "track_id", "kf", "state", "hits", "time_since_update", "score", "class_id", "box", "embedding",
        "last_obs", "last_obs_frame", "saved", "obs_history", "matched_box",
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
        self.kf = kf
        self.track_id = track_id
        self.state = TENTATIVE
        self.hits = 1
        self.time_since_update = 0
        self.score, self.class_id = score, class_id
        self.box = np.asarray(box, dtype=np.float64)  # current predicted (or corrected) box
        self.matched_box = self.box
        self.embedding: np.ndarray | None = None
        self.last_obs = self.box
        self.last_obs_frame = frame_id
        self.saved = (kf.x.copy(), kf.P.copy())  # filter state at the last observation (for ORU)
        self.obs_history: deque = deque([(frame_id, self.box)], maxlen=8)

    # -- Kalman steps --------------------------------------------------------------------------------------------
    def _q(self) -> np.ndarray:
        w, h = max(self.kf.x[2, 0], 1.0), max(self.kf.x[3, 0], 1.0)
        p, v = _STD_POS, _STD_VEL
        return np.diag(np.array([p * w, p * h, p * w, p * h, v * w, v * h, v * w, v * h]) ** 2)

    def _r(self, z: np.ndarray) -> np.ndarray:
        w, h = max(z[2, 0], 1.0), max(z[3, 0], 1.0)
        return np.diag(np.array([_STD_POS * w, _STD_POS * h, _STD_POS * w, _STD_POS * h]) ** 2)

    def predict(self, velocity_decay: float = 1.0) -> None:
        x = self.kf.x
        if self.state == LOST:
            x[6, 0] = x[7, 0] = 0.0  # no size change while unobserved
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
        gap = frame_id - self.last_obs_frame
        if oru and gap > 1:
            # Observation-centric re-update: replay the gap on a straight line between the two observations.
            self.kf.x, self.kf.P = self.saved[0].copy(), self.saved[1].copy()
            z0 = _to_z(self.last_obs)
            for i in range(1, gap):
                zi = z0 + (z - z0) * (i / gap)
                self.kf.predict(Q=self._q())
                self.kf.update(zi, R=self._r(zi))
            self.kf.predict(Q=self._q())
        self.kf.update(z, R=self._r(z))
        self.saved = (self.kf.x.copy(), self.kf.P.copy())
        self.last_obs = box
        self.last_obs_frame = frame_id
        self.obs_history.append((frame_id, box))
        self.matched_box = box
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
        low_iou_gate: float = 0.5,
        ocr_iou_gate: float = 0.3,
        tentative_iou_gate: float = 0.3,
        n_init: int = 2,
        max_age: int = 15,
        oru: bool = True,
        lost_buffer: float = 0.0,
        lost_velocity_decay: float = 1.0,
        inertia: float = 0.0,
        delta_t: int = 3,
        output_box: str = "detection",
        appearance_weight: float = 0.0,
        appearance_gate: float = 0.5,
        embedding_momentum: float = 0.9,
    ) -> None:
        if not 0.0 <= low_thresh <= high_thresh:
            raise ValueError(f"need 0 <= low_thresh <= high_thresh, got {low_thresh}, {high_thresh}")
        if output_box not in ("detection", "filter"):
            raise ValueError(f"output_box must be 'detection' or 'filter', got {output_box!r}")
        if n_init < 1 or max_age < 0:
            raise ValueError("n_init must be >= 1 and max_age >= 0")
        for name, value in (("iou_gate", iou_gate), ("low_iou_gate", low_iou_gate), ("ocr_iou_gate", ocr_iou_gate),
                            ("tentative_iou_gate", tentative_iou_gate), ("appearance_weight", appearance_weight),
                            ("embedding_momentum", embedding_momentum)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.high_thresh, self.low_thresh, self.new_track_thresh = float(high_thresh), float(low_thresh), float(new_track_thresh)
        self.iou_gate, self.match_thresh, self.fuse_score = float(iou_gate), float(match_thresh), bool(fuse_score)
        self.low_iou_gate, self.ocr_iou_gate = float(low_iou_gate), float(ocr_iou_gate)
        self.tentative_iou_gate = float(tentative_iou_gate)
        self.n_init, self.max_age, self.oru = int(n_init), int(max_age), bool(oru)
        if lost_buffer < 0 or not 0.0 <= lost_velocity_decay <= 1.0:
            raise ValueError("need lost_buffer >= 0 and 0 <= lost_velocity_decay <= 1")
        self.lost_buffer, self.lost_velocity_decay = float(lost_buffer), float(lost_velocity_decay)
        self.inertia, self.delta_t = float(inertia), int(delta_t)
        self.output_box = output_box
        self.appearance_weight, self.appearance_gate = float(appearance_weight), float(appearance_gate)
        self.embedding_momentum = float(embedding_momentum)
        self._next_id = 1
        self.reset()

    def reset(self) -> None:
        self.tracks: list[McsaTrack] = []
        self.frame_id = 0

    # -- cost helpers ----------------------------------------------------------------------------------------------
    @property
    def wants_embeddings(self) -> bool:
        """True when `appearance_weight` > 0: the pipeline then passes per-detection embeddings to `update`."""
        return self.appearance_weight > 0

    def _stage1_cost(self, tracks: list[McsaTrack], boxes: np.ndarray, scores: np.ndarray,
                     embs: np.ndarray | None) -> np.ndarray:
        pred = np.array([t.box for t in tracks]).reshape(-1, 4)
        if self.lost_buffer > 0 and len(pred):
            # lost tracks: widen the predicted box by lost_buffer x its size per missed frame (capped at 3 frames)
            k = np.array([min(t.time_since_update - 1, 3) for t in tracks], dtype=np.float64) * self.lost_buffer
            if k.any():
                wh = pred[:, 2:4] - pred[:, 0:2]
                pad = wh * k[:, None] / 2.0
                pred = np.concatenate([pred[:, 0:2] - pad, pred[:, 2:4] + pad], axis=1)
        iou = iou_matrix(pred, boxes)
        sim = iou * scores[None, :] if self.fuse_score else iou
        cost = 1.0 - sim
        if self.inertia > 0 and len(tracks) and len(boxes):
            cost = cost - self.inertia * self._momentum(tracks, boxes) * scores[None, :]
        if self.appearance_weight > 0 and embs is not None and len(tracks) and len(boxes):
            has = np.array([t.embedding is not None for t in tracks])
            det_has = np.isfinite(embs).all(axis=1)  # NaN rows: detections without an embedding keep the IoU cost
            if has.any() and det_has.any():
                rows, cols = np.flatnonzero(has), np.flatnonzero(det_has)
                tr = np.stack([tracks[i].embedding for i in rows])
                cos = 1.0 - tr @ embs[cols].T
                sub = cost[np.ix_(rows, cols)]
                a = self.appearance_weight
                sub = (1.0 - a) * sub + a * cos
                sub[cos > self.appearance_gate] = np.inf
                cost[np.ix_(rows, cols)] = sub
        cost[iou < self.iou_gate] = np.inf
        return cost

    def _appearance_veto(self, tracks: list[McsaTrack], embs: np.ndarray) -> np.ndarray:
        """(N, M) bool: pairs whose track and detection both have an embedding further apart than `appearance_gate`
        (cosine distance); all False when the appearance cost is off."""
        veto = np.zeros((len(tracks), len(embs)), bool)
        if self.appearance_weight <= 0 or not len(tracks) or not len(embs):
            return veto
        has = np.array([t.embedding is not None for t in tracks])
        det_has = np.isfinite(embs).all(axis=1)
        if has.any() and det_has.any():
            rows, cols = np.flatnonzero(has), np.flatnonzero(det_has)
            cos = 1.0 - np.stack([tracks[i].embedding for i in rows]) @ embs[cols].T
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
        if embs is not None and len(embs):
            norms = np.linalg.norm(embs, axis=1, keepdims=True)
            embs = embs / np.maximum(norms, 1e-12)
        boxes = dets.xyxy.astype(np.float64)
        scores = dets.scores.astype(np.float64)
        classes = dets.class_ids

        # predict every track
        for t in self.tracks:
            t.predict(self.lost_velocity_decay)
            t.box = _z_to_xyxy(t.kf.x.T)[0]

        high = np.flatnonzero(scores >= self.high_thresh)
        low = np.flatnonzero((scores >= self.low_thresh) & (scores < self.high_thresh))
        pool = [t for t in self.tracks if t.state != TENTATIVE]
        tentative = [t for t in self.tracks if t.state == TENTATIVE]
        matched: list[tuple[McsaTrack, int]] = []

        # 1. confirmed + lost x high
        hb = boxes[high]
        cost = self._stage1_cost(pool, hb, scores[high], None if embs is None else embs[high])
        m, um_t, um_d = linear_assignment(cost, self.match_thresh)
        matched += [(pool[i], high[j]) for i, j in m]
        rest_tracks = [pool[i] for i in um_t]
        rest_high = high[um_d]

        # 2. tracks matched last frame x low-score detections
        if len(low) and rest_tracks:
            cand = [t for t in rest_tracks if t.time_since_update == 1]
            if cand:
                iou = iou_matrix(np.array([t.box for t in cand]), boxes[low])
                m, _, _ = linear_assignment(1.0 - iou, 1.0 - self.low_iou_gate)
                got = {id(cand[i]) for i, _ in m}
                matched += [(cand[i], low[j]) for i, j in m]
                rest_tracks = [t for t in rest_tracks if id(t) not in got]

        # 3. observation-centric recovery: last observed boxes x remaining high
        if len(rest_high) and rest_tracks:
            iou = iou_matrix(np.array([t.last_obs for t in rest_tracks]), boxes[rest_high])
            cost = 1.0 - iou
            if embs is not None:
                cost[self._appearance_veto(rest_tracks, embs[rest_high])] = np.inf
            m, _, um_d = linear_assignment(cost, 1.0 - self.ocr_iou_gate)
            matched += [(rest_tracks[i], rest_high[j]) for i, j in m]
            rest_high = rest_high[um_d]

        # 4. tentative x remaining high
        if tentative:
            if len(rest_high):
                iou = iou_matrix(np.array([t.box for t in tentative]), boxes[rest_high])
                sim = iou * scores[rest_high][None, :] if self.fuse_score else iou
                cost = 1.0 - sim
                cost[iou < self.tentative_iou_gate] = np.inf
                m, _, um_d = linear_assignment(cost, 1.0)
                matched += [(tentative[i], rest_high[j]) for i, j in m]
                rest_high = rest_high[um_d]

        # apply matches
        out_ids, out_boxes, out_scores, out_cls, out_embs = [], [], [], [], []
        for t, j in matched:
            box = boxes[j]
            t.correct(box, fid, self.oru)
            t.score, t.class_id = float(scores[j]), int(classes[j])
            if embs is not None and np.isfinite(embs[j]).all():
                e = embs[j]
                if t.embedding is None:
                    t.embedding = e.copy()
                else:
                    mixed = self.embedding_momentum * t.embedding + (1.0 - self.embedding_momentum) * e
                    t.embedding = mixed / max(float(np.linalg.norm(mixed)), 1e-12)
            if t.state == TENTATIVE:
                if t.hits >= self.n_init:
                    t.state = CONFIRMED
            else:
                t.state = CONFIRMED
            if t.state == CONFIRMED:
                out_ids.append(t.track_id)
                out_boxes.append(box if self.output_box == "detection" else _z_to_xyxy(t.kf.x.T)[0])
                out_scores.append(t.score)
                out_cls.append(t.class_id)
                out_embs.append(t.embedding)

        matched_ids = {id(t) for t, _ in matched}
        survivors: list[McsaTrack] = []
        for t in self.tracks:
            if id(t) in matched_ids:
                survivors.append(t)
            elif t.state == TENTATIVE:
                continue  # a tentative track that misses a frame is dropped
            elif t.time_since_update <= self.max_age:
                t.state = LOST
                survivors.append(t)
        # 5. new tracks
        first_frame = fid == 1
        for j in rest_high:
            if scores[j] < self.new_track_thresh:
                continue
            t = McsaTrack(boxes[j], float(scores[j]), int(classes[j]), self._next_id, fid)
            self._next_id += 1
            if embs is not None and np.isfinite(embs[j]).all():
                t.embedding = embs[j].copy()
            if first_frame or self.n_init <= 1:
                t.state = CONFIRMED
                out_ids.append(t.track_id)
                out_boxes.append(boxes[j])
                out_scores.append(t.score)
                out_cls.append(t.class_id)
                out_embs.append(t.embedding)
            survivors.append(t)
        self.tracks = survivors

        if not out_ids:
            return Tracks.empty()
        emb_out = None
        if embs is not None and all(e is not None for e in out_embs):
            emb_out = np.stack(out_embs).astype(np.float32)
        return Tracks(np.array(out_ids), np.array(out_boxes), np.array(out_scores), np.array(out_cls), emb_out)
