"""`fused_association`: ground-plane fusion of overlapping cameras as a pipeline stage (`association.mode: fused`).

Per step it gives every fused camera's detections (`Tracks.detections`, the detector's whole output, so a person the
camera's tracker has not confirmed yet still counts; the tracker's boxes when an engine attaches none) to the
`FusedAssociator` of its group (`fusion.groups`; by default one group of every camera with a homography), then hands
each ground identity to the tracker box of the detection it was given for (IoU >= 0.5, one to one):
`tracks.global_ids` (-1: not part of a confirmed ground track yet). Ground ids of the k-th group (k >= 1) are offset
by k * `GROUP_STRIDE`. Appearance (`fusion.appearance`): each detection's own embedding (`Detections.embeddings`,
made by the engine's `DetectionEmbedder`), the running clip embedding of the tracker box a detection became, or none.

With several groups, or cameras outside every group, `GroupLinks` (pipeline/fusion/links.py) links the groups' ground
identities and the outside cameras' local tracks by Re-ID appearance and transit time: outside cameras' boxes get the
ids of the identities their tracks join, and at the end every segment and outside track is reported under the id of
its linked identity (`end.identities['online']`, so `mot/`). With one group and nothing outside it, none of this runs.

Identities are per box, not per local track: when a camera's tracker carries one local track from one person to
another (the ground tracks disagree), the track is cut there. Its first identity keeps the tracker's id; every other
identity of it gets a segment id (from `SEGMENT_BASE` up, unique per camera), written to `tracks.track_ids`, with the
tracker's own id kept in `tracks.view_ids` (action episodes follow the view, as with tracklets). `end.identities
['online']` maps (camera, segment) -> ground identity, so `mot/` holds each box's ground identity at that moment;
`step.links` tells each new segment (and the outside cameras' links).

Offline (`association.offline`, every camera a recorded file, a completed run; `pipeline.fusion.hindsight`): a segment
whose identity the fusion later joined into an older one, while the joined track was at most `fusion.offline_rewrite_s`
old, takes the older identity (`end.identities['offline']`, so `mot/`; `mot_online/` keeps the online ids), unless
the camera had its own box (not a predicted one) with the older identity at one of the segment's steps; a predicted
box that then repeats an identity in a frame is left out of `mot/` (`relabel_mot_file`).

Rows left out: a box of the camera's tracker that the fusion did not identify at this step (its detection was gated
out of every ground track, or belongs to a track the fusion has not confirmed) is dropped from the camera's tracks,
so every view reports what the ground fusion sees (`fusion.report_unidentified: true` keeps such boxes, showing the
identity their local track last showed).

Rows added to a camera's tracks (`fusion.report_detections`, `fusion.predict_boxes`): a detection the fusion gave an
identity but no tracker box took (the camera's tracker has not confirmed the person, or lost them) is reported with
the detector's box and score; a person the view's detector missed while another view sees them gets a flagged
predicted box (score 0). Both continue the segment that last showed that identity in the camera, without a tracker
id (view_ids -1), embedding or action probabilities.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from scipy.optimize import linear_sum_assignment

from core.geometry import RELIABLE_SIGMA_M, load_homography
from pipeline.association.online import LinkEvent, offline_link_events
from pipeline.fusion.associator import FusedAssociator, _iou_matrix
from pipeline.fusion.ground import CameraGeometry
from pipeline.fusion.hindsight import add_step, offline_ids, rewritten_ids
from pipeline.fusion.links import GROUP_STRIDE, GroupLinks
from pipeline.stages.base import CameraInfo, RunEnd, RunInfo, Stage, Step, register_stage

log = logging.getLogger("mcsa.fusion")

SEGMENT_BASE = 1_000_000_000  # segment ids of a local track's later identities start here (above tracker ids)
FORGET_AFTER_S = 60.0  # a local track unreported this long has ended: its working state is dropped
MATCH_IOU = 0.5  # a tracker box takes the identity of the detection it overlaps at least this much (one to one)


def match_boxes(track_xyxy: np.ndarray, det_xyxy: np.ndarray, min_iou: float = MATCH_IOU) -> np.ndarray:
    """For each tracker box (T, 4) the index of its detection (D, 4) by IoU, one to one (Hungarian), -1 below min_iou."""
    out = np.full(len(track_xyxy), -1, np.int64)
    if len(track_xyxy) == 0 or len(det_xyxy) == 0:
        return out
    iou = _iou_matrix(np.asarray(track_xyxy, np.float64), np.asarray(det_xyxy, np.float64))
    rows, cols = linear_sum_assignment(-iou)
    for r, c in zip(rows, cols):
        if iou[r, c] >= min_iou:
            out[r] = c
    return out


@dataclass(frozen=True)
class GroundPoint:
    """One person on the ground plane at one step (`Step.ground`): group: the fused group's name (cameras joined by
    '+', or 'fused' for one group); global_id: the id their boxes carry at this step (online); x_m, y_m: position in
    metres in the group's homography frame; vx_mps, vy_mps: velocity, m/s; cameras: the views that saw them now;
    sigma_m: the position's standard deviation along its least certain direction, metres (a foot point's pixel error
    grows with the distance from the camera: far from every view it reaches metres; `reliable()`)."""

    group: str
    global_id: int
    time_s: float
    x_m: float
    y_m: float
    vx_mps: float
    vy_mps: float
    cameras: tuple[str, ...]
    sigma_m: float | None = None

    def reliable(self, within_m: float | None = None) -> bool:
        """Placed to within within_m (sigma; default `RELIABLE_SIGMA_M`; unknown counts as placed)."""
        return self.sigma_m is None or self.sigma_m <= (RELIABLE_SIGMA_M if within_m is None else within_m)


@register_stage("fused_association")
class FusedAssociationStage(Stage):
    """Identities from ground-plane tracks shared by overlapping cameras."""

    writes = ("tracks.global_ids", "tracks.track_ids", "tracks.view_ids", "tracks.predicted", "step.links",
              "step.ground", "end.links", "end.identities", "end.identity_spans")

    def __init__(self, cfg) -> None:
        if not cfg.homographies:
            raise ValueError("association.mode fused needs association.homographies (camera id -> image->ground "
                             "file); fit one with `run_pipeline.py calibrate --points CSV`")
        self.cfg = cfg
        self.homographies = {cam: load_homography(path) for cam, path in cfg.homographies.items()}
        self.geoms: dict[str, CameraGeometry] = {}
        self.group_names = ["+".join(g) for g in cfg.fusion.groups] if cfg.fusion.groups else ["fused"]
        self.group_of: dict[str, str] = {}  # fused camera -> its group's name
        self.associators: dict[str, FusedAssociator] = {}  # group name -> its ground-plane tracker
        self.links: GroupLinks | None = None  # identities across groups and outside cameras (when there are any)
        self.embedding_dim: int | None = None
        self.segments: dict[tuple[str, int, int], int] = {}  # (camera, local track, ground id) -> segment id
        self.current: dict[tuple[str, int], int] = {}  # (camera, local track that has had an identity) -> its segment
        self.last_segment: dict[tuple[str, int], int] = {}  # (camera, ground id) -> the segment that last showed it
        self.last_shown: dict[tuple[str, int], int] = {}  # (camera, ground id) -> last step a row showed it
        self.first_seen: dict[tuple[str, int], int] = {}  # (camera, local track) -> its first step
        self.seen_at: dict[tuple[str, int], float] = {}  # (camera, local track) -> last time it was reported, s
        self.next_segment: dict[str, int] = {}  # camera -> next segment id
        self.leading: dict[tuple[str, int], int] = {}  # (camera, segment) -> ground id
        self.spans: dict[tuple[str, int], list[float]] = {}
        self.runs: dict[tuple[str, int], list[list[int]]] | None = None  # (camera, segment) -> steps with own boxes
        self.offline_moved = 0  # camera segments the offline pass gave another identity
        self.unfused: list[str] = []
        self.unidentified = 0  # tracker boxes left out: the fusion did not identify them (report_unidentified off)

    @classmethod
    def from_config(cls, config, params: dict) -> "FusedAssociationStage | None":
        a = config.association
        if not (a.enabled and a.mode == "fused"):
            return None
        if a.fusion.appearance != "none" and not config.reid.enabled:
            log.info("fused association without Re-ID (reid.enabled: false): geometry only; in crowds of overlapping "
                     "views each detection's look keeps people apart (docs/fusion.md), set reid.enabled: true")
        return cls(a)

    def open(self, run: RunInfo) -> None:
        self.embedding_dim = run.embedding_dim
        if self.cfg.offline and run.all_files and self.cfg.fusion.offline_rewrite_s is not None:
            self.runs = {}  # kept for the offline pass only (recorded files: a live run's memory stays bounded)

    def _group(self, cam: str) -> str | None:
        if cam not in self.cfg.fused_cameras:
            return None
        if self.cfg.fusion.groups is None:
            return self.group_names[0]
        for name, group in zip(self.group_names, self.cfg.fusion.groups):
            if cam in group:
                return name
        return None

    def open_camera(self, camera: CameraInfo) -> None:
        if camera.error is not None:
            return
        group = self._group(camera.camera_id)
        if group is None:
            self.unfused.append(camera.camera_id)
            log.info("camera %s is outside every fused group (%s): its tracks are linked to the ground identities by "
                     "Re-ID appearance and the topology's transit windows", camera.camera_id,
                     "no homography" if camera.camera_id not in self.homographies else "not in fusion.groups")
            return
        self.group_of[camera.camera_id] = group
        self.geoms[camera.camera_id] = CameraGeometry(camera.camera_id, self.homographies[camera.camera_id],
                                                      self.cfg.fusion.ground_units_per_m, camera.size)

    def _ground_id_of(self, cam: str, track_id: int) -> int | None:
        """The ground identity a fused camera's local track shows now (None: none yet)."""
        seg = self.current.get((cam, int(track_id)))
        return None if seg is None else self.leading.get((cam, seg))

    def _route_appearance(self, updates) -> None:
        for u in updates:
            cam, tid = u.result.camera_id, int(u.result.track_id)
            ground = self._ground_id_of(cam, tid) if cam in self.group_of else None
            self.links.on_appearance(cam, tid, u.embedding, u.n_clips, ground)

    def on_step(self, step: Step) -> None:
        if self.links is None and (self.unfused or len(set(self.group_of.values())) > 1):
            self.links = GroupLinks(self.cfg, self.group_of, self.embedding_dim)
        if self.links is not None:
            self._route_appearance(step.appearance)
        views, rows, dets_of, outside = {}, {}, {}, []
        source = self.cfg.fusion.appearance
        for frame, tracks in step.frames:
            cam = frame.camera_id
            tracks.global_ids = np.full(len(tracks), -1, np.int64)
            if cam not in self.geoms:
                outside.append((cam, tracks))
                continue
            dets = tracks.detections
            if dets is None:  # no detector output attached: fuse the tracker's boxes
                views[cam] = (tracks.xyxy, tracks.scores, tracks.embeddings if source != "none" else None)
                dets_of[cam] = np.arange(len(tracks))
            else:
                det_of = match_boxes(tracks.xyxy, dets.xyxy)
                emb = None
                if source == "detections":  # each detection's own embedding (None: the engine made none)
                    emb = dets.embeddings
                elif source == "tracks" and tracks.embeddings is not None and len(dets):
                    # a detection carries the running clip embedding of the tracker box it became
                    emb = np.full((len(dets), tracks.embeddings.shape[1]), np.nan, np.float32)
                    emb[det_of[det_of >= 0]] = tracks.embeddings[det_of >= 0]
                views[cam] = (dets.xyxy, dets.scores, emb)
                dets_of[cam] = det_of
            rows[cam] = tracks
        ids, predicted = {}, {}
        for k, name in enumerate(self.group_names):
            group_views = {c: v for c, v in views.items() if self.group_of[c] == name}
            if not group_views:
                continue
            if name not in self.associators:
                self.associators[name] = FusedAssociator({c: g for c, g in self.geoms.items()
                                                          if self.group_of[c] == name}, self.cfg.fusion.params())
            out = self.associators[name].update(step.time_s, group_views)
            offset = k * GROUP_STRIDE  # ground ids unique across groups (the first group's are its own)
            step.ground.extend(GroundPoint(name, int(gid) + offset, float(step.time_s), float(x[0]), float(x[1]),
                                           float(x[2]), float(x[3]), cams, float(sigma))
                               for gid, (x, sigma, cams) in out.ground.items())
            for c in group_views:
                ids[c] = np.where(out.ids[c] >= 0, out.ids[c] + offset, -1)
                if c in out.predicted:
                    predicted[c] = (out.predicted[c][0], out.predicted[c][1] + offset)
        for cam, tracks in rows.items():
            det_of = dets_of[cam]
            gids = np.where(det_of >= 0, ids[cam][np.maximum(det_of, 0)] if len(ids[cam]) else -1, -1)
            tracks.global_ids = gids.astype(np.int64)
            if not self.cfg.fusion.report_unidentified and (gids < 0).any():
                self.unidentified += int((gids < 0).sum())
                tracks.keep_rows(gids >= 0)
            self._segment(cam, tracks, step)
            if self.cfg.fusion.report_detections and tracks.detections is not None and len(ids[cam]):
                self._add_identified(cam, tracks, det_of, ids[cam], step)
            if cam in predicted and len(predicted[cam][1]):
                self._add_predicted(cam, tracks, *predicted[cam], step)
            for gid in tracks.global_ids[tracks.global_ids >= 0].tolist():
                self.last_shown[(cam, gid)] = step.index
        if self.links is not None:
            self._link_beyond_groups(step, rows, outside)
        if step.index % 500 == 0:
            self._forget_ended_tracks(step.time_s)

    def _link_beyond_groups(self, step: Step, rows: dict, outside: list) -> None:
        """Feed this step's ground identities (per group) and outside cameras' tracks to the links; outside cameras'
        boxes get the ids of the identities their tracks are linked to."""
        shown: dict[str, set[int]] = {}
        for cam, tracks in rows.items():
            shown.setdefault(self.group_of[cam], set()).update(tracks.global_ids[tracks.global_ids >= 0].tolist())
        for group, gids in shown.items():
            self.links.on_group_ids(group, step.time_s, gids)
        for cam, tracks in outside:
            self.links.on_outside_tracks(cam, step.time_s, tracks.track_ids, tracks.xyxy)
        step.links.extend(self.links.step(step.time_s))
        for cam, tracks in outside:
            tracks.global_ids = self.links.outside_ids(cam, tracks.track_ids)

    def _segment(self, cam: str, tracks, step: Step) -> None:
        """Cut local tracks where their ground identity changes: track_ids -> segment ids, tracker ids -> view_ids.

        A box the fusion gave no identity this step stays in its local track's segment (and shows that identity), unless
        another box of this frame holds the identity: then it goes to a segment without one (ids never repeat in a
        frame). tracks.global_ids ends up as the identity each box shows (-1: none)."""
        local = tracks.track_ids.copy()
        gids = tracks.global_ids.tolist()
        seg_ids = local.copy()
        shown = np.full(len(local), -1, np.int64)
        for i, (tid, gid) in enumerate(zip(local.tolist(), gids)):
            if gid < 0:
                continue
            key = (cam, int(tid))
            seg = self.segments.get((cam, int(tid), int(gid)))
            if seg is None:
                # the local track's first identity keeps the tracker's id, so its boxes from before the fusion
                # confirmed it show the identity too, unless the identity was on another row of this camera since
                # the track appeared (the MOT file would hold it twice in a frame)
                shown_since = self.last_shown.get((cam, int(gid)), -1) >= self.first_seen.get(key, step.index)
                if key not in self.current and not shown_since:
                    seg = int(tid)
                else:
                    seg = self._new_segment(cam)
                self.segments[(cam, int(tid), int(gid))] = seg
                self.leading[(cam, seg)] = int(gid)
                step.links.append(LinkEvent(cam, seg, int(gid), None, step.time_s, "new", None, "online"))
            self.last_segment[(cam, int(gid))] = seg
            self.current[key] = seg
            seg_ids[i], shown[i] = seg, gid
        held = set(shown[shown >= 0].tolist())
        for i, (tid, gid) in enumerate(zip(local.tolist(), gids)):
            if gid >= 0:
                continue
            key = (cam, int(tid))
            seg = self.current.get(key, int(tid))
            carried = self.leading.get((cam, seg), -1)
            if carried >= 0 and carried in held:
                seg = self.segments.get((cam, int(tid), -1))
                if seg is None:
                    seg = self.segments[(cam, int(tid), -1)] = self._new_segment(cam)
                self.current[key] = seg
                carried = -1
            seg_ids[i], shown[i] = seg, carried
            if carried >= 0:
                held.add(carried)
        for tid in local.tolist():
            self.first_seen.setdefault((cam, int(tid)), step.index)
            self.seen_at[(cam, int(tid))] = step.time_s
        for seg in seg_ids.tolist():
            self._touch(cam, seg, step)
        if tracks.view_ids is None:
            tracks.view_ids = local
        tracks.track_ids = seg_ids
        tracks.global_ids = shown

    def _forget_ended_tracks(self, now_s: float) -> None:
        """Drop the per-local-track working state of tracks unseen for FORGET_AFTER_S (their tracker ended them long
        ago); the segments and identities stay for the run's end. Bounds memory on long live runs."""
        old = [k for k, t in self.seen_at.items() if now_s - t > FORGET_AFTER_S]
        for k in old:
            for d in (self.seen_at, self.current, self.first_seen):
                d.pop(k, None)

    def _touch(self, cam: str, seg: int, step: Step, own_box: bool = True) -> None:
        """Extend the time span (s) of a segment to this step; own_box (not a predicted box): also its step runs, for
        the offline pass."""
        span = self.spans.setdefault((cam, seg), [step.time_s, step.time_s])
        span[1] = step.time_s
        if self.runs is not None and own_box:
            add_step(self.runs.setdefault((cam, seg), []), step.index)

    def _new_segment(self, cam: str) -> int:
        seg = self.next_segment.get(cam, SEGMENT_BASE)
        self.next_segment[cam] = seg + 1
        return seg

    def _add_identified(self, cam: str, tracks, det_of: np.ndarray, det_gids: np.ndarray, step: Step) -> None:
        """Append rows for this camera's detections that the fusion gave an identity but no tracker box took (the
        camera's own tracker has not confirmed the person yet, or has lost it: the other views have): the detector's
        box and score, not flagged predicted."""
        taken = set(det_of[det_of >= 0].tolist())
        present = set(tracks.global_ids.tolist())
        keep = [d for d, g in enumerate(det_gids.tolist()) if g >= 0 and d not in taken and g not in present]
        if keep:
            dets = tracks.detections
            self._append_rows(cam, tracks, dets.xyxy[keep], np.asarray(dets.scores, np.float32)[keep],
                              det_gids[keep], False, step)

    def _add_predicted(self, cam: str, tracks, boxes: np.ndarray, gids: np.ndarray, step: Step) -> None:
        """Append flagged rows (score 0, `tracks.predicted`) for people this camera missed and another camera sees:
        each continues the segment that last showed the person in this camera, or a new segment."""
        present = set(tracks.global_ids.tolist())
        keep = [k for k, g in enumerate(gids.tolist()) if g not in present]
        if keep:
            self._append_rows(cam, tracks, boxes[keep], np.zeros(len(keep), np.float32), gids[keep], True, step)

    def _append_rows(self, cam: str, tracks, boxes: np.ndarray, scores: np.ndarray, gids: np.ndarray,
                     predicted: bool, step: Step) -> None:
        """Append rows (boxes (M, 4) xyxy px, scores (M,), identities (M,)) to this frame's tracks: each continues the
        segment that last showed its identity in this camera, or a new segment; no tracker id (view_ids -1), no
        embedding or action probabilities (NaN)."""
        n, m = len(tracks), len(gids)
        seg_ids = []
        for gid in np.asarray(gids, np.int64).tolist():
            seg = self.last_segment.get((cam, gid))
            if seg is None:
                seg = self._new_segment(cam)
                self.leading[(cam, seg)] = gid
                self.last_segment[(cam, gid)] = seg
                step.links.append(LinkEvent(cam, seg, gid, None, step.time_s, "new", None, "online"))
            self._touch(cam, seg, step, own_box=not predicted)
            seg_ids.append(seg)

        def grow(a, fill):
            if a is None:
                return None
            extra = np.full((m,) + a.shape[1:], fill, a.dtype)
            return np.concatenate([a, extra])

        tracks.track_ids = np.r_[tracks.track_ids, np.asarray(seg_ids, np.int64)]
        tracks.xyxy = np.r_[tracks.xyxy, np.asarray(boxes, np.float32)].reshape(-1, 4)
        tracks.scores = np.r_[tracks.scores, np.asarray(scores, np.float32)]
        tracks.class_ids = np.r_[tracks.class_ids, np.zeros(m, np.int32)]
        tracks.embeddings = grow(tracks.embeddings, np.nan)
        tracks.action_probs = grow(tracks.action_probs, np.nan)
        tracks.view_ids = grow(tracks.view_ids, -1)
        tracks.global_ids = np.r_[tracks.global_ids, np.asarray(gids, np.int64)]
        flags = np.full(m, predicted, bool)
        tracks.predicted = np.r_[np.zeros(n, bool) if tracks.predicted is None else tracks.predicted, flags]

    def _offline_leading(self) -> dict[tuple[str, int], int]:
        """(camera, segment) -> ground identity after the offline pass (`pipeline.fusion.hindsight`)."""
        moved: dict[int, int] = {}
        for k, name in enumerate(self.group_names):
            if name in self.associators:
                offset = k * GROUP_STRIDE
                moved.update({g + offset: to + offset for g, to in rewritten_ids(
                    self.associators[name].joins, self.cfg.fusion.offline_rewrite_s).items()})
        return offline_ids(self.leading, moved, self.runs or {})

    def close(self, end: RunEnd) -> None:
        leading = {"online": dict(self.leading)}
        if self.runs is not None and end.status == "completed":
            leading["offline"] = self._offline_leading()
        end.identity_spans.update({k: (float(a), float(b)) for k, (a, b) in self.spans.items() if k in self.leading})
        outside: dict = {}
        if self.links is not None:
            self._route_appearance(end.appearance)
            end.links.extend(self.links.finish())
            outside = self.links.final_outside()
            end.identity_spans.update({k: (float(a), float(b)) for k, (a, b) in self.links.outside_spans.items()
                                       if k in outside})
        for mode, ground in leading.items():
            ids = ground
            if self.links is not None:
                ids = {(cam, seg): self.links.final_id(self.group_of[cam], gid) for (cam, seg), gid in ground.items()}
                ids.update(outside)
            end.identities[mode] = ids
        if "offline" in end.identities:
            moved = offline_link_events(end.identities["online"], end.identities["offline"],
                                        max((b for _, b in self.spans.values()), default=0.0))
            end.links.extend(moved)
            self.offline_moved = len(moved)
        final = end.final_identities
        log.info("fused association: %d tracks -> %d global identities (%s)", len(final), len(set(final.values())),
                 f"offline: {self.offline_moved} segments given an older identity" if "offline" in end.identities
                 else "online")

    def counters(self) -> dict:
        c: dict = {}
        for assoc in self.associators.values():
            for k, v in assoc.counters.items():
                c[k] = c.get(k, 0) + v
        c["tracks"] = len(self.leading)
        c["unidentified_left_out"] = self.unidentified
        c["offline_rewritten_segments"] = self.offline_moved
        if self.links is not None:
            c["outside_tracks"] = len(self.links.outside_spans)
        return c

    def summary_line(self) -> str | None:
        c = self.counters()
        if not c.get("steps"):
            return None
        line = (f"Fused association: {c['tracks']} camera tracks -> {c['identities']} ground identities "
                f"({c['merges']} merged duplicates, {c['resumed']} lost and found again, "
                f"{c['handovers']} passed on from a dragged-off track, "
                f"{c['predicted_boxes']} predicted boxes, {c['unidentified_left_out']} tracker boxes the fusion did "
                f"not identify left out)")
        if self.runs is not None and c["offline_rewritten_segments"]:
            line += (f"; offline: {c['offline_rewritten_segments']} camera segments took the identity they were "
                     "joined into")
        if self.links is not None:
            line += (f"; {len(self.associators)} group(s) and {c['outside_tracks']} tracks of "
                     f"{len(self.unfused)} outside camera(s) linked by appearance")
        return line


__all__ = ["FusedAssociationStage"]
