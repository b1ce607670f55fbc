"""Identities beyond one group of overlapping cameras: links between fused groups and the cameras outside them.

In `association.mode: fused` each group of overlapping cameras (`association.fusion.groups`; by default one group of
every camera with a homography) is tracked once on the ground plane, and its people get ground identities at once.
A site usually has more: a camera down the corridor with no overlap, a second group in another hall. `GroupLinks`
gives them shared identities with the track-then-match association of mode `tracks`
(`pipeline.association.OnlineAssociator`: Re-ID appearance, the topology's transit windows, one identity never two
tracks of one view at a time):

- each group is one view `group:NAME` whose tracks are its ground identities: their time spans and the running Re-ID
  embedding of the camera tracks that showed them (clip-weighted mean);
- each camera outside every group brings its own local tracks, as in mode tracks;
- the topology written between real cameras carries over to the groups: a link between a group's camera and a
  camera outside it becomes a link of the group (overlap if any such link overlaps, else the widest transit window).

Ids. A ground identity shows its own id in its group's views at every step (no wait for Re-ID). An associator
identity that started from a ground identity shows that id in the outside cameras too; one that started in an outside
camera shows `OUTSIDE_BASE` + its associator id. At the run's end every ground identity and outside track is reported
under the id of its associator identity (`final_id`, `outside_ids`), so `mot/` holds one id per person across groups.
"""

from __future__ import annotations

import numpy as np

from pipeline.association.online import LinkEvent, OnlineAssociator
from pipeline.association.topology import CameraTopology, PairLink

GROUP_STRIDE = 10_000_000  # ground ids of group k (k >= 1) are k * GROUP_STRIDE + the group's own id
OUTSIDE_BASE = 900_000_000  # ids of identities first seen by a camera outside every group: OUTSIDE_BASE + associator id
GROUP_PREFIX = "group:"
PRUNE_EVERY = 500  # steps between prunings of the ground identities' per-track embeddings


def group_view(name: str) -> str:
    """The associator's view name of a fused group."""
    return GROUP_PREFIX + name


def group_topology(cfg, group_of: dict[str, str]) -> CameraTopology:
    """The topology of an `AssociationConfig` seen with each group as one view: links between a group's cameras and
    another view are merged into one link (overlap if any overlaps; else min of the minimum transits, max of the
    maxima, unbounded if any is); links inside a group are dropped. No homographies: ground identities are already
    matched on the ground, and outside cameras have none."""
    merged: dict[frozenset, list[PairLink]] = {}
    for pair in cfg.topology:
        a, b = (group_view(group_of[c]) if c in group_of else c for c in pair.cameras[:2])
        if a == b:
            continue
        merged.setdefault(frozenset((a, b)), []).append(PairLink(pair.overlap, pair.min_transit_s, pair.max_transit_s))
    links = {}
    for key, ls in merged.items():
        a, b = sorted(key)
        if any(link.overlap for link in ls):
            links[(a, b)] = PairLink(overlap=True)
        else:
            maxes = [link.max_transit_s for link in ls]
            links[(a, b)] = PairLink(False, min(link.min_transit_s for link in ls),
                                     None if any(m is None for m in maxes) else max(maxes))
    d = cfg.default_link
    return CameraTopology(links, PairLink(d.overlap, d.min_transit_s, d.max_transit_s))


