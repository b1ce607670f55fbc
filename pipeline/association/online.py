"""`OnlineAssociator`: gives every local track (camera, track id) a global identity while the run goes on.

Called from the pipeline's main thread:
  - `on_tracks(camera, t, track_ids, xyxy)` after each tracker update (time span, ground points);
  - `on_appearance(camera, track_id, embedding, n_clips)` for each Re-ID result (the track's running embedding);
  - `step(t)` once per loop step: matches the tracks that gathered enough evidence, reviews linked ones, prunes;
  - `finish()` at the end: links every track still pending.
Each returns the `LinkEvent`s it made (new identity, match, re-link, ...): links are never rewritten silently.

Matching, per camera in turn: candidates from the faiss gallery (top-k prototypes) plus identities seen right now in
overlapping cameras with homographies; candidates that break a constraint (`topology.check_pair` against any track of
the identity) are dropped; the score is the cosine to the identity's tracks (best camera) plus a ground-plane bonus
(`ground_weight * (1 - d / ground_gate)` for simultaneous tracks); a Hungarian assignment over the camera's pending
tracks and their candidates links pairs scoring >= `match_threshold`; the others start new identities. Tracks of
one camera never share an identity at the same moment; those of the next camera may join the identities just made.

Review: a linked track is re-scored when its clip count doubles and when it ends; it moves to another identity when
that one scores `relink_margin` better (or when its own identity breaks a constraint).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.association.gallery import Gallery
from pipeline.association.topology import CameraTopology, Span, check_pair

log = logging.getLogger("mcsa.association")

TrackKey = tuple[str, int]


@dataclass(frozen=True)
class LinkEvent:
    """A track linked to a global id at time `t` (s); `previous_id` is set for re-links; reason: new | match |
    relink | constraint | final | offline."""

    camera_id: str
    track_id: int
    global_id: int
    previous_id: int | None
    t: float
    reason: str
    score: float | None
    mode: str = "online"


def offline_link_events(online: dict[TrackKey, int], offline: dict[TrackKey, int], t: float) -> list[LinkEvent]:
    """One `offline` event per track (or segment) whose offline id differs from its online one, at time t (s)."""
    return [LinkEvent(key[0], key[1], gid, online.get(key), t, "offline", None, "offline")
            for key, gid in offline.items() if online.get(key) != gid]


class TrackState:
    """What the associator knows of one local track. Ground points are kept at most `max_points` (decimated by 2 when
    full, so the whole span stays covered)."""

    def __init__(self, camera_id: str, track_id: int, t: float, max_points: int = 4096) -> None:
        self.camera_id, self.track_id = camera_id, track_id
        self.first_t = self.last_t = t
        self.n_boxes = 0
        self.embedding: np.ndarray | None = None
        self.n_clips = 0
        self.global_id: int | None = None
        self.next_review = 0
        self.ended = False
        self.max_points = max_points
        self._t = np.zeros(64)
        self._g = np.zeros((64, 2))
        self._n = 0

    @property
    def key(self) -> TrackKey:
        return (self.camera_id, self.track_id)

    def add(self, t: float, ground: np.ndarray | None) -> None:
        self.last_t = max(self.last_t, t)
        self.first_t = min(self.first_t, t)
        self.n_boxes += 1
        if ground is None:
            return
        if self._n == len(self._t):
            if self._n >= self.max_points:
                self._t[: self._n // 2] = self._t[: self._n : 2][: self._n // 2]
                self._g[: self._n // 2] = self._g[: self._n : 2][: self._n // 2]
                self._n //= 2
            else:
                self._t = np.concatenate([self._t, np.zeros(len(self._t))])
                self._g = np.concatenate([self._g, np.zeros_like(self._g)])
        self._t[self._n], self._g[self._n] = t, ground
        self._n += 1

    def span(self) -> Span:
        has = self._n > 0
        return Span(self.camera_id, self.first_t, self.last_t, self._t[: self._n] if has else None,
                    self._g[: self._n] if has else None)


@dataclass
class _Members:
    tracks: list[TrackKey]


class OnlineAssociator:
    """Online cross-camera association (see the module docstring). `cfg` is an `AssociationConfig`."""

    def __init__(self, cfg, topology: CameraTopology | None = None, embedding_dim: int | None = None) -> None:
        self.cfg = cfg
        self.topology = topology or CameraTopology()
        self.dim = embedding_dim
        self.gallery: Gallery | None = None
        self._gallery()
        self.tracks: dict[TrackKey, TrackState] = {}
        self.members: dict[int, list[TrackKey]] = {}  # global id -> its recent tracks
        self.archive: list[TrackState] = []  # tracks dropped from live state (kept for offline refinement)
        self.keep_archive = bool(cfg.offline)
        self.links: list[LinkEvent] = []
        self.now = -np.inf
        self._dirty: set[tuple[int, str]] = set()

    # ---- inputs -------------------------------------------------------------------------------------------------
    def _gallery(self) -> Gallery:
        if self.gallery is None:
            c = self.cfg
            self.gallery = Gallery(self.dim, c.index, c.max_identity_age_s, c.max_identities, nlist=c.nlist,
                                   nprobe=c.nprobe, hnsw_m=c.hnsw_m, ef_search=c.ef_search)
        return self.gallery

    def on_tracks(self, camera_id: str, t: float, track_ids, xyxy) -> None:
        """One frame of one camera: track ids (N,) and boxes xyxy (N, 4) px at time t (s)."""
        ids = np.asarray(track_ids).ravel().tolist()
        if not ids:
            self.now = max(self.now, t)
            return
        ground = self.topology.ground(camera_id, xyxy)
        for i, tid in enumerate(ids):
            key = (camera_id, int(tid))
            st = self.tracks.get(key)
            if st is None:
                st = self.tracks[key] = TrackState(camera_id, int(tid), t)
            st.add(t, None if ground is None else ground[i])
            st.ended = False
            if st.global_id is not None and self.gallery is not None:
                self.gallery.touch(st.global_id, t, camera_id)
        self.now = max(self.now, t)

    def on_appearance(self, camera_id: str, track_id: int, embedding: np.ndarray, n_clips: int) -> None:
        """The track's running L2-normalised embedding (D,) after `n_clips` clips."""
        if not self.cfg.use_appearance:
            return
        st = self.tracks.get((camera_id, int(track_id)))
        if st is None:
            return
        e = np.asarray(embedding, np.float32).ravel()
        if not np.isfinite(e).all():
            return
        st.embedding, st.n_clips = e, int(n_clips)
        if st.global_id is not None:
            self._dirty.add((st.global_id, camera_id))

    # ---- the step -----------------------------------------------------------------------------------------------
    def _ready(self, st: TrackState, final: bool) -> bool:
        if st.global_id is not None:
            return False
        if final or st.ended:
            return True
        if self.cfg.use_appearance:
            return st.embedding is not None and st.n_clips >= self.cfg.min_clips
        return st.n_boxes >= self.cfg.min_boxes

    def step(self, now_t: float | None = None) -> list[LinkEvent]:
        """Match ready tracks, review linked ones, prune; returns the links made."""
        now = self.now if now_t is None else max(now_t, self.now)
        events: list[LinkEvent] = []
        for st in self.tracks.values():
            if not st.ended and now - st.last_t > self.cfg.track_end_s:
                st.ended = True
                if st.global_id is not None and st.embedding is not None:
                    st.next_review = -1  # a final review when a track ends
        events += self._assign([st for st in self.tracks.values() if self._ready(st, False)], now)
        events += self._review(now)
        self._sync()
        self._prune(now)
        return events

    def finish(self) -> list[LinkEvent]:
        """End of the run: every track still pending gets an identity (a last review of the others first)."""
        for st in self.tracks.values():
            st.ended = True
            if st.global_id is not None and st.embedding is not None:
                st.next_review = -1
        events = self._review(self.now)
        events += self._assign([st for st in self.tracks.values() if self._ready(st, True)], self.now, "final")
        self._sync()
        return events

    # ---- scoring ------------------------------------------------------------------------------------------------
    def _check(self, a: TrackState, b: TrackState):
        c = self.cfg
        return check_pair(self.topology, a.span(), b.span(), ground_gate=c.ground_gate,
                          overlap_tolerance_s=c.overlap_tolerance_s, sync_tolerance_s=c.sync_tolerance_s)

    def score(self, st: TrackState, gid: int) -> float | None:
        """Score of track `st` joining identity `gid` (its other tracks), or None when not allowed / no evidence."""
        c = self.cfg
        others = [self.tracks[k] for k in self.members.get(gid, []) if k != st.key and k in self.tracks]
        if not others:
            return None
        dists = []
        for o in others:
            v = self._check(st, o)
            if not v.ok:
                return None
            if v.ground_distance is not None:
                dists.append(v.ground_distance)
        app = None
        if c.use_appearance and st.embedding is not None:
            per_cam: dict[str, np.ndarray] = {}
            for o in others:
                if o.embedding is not None:
                    w = max(o.n_clips, 1)
                    per_cam[o.camera_id] = per_cam.get(o.camera_id, 0) + o.embedding * w
            sims = [float(st.embedding @ v) / max(float(np.linalg.norm(v)), 1e-12) for v in per_cam.values()]
            app = max(sims) if sims else None
        bonus = c.ground_weight * (1.0 - float(np.mean(dists)) / c.ground_gate) if dists else None
        if app is None and bonus is None:
            return None
        if app is None:  # ground evidence only: within the gate is a match, nearer is better
            app = c.match_threshold if not c.use_appearance or st.embedding is None else None
            if app is None:
                return None
        return app + (bonus or 0.0)

    def _candidates(self, st: TrackState, now: float) -> set[int]:
        c = self.cfg
        cands: set[int] = set()
        if c.use_appearance and st.embedding is not None and self.gallery is not None and len(self.gallery):
            cands.update(self.gallery.search(st.embedding, c.top_k))
        if self.topology.homographies.get(st.camera_id) is not None:
            for o in self.tracks.values():  # identities seen right now in overlapping cameras with ground points
                if (o.global_id is not None and o.camera_id != st.camera_id and o.last_t >= st.first_t
                        and self.topology.link(o.camera_id, st.camera_id).overlap
                        and o.camera_id in self.topology.homographies):
                    cands.add(o.global_id)
        return cands

    # ---- linking ------------------------------------------------------------------------------------------------
    def _link(self, st: TrackState, gid: int | None, now: float, reason: str, score: float | None) -> LinkEvent:
        prev = st.global_id
        if prev is not None:
            self._unlink(st)
        if gid is None:
            gid = self._gallery().new_identity(st.first_t, st.camera_id).global_id
            self.members[gid] = []
        st.global_id = gid
        st.next_review = max(2 * st.n_clips, self.cfg.min_clips * 2)
        mem = self.members.setdefault(gid, [])
        mem.append(st.key)
        if len(mem) > self.cfg.max_members:
            mem.sort(key=lambda k: self.tracks[k].last_t if k in self.tracks else -np.inf)
            del mem[: len(mem) - self.cfg.max_members]
        self.gallery.touch(gid, st.last_t, st.camera_id)
        self._dirty.add((gid, st.camera_id))
        ev = LinkEvent(st.camera_id, st.track_id, gid, prev, now, reason, score)
        self.links.append(ev)
        return ev

    def _unlink(self, st: TrackState) -> None:
        gid = st.global_id
        mem = self.members.get(gid, [])
        if st.key in mem:
            mem.remove(st.key)
        self._dirty.add((gid, st.camera_id))
        if not mem and self.gallery is not None:  # the identity has no track left
            self.gallery.remove(gid)
            self.members.pop(gid, None)
        st.global_id = None

    def _assign(self, ready: list[TrackState], now: float, reason_new: str = "new") -> list[LinkEvent]:
        events = []
        by_cam: dict[str, list[TrackState]] = {}
        for st in ready:
            by_cam.setdefault(st.camera_id, []).append(st)
        for cam in sorted(by_cam):
            pending = sorted(by_cam[cam], key=lambda s: (s.first_t, s.track_id))
            cand_lists = [sorted(self._candidates(st, now)) for st in pending]
            cols = sorted({g for cl in cand_lists for g in cl})
            matched: dict[int, tuple[int, float]] = {}
            if cols:
                col_of = {g: j for j, g in enumerate(cols)}
                score = np.full((len(pending), len(cols)), -1e6)
                for i, (st, cl) in enumerate(zip(pending, cand_lists)):
                    for g in cl:
                        s = self.score(st, g)
                        if s is not None and s >= self.cfg.match_threshold:
                            score[i, col_of[g]] = s
                rows, cs = linear_sum_assignment(-score)
                for r, j in zip(rows, cs):
                    if score[r, j] > -1e6:
                        matched[r] = (cols[j], float(score[r, j]))
            for i, st in enumerate(pending):
                if i in matched:
                    events.append(self._link(st, matched[i][0], now, "match", matched[i][1]))
                else:
                    events.append(self._link(st, None, now, reason_new, None))
            self._sync()  # the next camera searches the identities just made
        return events

    def _review(self, now: float) -> list[LinkEvent]:
        events = []
        for st in list(self.tracks.values()):
            if st.global_id is None or (st.embedding is None and st.next_review != -1):
                continue
            if st.next_review != -1 and st.n_clips < st.next_review:
                continue
            final = st.next_review == -1
            st.next_review = max(2 * st.n_clips, self.cfg.min_clips * 2) if not final else 10**9
            current = self.score(st, st.global_id)
            alone = not [k for k in self.members.get(st.global_id, []) if k != st.key]
            best, best_s = None, -np.inf
            for g in self._candidates(st, now):
                if g == st.global_id:
                    continue
                s = self.score(st, g)
                if s is not None and s > best_s:
                    best, best_s = g, s
            if current is None and not alone:  # its identity now breaks a constraint (or lost all evidence)
                events.append(self._link(st, best if best_s >= self.cfg.match_threshold else None, now,
                                         "constraint", best_s if best is not None else None))
            elif best is not None and best_s >= self.cfg.match_threshold and (
                    alone or best_s >= current + self.cfg.relink_margin):
                events.append(self._link(st, best, now, "relink", best_s))
        return events

    # ---- gallery upkeep -----------------------------------------------------------------------------------------
    def _sync(self) -> None:
        """Recompute the per-camera prototypes of identities whose tracks changed."""
        if self.gallery is None:
            self._dirty.clear()
            return
        for gid, cam in self._dirty:
            if gid not in self.gallery.identities:
                continue
            acc, w = None, 0.0
            for k in self.members.get(gid, []):
                st = self.tracks.get(k)
                if st is not None and st.camera_id == cam and st.embedding is not None:
                    acc = st.embedding * max(st.n_clips, 1) + (0 if acc is None else acc)
                    w += 1
            self.gallery.set_prototype(gid, cam, acc)
        self._dirty.clear()

    def _prune(self, now: float) -> None:
        if self.gallery is None:
            return
        live = {st.global_id for st in self.tracks.values() if not st.ended and st.global_id is not None}
        for gid in self.gallery.prune(now, keep=live):
            for k in self.members.pop(gid, []):
                st = self.tracks.pop(k, None)
                if st is not None and self.keep_archive:
                    self.archive.append(st)
        # ended tracks no identity remembers any more
        remembered = {k for mem in self.members.values() for k in mem}
        for k in [k for k, st in self.tracks.items() if st.ended and st.global_id is not None and k not in remembered]:
            st = self.tracks.pop(k)
            if self.keep_archive:
                self.archive.append(st)

    # ---- results ------------------------------------------------------------------------------------------------
    def all_tracks(self) -> list[TrackState]:
        """Every track seen (live and archived)."""
        return list(self.archive) + list(self.tracks.values())

    def assignments(self) -> dict[TrackKey, int]:
        """(camera, track id) -> current global id, for every linked track (archived ones included)."""
        out = {st.key: st.global_id for st in self.archive if st.global_id is not None}
        out.update({k: st.global_id for k, st in self.tracks.items() if st.global_id is not None})
        return out
