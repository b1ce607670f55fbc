"""`FusedAssociator`: overlapping cameras as one scene, a small pure API over ground-plane fusion.

    assoc = FusedAssociator({cam: CameraGeometry(...)}, FusionParams())
    out = assoc.update(time_s, {cam: (xyxy (N, 4) px, scores (N,), embeddings (N, D) or None)})
    out.ids[cam]        # (N,) int64 global id of each input detection, -1 = none (yet)
    out.predicted[cam]  # (xyxy (M, 4), ids (M,)): boxes of people this view missed but another view sees (flagged)

One step, all in metres and seconds:
1. every ground track is predicted to `time_s` (constant velocity);
2. per camera, its confident detections are assigned to the ground tracks (Hungarian): cost = Mahalanobis distance
   of the foot point to the track (track covariance + foot covariance), plus the box's overlap with the box this view
   last had for the track (image continuity), plus the embedding distance when both have one; gated in metres and in
   sigmas; a detection or a track may stay unpaired at `unpaired_cost` each, so a stray box never bends the other
   pairs. Low-score detections then continue tracks this view saw just before (IoU) - the two-stage idea of
   ByteTrack, per view;
3. each track's assigned detections (<= 1 per view) are fused into one ground measurement and update its filter;
4. the confident detections left over are clustered across views (`clustering`; with embeddings, two farther apart
   than `split_app_dist` are two people) and start tentative tracks, which get a global id once seen for `confirm_s`,
   one view at least having given `confirm_steady` boxes in a row that overlap (box continuity: false positives of
   several views landing near each other are no person); a track confirmed where exactly one lost track should be
   now resumes that identity (`resume_lost`: a person every view lost, found again); a confirmed track every view
   has lost for `handover_lost_s`, whose person a view passed to one younger track (box continuity in that view),
   continues on that track (`handover_views`: the older track had been dragged off its person); tracks unseen
   `max_lost_s` end;
5. optionally, a confirmed track seen by some view now is projected into each other view whose detector missed it
   (inside the frame only), with the size of the box that view last had for it, or else the camera's learnt box size
   at that image position.
Latency: none beyond the step itself (online). `assoc.joins` records every join (the joined id, the id it joined, when,
and how old its track was) for the offline pass (`pipeline.fusion.hindsight`).
"""

from __future__ import annotations

import logging
from itertools import combinations
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.fusion.alignment import ViewAlignment
from pipeline.fusion.clustering import ViewDetection, cluster_detections, fuse_groups, fuse_points, inv2
from pipeline.fusion.ground import CameraGeometry, foot_points, placement_sigma
from pipeline.fusion.hindsight import Join
from pipeline.fusion.tracker import GroundTrack, TrackBook, ViewMemory
from pipeline.tracking.utils import linear_assignment

_ZERO2 = np.zeros(2)
_ZERO2.flags.writeable = False
_BIG = 1e6
log = logging.getLogger("mcsa.fusion")


@dataclass
class FusionParams:
    """Fusion parameters, in metres, seconds and pixel fractions (see `pipeline.config.FusionConfig`)."""

    gate_m: float = 2.5
    gate_sigma: float = 5.0
    reacquire_mps: float = 1.0
    foot_sigma: float = 0.04
    calib_sigma_m: float = 0.3
    accel_sigma: float = 2.0
    speed_sigma: float = 1.5
    high_score: float = 0.5
    low_score: float = 0.1
    low_iou: float = 0.3
    confirm_s: float = 0.2
    confirm_frac: float = 0.6
    min_view_iou: float = 0.1
    new_view_gate_m: float = 1.0
    view_min_hits: int = 3
    merge_m: float = 1.0
    merge_s: float = 0.5
    merge_in_view: bool = True
    duplicate_s: float | None = 0.5
    offset_rate: float = 0.0
    max_lost_s: float = 2.0
    tentative_lost_s: float = 0.3
    birth_min_sep_m: float = 0.5
    iou_weight: float = 0.5
    view_memory_s: float = 1.0
    app_weight: float = 1.0
    max_app_dist: float | None = 0.6
    split_app_dist: float | None = 0.5
    split_app_min: int = 3
    keep_shown_identity: bool = True
    predict_boxes: bool = True
    report_detections: bool = True  # read by the stage (fused_association) only
    report_unidentified: bool = False  # read by the stage (fused_association) only
    predict_memory_s: float = 2.0
    predict_unseen_s: float | None = 1.25
    predict_full_size: bool = True
    predict_min_inside: float | None = 0.8
    disagreement_warn_m: float = 1.5
    align: bool = True
    align_min_samples: int = 50
    align_every_s: float = 1.0
    align_isolation_m: float = 1.5
    view_consistency: bool = True
    join_sigmas: float = 3.0
    resume_lost: bool = True
    duplicate_veto_frac: float | None = 0.1
    duplicate_veto_s: float = 2.0
    covisible_s: float | None = 4.0
    covisible_duplicate_s: float = 2.0
    provisional_alias: bool = True
    handover_views: int | None = 1
    handover_gap_s: float = 0.12
    handover_window_s: float = 2.0
    handover_lost_s: float = 0.5
    unpaired_cost: float | None = 0.75
    resume_app_margin: float | None = 0.1
    resume_app_dist: float | None = 0.3
    confirm_steady: int | None = 2


@dataclass
class FusedOutput:
    """Per camera: ids (N,) int64 for the input detections (-1: not yet part of a confirmed track) and predicted boxes
    (xyxy float32 (M, 4), ids int64 (M,)) for confirmed people this view missed. ground: {global id shown at this
    step: (state float64 (4,) = x, y m and vx, vy m/s after this step's update, sigma m = how surely this step's
    views place the person (`ground.placement_sigma`: the step's ground measurement plus a foot point error of at
    least `MIN_FOOT_PX` in each view, along the least certain direction), the cameras that saw them now)} for every
    confirmed person a view saw at this step (the ids the boxes carry). The Kalman filter's own position covariance
    is not used: at 25 Hz it shrinks to ~0.1 m, below the errors it has, since a foot point's errors (box bottom,
    homography) are not independent from frame to frame."""

    ids: dict[str, np.ndarray] = field(default_factory=dict)
    predicted: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    ground: dict[int, tuple[np.ndarray, float, tuple[str, ...]]] = field(default_factory=dict)


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (A, B) of boxes a (A, 4) and b (B, 4), xyxy."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)  # (np.clip is slower on small arrays)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _assign(cost: np.ndarray, unpaired: float | None) -> list[tuple[int, int]]:
    """Pairs (row, column) of a minimum-cost assignment of cost (R, C), pairs gated out (>= _BIG) never formed. With
    unpaired, a row or a column may stay unpaired at that cost each, so a pair forms only where it costs less than
    leaving both alone, and no pair is bent to make room for another (the per-camera trackers' gated assignment,
    `linear_assignment`, with pairs capped at 2 x unpaired); None: as many pairs as possible."""
    if unpaired is None or cost.size == 0:
        r, c = linear_sum_assignment(cost)
        return [(int(k), int(j)) for k, j in zip(r, c) if cost[k, j] < _BIG]
    matches, _, _ = linear_assignment(cost, 2.0 * unpaired)
    return [(int(k), int(j)) for k, j in matches]