class GroupLinks:
    """Track-then-match association over fused groups (ground identities) and outside cameras (local tracks).

    cfg: the `AssociationConfig`; group_of: {camera id: group name} of the fused cameras; embedding_dim: Re-ID D."""

    def __init__(self, cfg, group_of: dict[str, str], embedding_dim: int | None = None) -> None:
        self.group_of = dict(group_of)
        self.associator = OnlineAssociator(cfg, group_topology(cfg, self.group_of), embedding_dim)
        self.shown: dict[int, int] = {}  # associator identity -> the id it shows
        self.clips: dict[tuple[str, int], dict[tuple[str, int], tuple[np.ndarray, int]]] = {}  # (view, ground id) ->
        # {(camera, local track): (its running embedding, clips)}
        self.outside_spans: dict[tuple[str, int], list[float]] = {}
        self.linked: dict[tuple[str, int], int] = {}  # (view, track or ground id) -> associator identity, last event
        self._steps = 0

    # -- inputs --------------------------------------------------------------------------------------------------
    def on_group_ids(self, group: str, t: float, ground_ids) -> None:
        """The ground identities (globally unique ids) a group's views showed at time t (s)."""
        ids = sorted(set(int(g) for g in ground_ids))
        self.associator.on_tracks(group_view(group), t, np.asarray(ids, np.int64), np.zeros((len(ids), 4)))

    def on_outside_tracks(self, camera_id: str, t: float, track_ids, xyxy) -> None:
        """One frame of a camera outside every group: its local track ids (N,) and boxes (N, 4) px at time t (s)."""
        self.associator.on_tracks(camera_id, t, track_ids, xyxy)
        for tid in np.asarray(track_ids).ravel().tolist():
            span = self.outside_spans.setdefault((camera_id, int(tid)), [t, t])
            span[1] = t

    def on_appearance(self, camera_id: str, track_id: int, embedding: np.ndarray, n_clips: int,
                      ground_id: int | None = None) -> None:
        """A Re-ID result: the local track's running embedding (D,) after n_clips clips. For a fused camera, pass the
        ground identity the track shows (None: none yet, the result is not used)."""
        if camera_id not in self.group_of:
            self.associator.on_appearance(camera_id, track_id, embedding, n_clips)
            return
        if ground_id is None or ground_id < 0:
            return
        key = (group_view(self.group_of[camera_id]), int(ground_id))
        parts = self.clips.setdefault(key, {})
        parts[(camera_id, int(track_id))] = (np.asarray(embedding, np.float32).ravel(), int(n_clips))
        total = sum(n for _, n in parts.values())
        mean = sum(e * n for e, n in parts.values()) / max(total, 1)
        norm = float(np.linalg.norm(mean))
        if norm > 0:
            self.associator.on_appearance(key[0], key[1], mean / norm, total)

    # -- the step ------------------------------------------------------------------------------------------------
    def _shown_id(self, gid: int, view: str, track_id: int) -> int:
        if gid not in self.shown:
            self.shown[gid] = track_id if view.startswith(GROUP_PREFIX) else OUTSIDE_BASE + gid
        return self.shown[gid]

    def _translate(self, events: list[LinkEvent]) -> list[LinkEvent]:
        """Register the id each new associator identity shows; return the events of real cameras in shown ids."""
        out = []
        for e in events:
            shown = self._shown_id(e.global_id, e.camera_id, e.track_id)
            self.linked[(e.camera_id, e.track_id)] = e.global_id
            if e.camera_id.startswith(GROUP_PREFIX):
                continue
            prev = self.shown.get(e.previous_id) if e.previous_id is not None else None
            out.append(LinkEvent(e.camera_id, e.track_id, shown, prev, e.t, e.reason, e.score, e.mode))
        return out

    def step(self, t: float) -> list[LinkEvent]:
        """Match what is ready; the link events of outside cameras (ids as shown)."""
        events = self._translate(self.associator.step(t))
        self._steps += 1
        if self._steps % PRUNE_EVERY == 0:
            self._prune_clips()
        return events

    def _prune_clips(self) -> None:
        """Forget the per-track embeddings of ground identities the associator no longer holds live (ended and
        pruned: ground ids are never reused), so a long live run's memory stays bounded."""
        live = self.associator.tracks
        for key in [k for k in self.clips if k not in live or live[k].ended]:
            del self.clips[key]

    def finish(self) -> list[LinkEvent]:
        """End of the run: every pending track and ground identity gets an identity."""
        return self._translate(self.associator.finish())

    # -- ids -----------------------------------------------------------------------------------------------------
    def outside_ids(self, camera_id: str, track_ids) -> np.ndarray:
        """Shown ids (N,) of an outside camera's local tracks now (-1: not linked yet)."""
        tracks = self.associator.tracks
        out = np.full(len(track_ids), -1, np.int64)
        for i, tid in enumerate(np.asarray(track_ids).ravel().tolist()):
            st = tracks.get((camera_id, int(tid)))
            if st is not None and st.global_id is not None:
                out[i] = self._shown_id(st.global_id, camera_id, int(tid))
        return out

    def final_id(self, group: str, ground_id: int) -> int:
        """The id a ground identity is reported under (after `finish`): its associator identity's id, else its own."""
        gid = self.linked.get((group_view(group), int(ground_id)))
        return ground_id if gid is None else self.shown[gid]

    def final_outside(self) -> dict[tuple[str, int], int]:
        """{(outside camera, local track): id} (after `finish`)."""
        return {key: self.shown[gid] for key, gid in self.linked.items() if not key[0].startswith(GROUP_PREFIX)}


__all__ = ["GROUP_STRIDE", "OUTSIDE_BASE", "GroupLinks", "group_topology", "group_view"]
