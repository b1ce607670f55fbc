"""SORT (Bewley et al., ICIP 2016): a constant-velocity Kalman filter per track plus IoU Hungarian matching.

Written for this project from the paper's description. State (7): centre x, centre y, area s, aspect r = w/h, and the
velocities of cx, cy, s (the aspect is assumed constant). Measurement (4): cx, cy, s, r. Noise values follow the
paper's reference settings (uncertain initial velocities, small process noise on the area velocity).

One instance tracks one camera. Reported each frame: tracks updated this frame whose hit streak reached `min_hits`
(or every updated track during the first `min_hits` frames), with the filter's corrected box.
"""

from __future__ import annotations

import numpy as np
from filterpy.kalman import KalmanFilter

from pipeline.tracking.base import TRACKERS, Tracker
from pipeline.tracking.utils import clean_detections, iou_matrix, linear_assignment
from core.types import Detections, Tracks

_F = np.eye(7)
_F[0, 4] = _F[1, 5] = _F[2, 6] = 1.0
_H = np.eye(4, 7)


def _xyxy_to_z(b: np.ndarray) -> np.ndarray:
    w, h = b[2] - b[0], b[3] - b[1]
    return np.array([b[0] + w / 2.0, b[1] + h / 2.0, w * h, w / h]).reshape(4, 1)


def _x_to_xyxy(x: np.ndarray) -> np.ndarray:
    s, r = max(float(x[2, 0]), 1e-6), max(float(x[3, 0]), 1e-6)
    w = np.sqrt(s * r)
    h = s / w
    return np.array([x[0, 0] - w / 2.0, x[1, 0] - h / 2.0, x[0, 0] + w / 2.0, x[1, 0] + h / 2.0])


class _SortTrack:
    __slots__ = ("kf", "track_id", "time_since_update", "hits", "hit_streak", "age", "score", "class_id")

    def __init__(self, box: np.ndarray, score: float, class_id: int, track_id: int) -> None:
        kf = KalmanFilter(dim_x=7, dim_z=4)
        kf.F = _F.copy()
        kf.H = _H.copy()
        kf.R[2:, 2:] *= 10.0
        kf.P[4:, 4:] *= 1000.0  # unobserved initial velocities: high uncertainty
        kf.P *= 10.0
        kf.Q[-1, -1] *= 0.01
        kf.Q[4:, 4:] *= 0.01
        kf.x[:4] = _xyxy_to_z(box)
        self.kf = kf
        self.track_id = track_id
        self.time_since_update = 0
        self.hits = self.hit_streak = 1
        self.age = 0
        self.score, self.class_id = score, class_id

    def predict(self) -> np.ndarray:
        if self.kf.x[6, 0] + self.kf.x[2, 0] <= 0:  # the area would become negative: stop shrinking
            self.kf.x[6, 0] = 0.0
        self.kf.predict()
        self.age += 1
        if self.time_since_update > 0:
            self.hit_streak = 0
        self.time_since_update += 1
        return _x_to_xyxy(self.kf.x)

    def update(self, box: np.ndarray, score: float, class_id: int) -> None:
        self.time_since_update = 0
        self.hits += 1
        self.hit_streak += 1
        self.score, self.class_id = score, class_id
        self.kf.update(_xyxy_to_z(box))


@TRACKERS.register("sort")
class SortTracker(Tracker):
    """Classic SORT.

    max_age: frames a track survives without a match; min_hits: consecutive matches before it is reported;
    iou_threshold: minimum IoU for a match; det_thresh: detections scoring below are ignored (SORT itself has no
    score handling; our detector runs at conf 0.1, so low-score boxes are dropped here).
    """

    def __init__(self, max_age: int = 1, min_hits: int = 3, iou_threshold: float = 0.3, det_thresh: float = 0.3):
        if max_age < 0 or min_hits < 0:
            raise ValueError("max_age and min_hits must be >= 0")
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        self.max_age, self.min_hits = int(max_age), int(min_hits)
        self.iou_threshold, self.det_thresh = float(iou_threshold), float(det_thresh)
        self._next_id = 1
        self.reset()

    def reset(self) -> None:
        self.tracks: list[_SortTrack] = []
        self.frame_count = 0

    def update(
        self, detections: Detections, frame: np.ndarray | None = None, embeddings: np.ndarray | None = None
    ) -> Tracks:
        self.frame_count += 1
        dets, _ = clean_detections(detections, frame)
        if len(dets):
            dets = dets[dets.scores >= self.det_thresh]
        boxes = dets.xyxy.astype(np.float64)

        predicted = []
        alive = []
        for t in self.tracks:
            p = t.predict()
            if np.isfinite(p).all():
                alive.append(t)
                predicted.append(p)
        self.tracks = alive
        pred = np.array(predicted).reshape(-1, 4)

        iou = iou_matrix(pred, boxes)
        matches, _, unmatched_dets = linear_assignment(1.0 - iou, 1.0 - self.iou_threshold)
        for ti, di in matches:
            self.tracks[ti].update(boxes[di], float(dets.scores[di]), int(dets.class_ids[di]))
        for di in unmatched_dets:
            self.tracks.append(_SortTrack(boxes[di], float(dets.scores[di]), int(dets.class_ids[di]), self._next_id))
            self._next_id += 1

        ids, out_boxes, scores, classes = [], [], [], []
        kept = []
        for t in self.tracks:
            if t.time_since_update < 1 and (t.hit_streak >= self.min_hits or self.frame_count <= self.min_hits):
                ids.append(t.track_id)
                out_boxes.append(_x_to_xyxy(t.kf.x))
                scores.append(t.score)
                classes.append(t.class_id)
            if t.time_since_update <= self.max_age:
                kept.append(t)
        self.tracks = kept
        if not ids:
            return Tracks.empty()
        return Tracks(np.array(ids), np.array(out_boxes), np.array(scores), np.array(classes))
