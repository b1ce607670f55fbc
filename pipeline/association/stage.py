"""`AssociationStage`: cross-camera association inside a run, as a stage (`pipeline/stages/base.py`).

Reads each frame's tracks (boxes -> ground points) and the Re-ID results of the step (`step.appearance`); once per
step it matches ready tracks to global identities. Writes `tracks.global_ids` (-1: not linked yet), `step.links`
(the link events made, for the store) and, at the end, `end.links` and `end.identities` ({'online': ids,
'offline': ids} with {(camera_id, track_id): global id}; offline only for recorded runs that completed, with
`association.offline`) plus `end.identity_spans`. The MOT stage writes `mot/` with these final ids.
"""

from __future__ import annotations

import logging
import numpy as np

from pipeline.association.offline import refine
from pipeline.association.online import OnlineAssociator, offline_link_events
from pipeline.association.topology import build_topology
from pipeline.stages.base import CameraInfo, RunEnd, RunInfo, Stage, Step, register_stage

log = logging.getLogger("mcsa.association")


@register_stage("association")
class AssociationStage(Stage):
    """Online association for a run, plus (for recorded files) offline refinement at the end."""

    writes = ("tracks.global_ids", "step.links", "end.links", "end.identities", "end.identity_spans")

    def __init__(self, cfg, embedding_dim: int | None = None) -> None:
        self.cfg = cfg
        self.topology = build_topology(cfg)
        self.associator = OnlineAssociator(cfg, self.topology, embedding_dim)
        self.cameras: list[str] = []
        self.all_files = True
        self._finished = False
        self._warned = False
        self._final: dict | None = None  # the final ids, once closed (the summary counts these)
        self._mode = "online"

    @classmethod
    def from_config(cls, config, params: dict) -> "AssociationStage | None":
        return cls(config.association) if config.association.enabled else None

    def open(self, run: RunInfo) -> None:
        self.all_files = run.all_files
        if run.embedding_dim is not None and run.embedding_dim != self.associator.dim:
            self.associator = OnlineAssociator(self.cfg, self.topology, run.embedding_dim)

    def open_camera(self, camera: CameraInfo) -> None:
        if camera.error is None:
            self.cameras.append(camera.camera_id)

    def on_frame(self, frame, tracks) -> None:
        self.associator.on_tracks(frame.camera_id, frame.timestamp_s, tracks.track_ids, tracks.xyxy)

    def on_step(self, step: Step) -> None:
        if not self._warned:
            self._warned = True
            if self.unknown_cameras():
                log.warning("association config names cameras this run does not have (unused): %s",
                            ", ".join(self.unknown_cameras()))
        self._appearance(step.appearance)
        step.links.extend(self.associator.step(step.time_s))
        tracks_by_key = self.associator.tracks
        for frame, tracks in step.frames:
            cam = frame.camera_id
            gids = np.full(len(tracks), -1, np.int64)
            for i, tid in enumerate(tracks.track_ids.tolist()):
                st = tracks_by_key.get((cam, tid))
                if st is not None and st.global_id is not None:
                    gids[i] = st.global_id
            tracks.global_ids = gids

    def close(self, end: RunEnd) -> None:
        """Link pending tracks, refine offline (recorded files, completed runs); idempotent."""
        if self._finished:
            return
        self._finished = True
        self._appearance(end.appearance)
        end.links.extend(self.associator.finish())
        online = self.associator.assignments()
        end.identities["online"] = online
        final = online
        if self.cfg.offline and self.all_files and end.status == "completed":
            tracks = self.associator.all_tracks()
            offline = refine(tracks, self.topology, self.cfg, online)
            end.identities["offline"] = final = offline
            end.links.extend(offline_link_events(online, offline, max((st.last_t for st in tracks), default=0.0)))
        self._final = final
        self._mode = "offline-refined" if "offline" in end.identities else "online"
        end.identity_spans.update({st.key: (float(st.first_t), float(st.last_t))
                                   for st in self.associator.all_tracks()})
        log.info("association: %d tracks -> %d global identities (%s)", len(final), len(set(final.values())),
                 self._mode)

    def _appearance(self, updates) -> None:
        for u in updates:
            self.associator.on_appearance(u.result.camera_id, u.result.track_id, u.embedding, u.n_clips)

    def unknown_cameras(self) -> list[str]:
        """Cameras named by the topology or homographies that this run does not have (typos, or a config trimmed to
        fewer cameras: their entries are simply unused)."""
        named = {c for link in self.cfg.topology for c in link.cameras} | set(self.cfg.homographies)
        return sorted(named - set(self.cameras))

    def counters(self) -> dict:
        a = self.associator
        reasons: dict[str, int] = {}
        for e in a.links:
            reasons[e.reason] = reasons.get(e.reason, 0) + 1
        ids = self._final if self._final is not None else a.assignments()
        return dict(identities=len(set(ids.values())), tracks=len(a.all_tracks()), links=reasons,
                    gallery=len(a.gallery) if a.gallery is not None else 0,
                    refined=self._mode)

    def summary_line(self) -> str:
        c = self.counters()
        links = ", ".join(f"{n} {k}" for k, n in sorted(c["links"].items()))
        return f"Association: {c['tracks']} tracks -> {c['identities']} global identities, {c['refined']} ({links})"


__all__ = ["AssociationStage"]