def _track_state(tracks: list[GroundTrack], t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (T, 2) m, position covariances (T, 2, 2) m^2 and times since the last update (T,) s of tracks."""
    return (np.array([tr.kf.x[:2] for tr in tracks]).reshape(-1, 2),
            np.array([tr.kf.P[:2, :2] for tr in tracks]).reshape(-1, 2, 2),
            np.array([t - tr.last_update_t for tr in tracks], np.float64))


class BoxSizeModel:
    """A camera's box width and height (px) as a linear function of the foot point (u, v) px, least squares over the
    confident uncut detections seen so far; used to draw predicted boxes of people this view never saw."""

    def __init__(self) -> None:
        self.xtx = np.zeros((3, 3))
        self.xty = np.zeros((3, 2))
        self.n = 0
        self._coef: np.ndarray | None = None
        self._pending: list[np.ndarray] = []  # boxes (N, 4) not yet folded into the sums (folded in batches: cheaper)

    def add(self, xyxy: np.ndarray) -> None:
        b = np.asarray(xyxy, np.float64).reshape(-1, 4)
        self._pending.append(b)
        self.n += len(b)
        self._coef = None
        if len(self._pending) >= 64:
            self._fold()

    def _fold(self) -> None:
        if not self._pending:
            return
        b = np.concatenate(self._pending)
        self._pending = []
        x = np.stack([np.ones(len(b)), (b[:, 0] + b[:, 2]) / 2, b[:, 3]], axis=1)
        y = np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
        self.xtx += x.T @ x
        self.xty += x.T @ y

    def size(self, foot: np.ndarray) -> np.ndarray | None:
        """(w, h) px at foot (2,) px, or None with fewer than 20 samples."""
        if self.n < 20:
            return None
        if self._coef is None:
            self._fold()
            self._coef = np.linalg.lstsq(self.xtx + 1e-6 * np.eye(3), self.xty, rcond=None)[0]
        wh = np.array([1.0, foot[0], foot[1]]) @ self._coef
        return wh if (wh > 4).all() else None


class FusedAssociator:
    """Ground-plane tracking of one group of overlapping cameras. Cameras: {camera id: CameraGeometry}."""

    def __init__(self, cameras: dict[str, CameraGeometry], params: FusionParams | None = None) -> None:
        if not cameras:
            raise ValueError("fused association needs at least one camera with a homography (association.homographies)")
        self.cameras = dict(cameras)
        self.p = params or FusionParams()
        self.book = TrackBook()
        self.sizes = {cam: BoxSizeModel() for cam in self.cameras}
        self.alignment = ViewAlignment(self.cameras, self.p.align_min_samples, self.p.align_every_s)
        self.t: float | None = None
        self.counters = {"steps": 0, "tracks": 0, "identities": 0, "merges": 0, "resumed": 0,
                         "predicted_boxes": 0, "inconsistent_views": 0, "handovers": 0}
        self.merged: dict[int, int] = {}  # global id merged away -> the id it joined
        self._shown: dict[int, int] = {}  # global id -> detections reported with it so far (predicted ones not counted)
        self.joins: dict[int, Join] = {}  # global id merged away -> when, into what, and how old its track was
        self._dt = 0.0  # running step duration, s
        self.disagreements: dict[tuple[str, str], float] = {}  # camera pair -> metres, warned once
        self._dup: dict[tuple[int, int], list] = {}  # (older, younger) track ids -> [s together, updates, updates]
        self._together: dict[tuple[int, int], list[float]] = {}  # (older, younger) -> recent times one camera saw both
        self._handover: dict[tuple[int, int], dict[str, float]] = {}  # (older, younger) -> camera -> time it passed
        self._covisible: dict[tuple[int, int], float] = {}  # (lower, higher) track ids -> s one camera saw both at once

    # -- helpers -------------------------------------------------------------------------------------------------
    def _view_box(self, cam: str, tr: GroundTrack, t: float, max_age_s: float) -> np.ndarray | None:
        """Where this view should see the track now: its last box in the view moved by the image displacement of the
        track's ground motion since then (so the view's own calibration bias cancels); None without a recent box."""
        mem = tr.views.get(cam)
        if mem is None or t - mem.t > max_age_s:
            return None
        geom = self.cameras[cam]
        img, ok = geom.ground_to_image(np.stack([mem.ground, tr.position]))
        if not ok.all():
            return mem.xyxy
        du, dv = img[1] - img[0]
        limit = 0.5 * (mem.xyxy[3] - mem.xyxy[1])  # a wild back-projection (near the horizon) moves at most half a box
        du, dv = float(np.clip(du, -limit, limit)), float(np.clip(dv, -limit, limit))
        return mem.xyxy + np.array([du, dv, du, dv])

    def _view_boxes(self, cam: str, tracks: list[GroundTrack], t: float, max_age_s: float, min_hits: int = 1) -> list:
        """`_view_box` of every track (None where the view has no recent box, or fewer than min_hits boxes in a row:
        one stray box, e.g. a false positive, must not steer the view), one projection call per camera."""
        out: list = [None] * len(tracks)
        have = [k for k, tr in enumerate(tracks) if cam in tr.views and t - tr.views[cam].t <= max_age_s
                and tr.views[cam].hits >= min_hits]
        if not have:
            return out
        mems = [tracks[k].views[cam] for k in have]
        n = len(have)
        pts = np.array([m.ground for m in mems] + [tracks[k].kf.x[:2] for k in have])
        img, ok = self.cameras[cam].ground_to_image(pts)
        boxes = np.array([m.xyxy for m in mems], np.float64)
        limit = 0.5 * (boxes[:, 3] - boxes[:, 1])  # a wild back-projection moves a box at most half its height
        duv = np.minimum(np.maximum(img[n:] - img[:n], -limit[:, None]), limit[:, None])  # (np.clip: slower)
        duv[~(ok[:n] & ok[n:])] = 0.0
        moved = boxes + np.concatenate([duv, duv], axis=1)
        for i, k in enumerate(have):
            out[k] = moved[i]
        return out

    def _costs(self, cam: str, tracks: list[GroundTrack], view_boxes: list, pts: np.ndarray, covs: np.ndarray,
               boxes: np.ndarray, embs: np.ndarray | None, t: float,
               state: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Assignment cost (T, N) of tracks to this camera's detections; _BIG where gated out.

        view_boxes: per track its expected box in this view (`_view_box` within view_memory_s) or None; embs: (N, D)
        L2-normalised embeddings with NaN rows for detections without one, or None; state: the tracks' positions
        (T, 2) m, position covariances (T, 2, 2) and times since their last update (T,) s, when the caller has them
        (one step's cameras share them)."""
        p = self.p
        if not tracks or len(pts) == 0:
            return np.zeros((len(tracks), len(pts)))
        if state is None:
            state = _track_state(tracks, t)
        tp, tc, lost = state
        s = tc[:, None] + covs[None]  # (T, N, 2, 2)
        if p.offset_rate > 0:  # foot points corrected by each track's view bias (all zero while offsets are off)
            off = np.array([tr.views[cam].offset if cam in tr.views else _ZERO2 for tr in tracks])
            d = pts[None] - off[:, None] - tp[:, None]  # (T, N, 2)
        else:
            d = pts[None] - tp[:, None]
        s00, s01, s10, s11 = s[..., 0, 0], s[..., 0, 1], s[..., 1, 0], s[..., 1, 1]
        d0, d1 = d[..., 0], d[..., 1]
        det = s00 * s11 - s01 * s10
        m2 = (s11 * d0 ** 2 - 2 * s01 * d0 * d1 + s00 * d1 ** 2) / np.maximum(det, 1e-12)
        dist = np.sqrt(d0 * d0 + d1 * d1)
        hard = p.gate_m + p.reacquire_mps * np.minimum(np.maximum(lost, 0.0), p.max_lost_s)
        cost = np.sqrt(m2) / p.gate_sigma
        gated = (m2 > p.gate_sigma ** 2) | (dist > hard[:, None])
        iou_term = np.full(cost.shape, 0.5)
        have = [k for k, vb in enumerate(view_boxes) if vb is not None]
        new_view = np.array([vb is None for vb in view_boxes])
        gated |= new_view[:, None] & (dist > self._join_gate(cam))  # a view joining a track must agree closely
        if have:
            iou = _iou_matrix(np.array([view_boxes[k] for k in have]), boxes)
            iou_term[have] = 1.0 - iou
            gated[have] |= iou < p.min_view_iou
        cost += p.iou_weight * iou_term
        if p.app_weight > 0 and embs is not None:
            with_app = [k for k, tr in enumerate(tracks) if tr.embedding is not None]
            if with_app:
                te = np.stack([tracks[k].embedding for k in with_app])
                a = 1.0 - te @ np.nan_to_num(embs, nan=0.0).T  # (K, N)
                valid = np.isfinite(embs).all(axis=1)[None] & np.ones((len(with_app), 1), bool)
                a = np.where(valid, a, 0.5)
                cost[with_app] += p.app_weight * a
                if p.max_app_dist is not None:
                    mature = np.array([tracks[k].n_embeddings >= 5 for k in with_app])[:, None]
                    gated[with_app] |= valid & mature & (a > p.max_app_dist)
        cost[gated] = _BIG
        return cost

    def _predicted_box(self, cam: str, tr: GroundTrack, t: float) -> np.ndarray | None:
        geom = self.cameras[cam]
        if geom.frame_size is None:
            return None
        mem = tr.views.get(cam)
        if mem is not None and self.p.predict_unseen_s is not None and t - mem.t > self.p.predict_unseen_s:
            return None  # this view has missed them for long: they left it, or are hidden for good
        foot, ok = geom.ground_to_image(tr.position[None])
        if not ok[0] or not geom.in_view(foot, margin=2.0)[0]:
            return None
        box = self._view_box(cam, tr, t, self.p.predict_memory_s)
        if box is None:
            wh = self.sizes[cam].size(foot[0])
            if wh is None:
                return None
            u, v = foot[0]
            box = np.array([u - wh[0] / 2, v - wh[1], u + wh[0] / 2, v])
        elif self.p.predict_full_size:  # a partly hidden person's last box: cut at the bottom, narrow
            x1, y1, x2, y2 = box
            wh = self.sizes[cam].size(np.array([(x1 + x2) / 2, y2]))
            if wh is not None:  # at least the camera's usual person size there: down from the top, wider about the centre
                half = max(x2 - x1, wh[0]) / 2
                box = np.array([(x1 + x2) / 2 - half, y1, (x1 + x2) / 2 + half, y1 + max(y2 - y1, wh[1])])
        w, h = geom.frame_size
        full = box
        box = box.copy()
        box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
        box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
        if self.p.predict_min_inside is not None and (box[2] - box[0]) * (box[3] - box[1]) < \
                self.p.predict_min_inside * (full[2] - full[0]) * (full[3] - full[1]):
            return None
        if box[2] - box[0] < 2 or box[3] - box[1] < 4:
            return None
        return box.astype(np.float32)

    def _check_disagreement(self, members: list[tuple[str, int]], offsets: np.ndarray, tr: GroundTrack) -> None:
        """Warn once per camera pair whose settled offsets for one person differ by more than disagreement_warn_m:
        their homographies disagree about where people stand (recalibrate, or raise calib_sigma_m / gate_m)."""
        if tr.hits < 50 or tr.hits % 25:
            return
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                pair = tuple(sorted((members[a][0], members[b][0])))
                gap = float(np.linalg.norm(offsets[a] - offsets[b]))
                if gap > self.p.disagreement_warn_m and pair not in self.disagreements:
                    self.disagreements[pair] = gap
                    log.warning("cameras %s and %s disagree by %.2f m about where one person stands (tolerance "
                                "%.2f m): check their homographies (run_pipeline.py calibrate --points CSV)",
                                pair[0], pair[1], gap, self.p.disagreement_warn_m)

    def _app_dist(self, a: GroundTrack, b: GroundTrack) -> float | None:
        """Cosine distance of two tracks' running appearances; None unless both have split_app_min embeddings."""
        if a.embedding is None or b.embedding is None or min(a.n_embeddings, b.n_embeddings) < self.p.split_app_min:
            return None
        return 1.0 - float(a.embedding @ b.embedding)

    def _look_apart(self, a: GroundTrack, b: GroundTrack) -> bool:
        """Two tracks whose running appearances (split_app_min embeddings each, at least) are farther apart than
        split_app_dist (cosine distance): two people, whom no duplicate merge may join."""
        if self.p.split_app_dist is None:
            return False
        d = self._app_dist(a, b)
        return d is not None and d > self.p.split_app_dist

    def _could_see_each_other(self, a: GroundTrack, b: GroundTrack, seen_by: dict[int, set[str]]) -> bool:
        """Whether each track stands where every view that saw the other now could see them (merge_in_view): their
        foot point between that view's left and right frame edges and below its top edge (feet below the bottom edge
        still leave the person in the frame). Only then is a view's seeing one track and not the other a sign of one
        person held twice: a view says nothing about a person beyond its frame."""
        if not self.p.merge_in_view:
            return True
        for track, views in ((a, seen_by.get(b.track_id, ())), (b, seen_by.get(a.track_id, ()))):
            for cam in views:
                geom = self.cameras.get(cam)
                if geom is None or geom.frame_size is None:
                    continue
                foot, ok = geom.ground_to_image(track.position[None])
                u, v = foot[0]
                # beyond the left or right edge, or beyond the top (far away): out of the view; feet below the bottom
                # edge are not, the person above them is in the frame (a near person's cut box)
                if not ok[0] or u < 0 or u > geom.frame_size[0] or v < 0:
                    return False
        return True

    def _merge_duplicates(self, t: float, seen_by: dict[int, set[str]]) -> None:
        """A person tracked twice from its first moments (its views disagreed by more than the gate when it appeared):
        a young confirmed track that, in every step since its birth, was seen by views disjoint from those of an
        older track, closer than merge_m, joins the older identity after merge_s. Any step apart, or seen by a
        common view, rules the pair out for good."""
        p = self.p
        live = [tr for tr in self.book.tracks if tr.global_id is not None]
        gone: set[int] = set()
        for young in live:
            if t - young.first_t > p.merge_s + 1.0 or young.last_update_t != t:
                continue
            for old in live:
                if old is young or old.first_t > young.first_t or old.track_id in gone:
                    continue
                n = young.close_steps.get(old.track_id, 0)
                if n < 0:
                    continue
                apart = seen_by.get(young.track_id, set()).isdisjoint(seen_by.get(old.track_id, set()))
                if not apart or np.linalg.norm(young.position - old.position) >= p.merge_m:
                    young.close_steps[old.track_id] = -1
                    continue
                if not self._could_see_each_other(old, young, seen_by):
                    continue  # no evidence at this step: the count waits (and misses a step of young's life)
                young.close_steps[old.track_id] = n + 1
                if (n + 1) * self._dt >= p.merge_s and young.hits <= n + 2 and not self._look_apart(old, young):
                    self._join(old, young)
                    self.counters["merges"] += 1
                    gone.add(young.track_id)
                    break
        if gone:
            self.book.tracks = [tr for tr in self.book.tracks if tr.track_id not in gone]
        if p.duplicate_s is not None:
            self._merge_lasting_duplicates(t, seen_by)

    def _provisional_aliases(self, t: float) -> dict[int, int]:
        """Young confirmed tracks that, so far, look like a duplicate of exactly one older track seen now (near it in
        disjoint views in every step since birth, still inside the young-merge window) -> that track's global id:
        their boxes are reported with it until the merge, or until they part."""
        alias = {}
        by_id = {tr.track_id: tr for tr in self.book.tracks}
        for young in self.book.tracks:
            if young.global_id is None or not young.close_steps or young.last_update_t != t \
                    or t - young.first_t > self.p.merge_s + 1.0:
                continue
            cands = [k for k, n in young.close_steps.items() if n > 0 and k in by_id]
            if len(cands) == 1 and by_id[cands[0]].global_id is not None and by_id[cands[0]].last_update_t == t \
                    and not self._look_apart(by_id[cands[0]], young):
                alias[young.global_id] = by_id[cands[0]].global_id
        return alias

    def _merge_lasting_duplicates(self, t: float, seen_by: dict[int, set[str]]) -> None:
        """A person held by two confirmed tracks at any age (the views split between them, or take turns, e.g. a view
        that joined before the views were aligned): two tracks, each seen within the last half duplicate_s, closer
        than merge_m, that no camera has seen both of at one moment for duplicate_s seconds in a row, each updated
        at least twice in that time and both in one step at least once (by different cameras: one camera whose
        detector flickers between two people standing close never updates both at once), are one person; the
        younger joins the older identity. One step apart, or one camera seeing both at once (two people), restarts
        the count. A pair that one camera saw both of at one moment in at least duplicate_veto_frac of the steps of
        the last duplicate_veto_s seconds is not joined at all (two people standing close, whom each camera sees
        apart now and then: a true duplicate is seen twice by one camera only by a rare false positive or a second
        box). A pair that cameras saw as two boxes at one moment for covisible_s seconds in all of their lives is
        known to be two people: it must look like one person for covisible_duplicate_s in a row, not duplicate_s
        (two people walking close while each is hidden in one view part again soon; a track dragged onto someone
        else's person stays a duplicate and is still joined)."""
        p = self.p
        recent = 0.5 * p.duplicate_s
        live = [tr for tr in self.book.tracks if tr.global_id is not None and t - tr.last_update_t <= recent]
        ids = {tr.track_id for tr in live}
        self._dup = {k: v for k, v in self._dup.items() if k[0] in ids and k[1] in ids}
        if self._together:  # keep the last duplicate_veto_s of each pair of live tracks
            alive = {tr.track_id for tr in self.book.tracks}
            pruned = {}
            for k, times in self._together.items():
                kept = [x for x in times if x > t - p.duplicate_veto_s]
                if kept and k[0] in alive and k[1] in alive:
                    pruned[k] = kept
            self._together = pruned
        gone: set[int] = set()
        # pairs farther apart than merge_m with no count running need nothing: skip them (until a join moves a track)
        at = np.array([tr.kf.x[:2] for tr in live]).reshape(-1, 2)
        near = np.sqrt(((at[:, None] - at[None]) ** 2).sum(axis=2)) < p.merge_m + 1e-6
        joined = False
        for a in range(len(live)):
            for b in range(a + 1, len(live)):
                if not (joined or near[a, b]) and (live[a].track_id, live[b].track_id) not in self._dup \
                        and (live[b].track_id, live[a].track_id) not in self._dup:
                    continue
                old, young = sorted((live[a], live[b]), key=lambda tr: (tr.first_t, tr.track_id))
                if old.track_id in gone or young.track_id in gone:
                    continue
                key = (old.track_id, young.track_id)
                apart = seen_by.get(young.track_id, set()).isdisjoint(seen_by.get(old.track_id, set()))
                if not apart and p.duplicate_veto_frac is not None:
                    self._together.setdefault(key, []).append(t)
                if not apart or np.linalg.norm(young.position - old.position) >= p.merge_m:
                    self._dup.pop(key, None)
                    continue
                if not self._could_see_each_other(old, young, seen_by):
                    continue  # no evidence at this step: a running count waits
                acc = self._dup.setdefault(key, [0.0, 0, 0, 0])  # s, updates of old, of young, of both at once
                acc[0] += self._dt
                acc[1] += old.last_update_t == t
                acc[2] += young.last_update_t == t
                acc[3] += old.last_update_t == t and young.last_update_t == t
                if p.duplicate_veto_frac is not None and self._dt and len(self._together.get(key, ())) >= \
                        p.duplicate_veto_frac * p.duplicate_veto_s / self._dt:
                    continue  # one camera often saw both of late: two people standing close, not one held twice
                need = p.duplicate_s
                if p.covisible_s is not None and self._covisible.get(
                        (min(key), max(key)), 0.0) >= p.covisible_s - 1e-9:
                    need = max(need, p.covisible_duplicate_s)  # known to be two people: longer evidence needed
                if acc[0] >= need - 1e-9 and min(acc[1], acc[2]) >= 2 and acc[3] >= 1 \
                        and not self._look_apart(old, young):
                    self._join(old, young)
                    joined = True
                    self.counters["merges"] += 1
                    gone.add(young.track_id)
                    self._dup.pop(key, None)
        if gone:
            self.book.tracks = [tr for tr in self.book.tracks if tr.track_id not in gone]

    def _count_covisible(self, seen_by: dict[int, set[str]], confirmed: set[int]) -> None:
        """Add this step's duration to every pair of confirmed tracks that one camera gave a box each now (two
        boxes at one moment in one view: two people)."""
        by_cam: dict[str, list[int]] = {}
        for tid, cams in seen_by.items():
            if tid in confirmed:
                for c in cams:
                    by_cam.setdefault(c, []).append(tid)
        pairs = {pair for ids in by_cam.values() for pair in combinations(sorted(ids), 2)}
        for pair in pairs:
            self._covisible[pair] = self._covisible.get(pair, 0.0) + self._dt

    def _resume_lost(self, confirmed_now: list[GroundTrack], t: float) -> None:
        """A person every view lost and then found again as a new track (e.g. a crossing dragged their track off, or
        they turned while hidden): a track confirmed now, born while a confirmed track was lost (not updated since
        before that birth) and inside that lost track's gate now (its predicted position and grown covariance within
        gate_sigma, and within gate_m + reacquire_mps x time lost), continues the lost identity. Only one-to-one:
        two lost tracks (lost at any time) in one new track's gate, or two new tracks in one lost track's gate,
        resume nothing, unless appearance settles it (`_clearly_closest`, resume_app_margin). With Re-ID, a new track
        within resume_app_dist (cosine) of a lost track's appearance may pair with it outside gate_sigma (its position
        was wrong, e.g. pulled by a crossing), still within the reach in metres."""
        p = self.p
        lost = [tr for tr in self.book.tracks if tr.global_id is not None and tr.last_update_t < t]
        pairs = []
        for old in lost:
            for young in confirmed_now:
                d = young.position - old.position
                m2 = float(d @ np.linalg.solve(old.kf.P[:2, :2] + young.kf.P[:2, :2], d))
                reach = p.gate_m + p.reacquire_mps * min(t - old.last_update_t, p.max_lost_s)
                if float(np.linalg.norm(d)) > reach:
                    continue
                if m2 <= p.gate_sigma ** 2:
                    pairs.append((old, young))
                elif p.resume_app_dist is not None:  # outside the sigma gate, but looking like the lost person
                    a = self._app_dist(old, young)
                    if a is not None and a <= p.resume_app_dist:
                        pairs.append((old, young))
        gone = set()
        for old, young in pairs:
            unique = sum(o is old for o, _ in pairs) == 1 and sum(y is young for _, y in pairs) == 1
            if not unique and p.resume_app_margin is not None:
                rivals = [(o, young) for o, y in pairs if y is young and o is not old] \
                    + [(old, y) for o, y in pairs if o is old and y is not young]
                unique = self._clearly_closest(old, young, rivals)
            if unique and old.last_update_t < young.first_t and young.track_id not in gone:
                self._join(old, young)
                old.kf.x[2:] = young.kf.x[2:]  # the found person's motion, not the lost track's coasting
                old.kf.P[2:, 2:] = young.kf.P[2:, 2:]
                self.counters["resumed"] += 1
                gone.add(young.track_id)
        if gone:
            self.book.tracks = [tr for tr in self.book.tracks if tr.track_id not in gone]

    def _clearly_closest(self, old: GroundTrack, young: GroundTrack, rivals: list[tuple[GroundTrack, GroundTrack]]
                         ) -> bool:
        """A resume that geometry leaves ambiguous, settled by appearance: old and young look alike by a cosine
        distance at least resume_app_margin smaller than every rival pair (another lost track for young, another new
        track for old); False when any of them lacks embeddings."""
        d = self._app_dist(old, young)
        if d is None:
            return False
        for a, b in rivals:
            dr = self._app_dist(a, b)
            if dr is None or dr < d + self.p.resume_app_margin:
                return False
        return True

    def _record_handover(self, cam: str, tracks: list[GroundTrack], xyxy: np.ndarray, det_track: np.ndarray,
                         t: float) -> None:
        """This view passed a person from track A to a younger track B: B's box now overlaps (IoU >= 0.5) the box
        this view had for A at most handover_gap_s ago, and this view gave A nothing now."""
        p = self.p
        given = {int(det_track[j]): int(j) for j in np.flatnonzero(det_track >= 0)}
        cands = [a for a, tr in enumerate(tracks) if a not in given and tr.global_id is not None and cam in tr.views
                 and 0 < t - tr.views[cam].t <= p.handover_gap_s + 1e-9]
        if not cands or not given:
            return
        ks = list(given)
        iou = _iou_matrix(np.stack([tracks[a].views[cam].xyxy for a in cands]), xyxy[[given[k] for k in ks]])
        for ia, ib in zip(*np.nonzero(iou >= 0.5)):
            old, young = tracks[cands[ia]], tracks[ks[ib]]
            if young.first_t > old.first_t:
                self._handover.setdefault((old.track_id, young.track_id), {})[cam] = t

    def _take_over(self, t: float) -> None:
        """A confirmed track that no view updated now, whose views passed to one younger track in the last
        handover_window_s (handover_views cameras or more), born at most max_lost_s before the first pass: the younger
        track is that person, and the older identity continues on it (the older track had been dragged off)."""
        if not self._handover:  # no view passed anyone in the window: nothing to do (most steps)
            return
        p = self.p
        by_id = {tr.track_id: tr for tr in self.book.tracks}
        self._handover = {k: kept for k, v in self._handover.items() if k[0] in by_id and k[1] in by_id
                          and (kept := {c: x for c, x in v.items() if x > t - p.handover_window_s})}
        gone: set[int] = set()
        for (a, b), cams in sorted(self._handover.items(), key=lambda kv: -len(kv[1])):
            old, young = by_id[a], by_id[b]
            if a in gone or b in gone or len(cams) < p.handover_views \
                    or t - old.last_update_t < p.handover_lost_s - 1e-9 or young.last_update_t != t \
                    or young.first_t < min(cams.values()) - p.max_lost_s:
                continue
            old.views = dict(young.views)
            old.kf.x, old.kf.P = young.kf.x.copy(), young.kf.P.copy()
            old.t, old.last_update_t = young.t, young.last_update_t
            old.last_measurement_cov = young.last_measurement_cov.copy()
            old.hits = max(old.hits, young.hits)
            if young.embedding is not None:
                old.embedding, old.n_embeddings = young.embedding.copy(), young.n_embeddings
            if young.global_id is not None:
                self.merged[young.global_id] = old.global_id
                self.joins[young.global_id] = Join(old.global_id, t, t - young.first_t)
            self.counters["handovers"] += 1
            gone.add(b)
        if gone:
            self.book.tracks = [tr for tr in self.book.tracks if tr.track_id not in gone]
            self._handover = {k: v for k, v in self._handover.items() if k[0] not in gone and k[1] not in gone}

    def _join(self, old: GroundTrack, young: GroundTrack) -> None:
        """Fold track `young` into `old` (views, position); young's identity maps to old's from now on, or, with
        keep_shown_identity, when young's identity was on more reported detections so far than old's, old's maps to
        young's and the track goes on with young's (the identity people saw most stays). The caller counts the join
        (a merge of duplicates, or a lost identity resumed)."""
        for cam, mem in young.views.items():
            if cam not in old.views or old.views[cam].t < mem.t:
                old.views[cam] = mem
        z, r = fuse_points(np.stack([old.position, young.position]),
                           np.stack([old.position_cov, young.position_cov]))
        old.kf.x[:2], old.kf.P[:2, :2] = z, r
        old.kf.P[:2, 2:] = old.kf.P[2:, :2] = 0.0  # keep P positive definite: the new position owes nothing to v
        if young.last_update_t > old.last_update_t:  # the latest measurement is young's
            old.last_measurement_cov = young.last_measurement_cov.copy()
        old.last_update_t = max(old.last_update_t, young.last_update_t)
        if self.p.keep_shown_identity and self._shown.get(young.global_id, 0) > self._shown.get(old.global_id, 0):
            self.merged[old.global_id] = young.global_id
            self.joins[old.global_id] = Join(young.global_id, self.t, self.t - old.first_t)
            old.global_id = young.global_id
            return
        self.merged[young.global_id] = old.global_id
        self.joins[young.global_id] = Join(old.global_id, self.t, self.t - young.first_t)

    def _join_gate(self, cam: str) -> float:
        """Metres within which a view may join a track it has no recent box of: once the views are aligned,
        join_sigmas times their measured disagreement (2 views, each with the camera's RMS residual), at least
        new_view_gate_m; before, gate_m (new_view_gate_m when the alignment is off)."""
        p = self.p
        if not p.align:
            return p.new_view_gate_m
        if cam in self.alignment.residual_m:
            return min(max(p.join_sigmas * np.sqrt(2.0) * self.alignment.residual_m[cam], p.new_view_gate_m), p.gate_m)
        return p.gate_m

    def _drop_inconsistent_views(self, tracks: list[GroundTrack], assigned: dict, per_cam: dict) -> None:
        """A view whose detection sits far from where the track's other views put the person at this step is showing
        someone else (a person stepping in front of the tracked one inherits its box in that view, a cut box whose
        foot is a guess): with three or more views on the track, the one farthest from the fusion of the others,
        by more than its join gate (the distance within which a view may join a track), leaves the track for this
        step; its detection is a leftover (it may start or join another track). With two views there is no majority
        and nothing is dropped. All tracks with the same number of views are solved at once."""
        by_size: dict[int, list[int]] = {}
        for k, members in assigned.items():
            if len(members) >= 3:
                by_size.setdefault(len(members), []).append(k)
        gates = {c: self._join_gate(c) for c in self.cameras}
        for size, ks in by_size.items():
            members = [assigned[k] for k in ks]
            pts = np.array([[per_cam[c][2][j] for c, j in m] for m in members])  # (T, K, 2) m
            info = inv2(np.array([[per_cam[c][3][j] for c, j in m] for m in members]).reshape(-1, 2, 2)
                         ).reshape(len(ks), size, 2, 2)  # (T, K, 2, 2)
            w = np.einsum("tkij,tkj->tki", info, pts)  # information-weighted points
            # each view's leave-one-out: the information-weighted fusion of the other views' points (T, K, 2)
            rest_info = inv2((info.sum(axis=1, keepdims=True) - info).reshape(-1, 2, 2)).reshape(info.shape)
            rest = np.einsum("tkij,tkj->tki", rest_info, w.sum(axis=1, keepdims=True) - w)
            gate = np.array([[gates[c] for c, _ in m] for m in members])
            excess = np.linalg.norm(pts - rest, axis=2) - gate  # (T, K)
            worst = np.argmax(excess, axis=1)
            for row in np.flatnonzero(excess[np.arange(len(ks)), worst] > 0):
                k, drop = ks[row], int(worst[row])
                c, j = assigned[k][drop]
                per_cam[c][6][j] = -1
                self.counters["inconsistent_views"] += 1
                assigned[k] = [m for i, m in enumerate(assigned[k]) if i != drop]

    def _align_samples(self, tracks, assigned, per_cam, raw_of, t: float) -> None:
        """Feed the view alignment with this step's unambiguous multi-view moments: a confirmed person seen by two or
        more views with confident uncut boxes, nobody else within align_isolation_m; then refit when due."""
        p = self.p
        live = np.array([tr.kf.x[:2] for tr in tracks if t - tr.last_update_t <= 0.5]).reshape(-1, 2)
        chosen = [(k, members) for k, members in assigned.items()
                  if len(members) >= 2 and tracks[k].global_id is not None and tracks[k].hits >= 10
                  and not any(per_cam[c][1][j] < p.high_score or per_cam[c][4][j] for c, j in members)]
        if chosen:  # people with nobody else (alive) within align_isolation_m, all candidates at once
            at = np.array([tracks[k].kf.x[:2] for k, _ in chosen])
            near = (np.sqrt(((live[None] - at[:, None]) ** 2).sum(axis=2)) < p.align_isolation_m).sum(axis=1)
            for (_, members), n in zip(chosen, near):
                if n <= 1:  # itself only
                    self.alignment.add({c: raw_of[c][j] for c, j in members})
        if not self.alignment.refit(t):
            return
        if self.alignment.fits == 1:
            log.info("fused association: views aligned on the ground (RMS disagreement after alignment: %s)",
                     ", ".join(f"{c} {r:.2f} m" for c, r in self.alignment.residual_m.items()))
        if self.alignment.fits > 10 and self.alignment.fits % 10:  # it moves slowly: after the first 10 fits, every 10th
            return
        for pair, gap in self.alignment.pair_disagreement().items():
            if gap > p.disagreement_warn_m and pair not in self.disagreements:
                self.disagreements[pair] = gap
                log.warning("cameras %s and %s disagree by %.2f m (median) about where people stand (tolerance %.2f m): "
                            "their homographies are off; fusion corrects a smooth error, but recalibrate them "
                            "(run_pipeline.py calibrate --points CSV)", pair[0], pair[1], gap, p.disagreement_warn_m)

    # -- the step ------------------------------------------------------------------------------------------------
    def update(self, time_s: float, views: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> FusedOutput:
        """One step at time_s (s, shared clock) with each camera's detections; returns ids and predicted boxes."""
        p = self.p
        t = float(time_s)
        if self.t is not None and t > self.t:
            self._dt = 0.8 * self._dt + 0.2 * (t - self.t) if self._dt else t - self.t
        self.t = t
        self.counters["steps"] += 1
        tracks = self.book.tracks
        for tr in tracks:
            tr.predict(t)
        state = _track_state(tracks, t)  # every camera's costs read the same predicted tracks
        out = FusedOutput()
        assigned: dict[int, list[tuple[str, int]]] = {}  # track index -> (camera, det index)
        per_cam: dict[str, tuple] = {}
        raw_of: dict[str, np.ndarray] = {}
        for cam, view in views.items():
            if cam not in self.cameras:
                raise KeyError(f"camera {cam!r} has no ground geometry in this fused group (add its homography)")
            xyxy, scores, embs = view
            xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
            scores = np.asarray(scores, np.float64).reshape(len(xyxy))
            raw_pts, covs, cut = foot_points(self.cameras[cam], xyxy, p.foot_sigma, p.calib_sigma_m)
            pts = raw_pts
            if p.align:
                pts = self.alignment.apply(cam, raw_pts)
                lin = self.alignment.linear(cam)
                covs = lin[None] @ covs @ lin.T[None]
            e = None
            if embs is not None and len(xyxy):
                e = np.asarray(embs, np.float32).reshape(len(xyxy), -1)
                e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
            out.ids[cam] = np.full(len(xyxy), -1, np.int64)
            det_track = np.full(len(xyxy), -1)
            view_boxes = self._view_boxes(cam, tracks, t, p.view_memory_s, p.view_min_hits)
            high = np.flatnonzero(scores >= p.high_score)
            low = np.flatnonzero((scores >= p.low_score) & (scores < p.high_score))
            if len(high) and tracks:
                cost = self._costs(cam, tracks, view_boxes, pts[high], covs[high], xyxy[high],
                                   e[high] if e is not None else None, t, state)
                for k, j in _assign(cost, p.unpaired_cost):
                    det_track[high[j]] = k
            taken = set(det_track[det_track >= 0].tolist())
            rest = [k for k, tr in enumerate(tracks) if k not in taken and tr.global_id is not None
                    and view_boxes[k] is not None]
            if len(low) and rest:
                vb = [view_boxes[k] for k in rest]
                iou = _iou_matrix(np.stack(vb), xyxy[low])
                cost = self._costs(cam, [tracks[k] for k in rest], vb, pts[low], covs[low], xyxy[low],
                                   e[low] if e is not None else None, t, tuple(a[rest] for a in state))
                cost[iou < p.low_iou] = _BIG
                for k, j in _assign(cost, p.unpaired_cost):
                    det_track[low[j]] = rest[k]
            for j in np.flatnonzero(det_track >= 0):
                assigned.setdefault(int(det_track[j]), []).append((cam, int(j)))
            good = high[~cut[high]]
            if len(good):
                self.sizes[cam].add(xyxy[good])
            if p.handover_views:
                self._record_handover(cam, tracks, xyxy, det_track, t)
            per_cam[cam] = (xyxy, scores, pts, covs, cut, e, det_track)
            raw_of[cam] = raw_pts
        # 3. fuse each track's detections into one measurement
        if p.view_consistency:
            self._drop_inconsistent_views(tracks, assigned, per_cam)
        order = list(assigned.items())
        if order:  # every track's measurement in one batch: (M, 2) points and (M, 2, 2) covariances, track by track
            flat = [(tracks[k], c, j) for k, members in order for c, j in members]
            raw_all = np.array([per_cam[c][2][j] for _, c, j in flat])
            covs_all = np.array([per_cam[c][3][j] for _, c, j in flat])
            sizes = np.array([len(members) for _, members in order])
            if p.offset_rate > 0:
                offsets_all = np.array([tr.views[c].offset if c in tr.views else _ZERO2 for tr, c, _ in flat])
                fused_z, fused_r = fuse_groups(raw_all - offsets_all, covs_all, sizes)
            else:  # every view offset stays zero
                offsets_all = np.zeros_like(raw_all)
                fused_z, fused_r = fuse_groups(raw_all, covs_all, sizes)
            bounds = np.r_[0, np.cumsum(sizes)]
        for g, (k, members) in enumerate(order):
            tr = tracks[k]
            offsets = offsets_all[bounds[g]:bounds[g + 1]]
            tr.update(t, fused_z[g], fused_r[g])
            if len(members) >= 2 and p.offset_rate > 0:  # per-person view offsets (off by default: alignment)
                raw, covs = raw_all[bounds[g]:bounds[g + 1]], covs_all[bounds[g]:bounds[g + 1]]
                z_raw, _ = fuse_points(raw, covs)
                offsets = (1 - p.offset_rate) * offsets + p.offset_rate * (raw - z_raw)
                self._check_disagreement(members, offsets, tr)
            for (c, j), o in zip(members, offsets):
                old = tr.views.get(c)
                box = per_cam[c][0][j]
                hits = old.hits + 1 if old is not None and t - old.t <= p.view_memory_s else 1
                steady = 1  # box continuity in this view, counted until confirmation (all it is read for)
                if hits > 1 and tr.global_id is None:
                    steady = old.steady + 1 if _iou_matrix(old.xyxy[None], box[None])[0, 0] >= p.min_view_iou else 1
                tr.views[c] = ViewMemory(t, box.copy(), tr.position, o, hits, steady)
                e = per_cam[c][5]
                if e is not None and per_cam[c][1][j] >= p.high_score and np.isfinite(e[j]).all():
                    tr.add_embedding(e[j])
        if p.align:
            self._align_samples(tracks, assigned, per_cam, raw_of, t)
        # 4. births from the confident leftovers, clustered across views
        leftovers = []
        for cam, (xyxy, scores, pts, covs, cut, e, det_track) in per_cam.items():
            for j in np.flatnonzero((det_track < 0) & (scores >= p.high_score)):
                emb = e[j] if e is not None and np.isfinite(e[j]).all() else None
                leftovers.append(ViewDetection(cam, int(j), pts[j], covs[j], float(scores[j]), emb))
        confirmed_pos = [tr.position for tr in tracks if tr.global_id is not None and tr.last_update_t == t]
        birth_app = min((d for d in (p.max_app_dist, p.split_app_dist) if d is not None), default=None)
        for cluster in cluster_detections(leftovers, p.gate_sigma, p.gate_m, birth_app):
            z, r = fuse_points(np.stack([d.point for d in cluster]), np.stack([d.cov for d in cluster]))
            if confirmed_pos and min(np.linalg.norm(z - q) for q in confirmed_pos) < p.birth_min_sep_m:
                continue
            tr = GroundTrack(self.book.next_track_id, t, z, r, p.accel_sigma, p.speed_sigma)
            self.book.next_track_id += 1
            self.counters["tracks"] += 1
            for d in cluster:
                tr.views[d.camera_id] = ViewMemory(t, per_cam[d.camera_id][0][d.index].copy(), z)
                if d.embedding is not None:
                    tr.add_embedding(d.embedding)
            tracks.append(tr)
            k = len(tracks) - 1
            assigned[k] = [(d.camera_id, d.index) for d in cluster]
            for d in cluster:
                per_cam[d.camera_id][6][d.index] = k
        # 5. confirm (seen in most steps of its first confirm_s), merge duplicates, then write ids
        confirmed_now = []
        for tr in tracks:
            if tr.global_id is None and tr.last_update_t == t and t - tr.first_t >= p.confirm_s - 1e-9 and (
                    p.confirm_steady is None or any(m.steady >= p.confirm_steady for m in tr.views.values())):
                steps = (t - tr.first_t) / self._dt + 1 if self._dt else tr.hits
                if tr.hits >= 2 and tr.hits >= p.confirm_frac * steps:
                    tr.global_id = self.book.next_global_id
                    self.book.next_global_id += 1
                    self.counters["identities"] += 1
                    confirmed_now.append(tr)
        if p.resume_lost and confirmed_now:
            self._resume_lost(confirmed_now, t)
        if p.handover_views:
            self._take_over(t)
        seen_by = {tracks[k].track_id: {c for c, _ in m} for k, m in assigned.items()}
        if p.covisible_s is not None:
            self._count_covisible(seen_by, {tr.track_id for tr in tracks if tr.global_id is not None})
        self._merge_duplicates(t, seen_by)
        alias = self._provisional_aliases(t) if p.provisional_alias else {}
        for cam, (xyxy, scores, pts, covs, cut, e, det_track) in per_cam.items():
            for j in np.flatnonzero(det_track >= 0):
                gid = tracks[int(det_track[j])].global_id
                if gid is not None:
                    gid = alias.get(gid, gid)
                out.ids[cam][j] = self.merged.get(gid, gid) if gid is not None else -1
            for gid, n in zip(*np.unique(out.ids[cam][out.ids[cam] >= 0], return_counts=True)):
                self._shown[int(gid)] = self._shown.get(int(gid), 0) + int(n)
        out.ground = self._ground_states(t, seen_by, alias)
        # 6. predicted boxes for views that missed a person another view sees now
        if p.predict_boxes:
            for cam in per_cam:
                boxes, ids = [], []
                present = set(out.ids[cam][out.ids[cam] >= 0].tolist())
                for k, tr in enumerate(tracks):
                    if tr.global_id is None or tr.last_update_t != t or tr.global_id in self.merged:
                        continue
                    if len(tr.views) < 2:  # only people more than one view has confirmed
                        continue
                    if tr.global_id in present or any(c == cam for c, _ in assigned.get(k, [])):
                        continue
                    box = self._predicted_box(cam, tr, t)
                    if box is not None:
                        boxes.append(box)
                        ids.append(tr.global_id)
                self.counters["predicted_boxes"] += len(boxes)
                out.predicted[cam] = (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(ids, np.int64))
        # 7. end lost tracks
        self.book.tracks = [tr for tr in self.book.tracks if t - tr.last_update_t <= (
            p.max_lost_s if tr.global_id is not None else p.tentative_lost_s)]
        if self._covisible and self.counters["steps"] % 50 == 0:  # forget pairs with an ended track now and then
            alive = {tr.track_id for tr in self.book.tracks}
            self._covisible = {k: v for k, v in self._covisible.items() if k[0] in alive and k[1] in alive}
        return out

    def _ground_states(self, t: float, seen_by: dict[int, set[str]], alias: dict[int, int]
                       ) -> dict[int, tuple[np.ndarray, float, tuple[str, ...]]]:
        """Where each confirmed person a view saw at time t stands, and how surely (sigma m), under the id their
        boxes show (a young track reported under an older one's id gives way to the track more views saw; the
        cameras are pooled)."""
        best: dict[int, tuple[int, float, np.ndarray, np.ndarray, set[str]]] = {}
        cams: dict[int, set[str]] = {}
        for tr in self.book.tracks:
            if tr.global_id is None or tr.last_update_t != t:
                continue
            gid = alias.get(tr.global_id, tr.global_id)
            gid = self.merged.get(gid, gid)
            views = seen_by.get(tr.track_id, set())
            cams.setdefault(gid, set()).update(views)
            rank = (len(views), -tr.first_t)
            if gid not in best or rank > best[gid][:2]:
                best[gid] = (*rank, tr.kf.x[:4].astype(np.float64).copy(), tr.last_measurement_cov, views)
        if not best:
            return {}
        names = list(self.cameras)
        gids = list(best)
        sigma = placement_sigma([self.cameras[c] for c in names], np.array([best[g][2][:2] for g in gids]),
                                np.array([best[g][3] for g in gids]),
                                np.array([[c in best[g][4] for c in names] for g in gids], bool).reshape(len(gids), -1))
        return {g: (best[g][2], float(s), tuple(sorted(cams[g]))) for g, s in zip(gids, sigma)}

    def live_identities(self) -> list[tuple[int, np.ndarray]]:
        """(global id, ground position (2,) m) of the confirmed tracks alive now."""
        return [(tr.global_id, tr.position) for tr in self.book.tracks if tr.global_id is not None]
