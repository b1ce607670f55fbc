"""`AssociationStage`: cross-camera association inside a pipeline run, and its outputs.

The `Pipeline` calls it from the main thread: `on_tracks` after each tracker update, `on_appearance` for each Re-ID
result, `step` once per loop step, and `finish` on every exit path (end, error, Ctrl-C) after the per-frame MOT files
are closed. Links go to the store as they are made (`identity_links`). While the run goes on, `DIR/mot_local/` holds
local ids (written live); `finish` rewrites them with global ids into `DIR/mot/` (offline-refined ids for recorded
runs when `association.offline`, with the online ones in `DIR/mot_online/`) and records the `identities` table.
"""

from __future__ import annotations

import logging
from pathlib import Path


from pipeline.association.offline import refine
from pipeline.association.online import LinkEvent, OnlineAssociator
from pipeline.association.topology import CameraTopology, build_topology

log = logging.getLogger("mcsa.association")


def relabel_mot_file(src: Path, dst: Path, camera_id: str, ids: dict[tuple[str, int], int]) -> int:
    """Copy a MOT file replacing each local id (column 2) by `ids[(camera_id, id)]`; ids without a global one get
    fresh ids above all others. Returns the number of lines written."""
    fresh: dict[int, int] = {}
    top = max(list(ids.values()) + [0])
    n = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="ascii") as fin, open(dst, "w", encoding="ascii") as fout:
        for line in fin:
            parts = line.rstrip("\n").split(",")
            if len(parts) < 6:
                continue
            local = int(float(parts[1]))
            gid = ids.get((camera_id, local))
            if gid is None:
                gid = fresh.setdefault(local, top + len(fresh) + 1)
            parts[1] = str(gid)
            fout.write(",".join(parts) + "\n")
            n += 1
    return n


class AssociationStage:
    """Online association for a run, plus (for recorded files) offline refinement and the final outputs."""

    def __init__(self, cfg, output_dir: Path, writer=None, embedding_dim: int | None = None) -> None:
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        self.writer = writer
        self.topology = build_topology(cfg)
        self.associator = OnlineAssociator(cfg, self.topology, embedding_dim)
        self.cameras: list[str] = []
        self.all_files = True
        self._finished = False
        self._warned = False

    def add_camera(self, camera_id: str, is_live: bool) -> None:
        self.cameras.append(camera_id)
        self.all_files &= not is_live

    def on_tracks(self, frame, tracks) -> None:
        self.associator.on_tracks(frame.camera_id, frame.timestamp_s, tracks.track_ids, tracks.xyxy)

    def on_appearance(self, result, state) -> None:
        self.associator.on_appearance(result.camera_id, result.track_id, state.embedding, state.n_clips)

    def unknown_cameras(self) -> list[str]:
        """Cameras named by the topology or homographies that this run does not have (typos, or a config trimmed to
        fewer cameras: their entries are simply unused)."""
        named = {c for link in self.cfg.topology for c in link.cameras} | set(self.cfg.homographies)
        return sorted(named - set(self.cameras))

    def step(self, now_t: float | None = None) -> list[LinkEvent]:
        if not self._warned:
            self._warned = True
            if self.unknown_cameras():
                log.warning("association config names cameras this run does not have (unused): %s",
                            ", ".join(self.unknown_cameras()))
        events = self.associator.step(now_t)
        self._record(events)
        return events

    def _record(self, events: list[LinkEvent]) -> None:
        if self.writer is None:
            return
        for e in events:
            self.writer.add_identity_link(e.camera_id, e.track_id, e.global_id, e.previous_id, e.t, e.reason, e.score,
                                          e.mode)

    def _identity_rows(self, ids: dict) -> list[dict]:
        rows = []
        for st in self.associator.all_tracks():
            gid = ids.get(st.key)
            if gid is not None:
                rows.append(dict(camera_id=st.camera_id, track_id=st.track_id, global_id=int(gid),
                                 first_ts=float(st.first_t), last_ts=float(st.last_t)))
        return rows

    def finish(self, local_dir: Path, interrupted: bool = False) -> dict[str, dict]:
        """Link pending tracks, refine offline (recorded files, completed runs), write mot/ (+ mot_online/) from
        `local_dir` and record the identities. Idempotent; returns {mode: {(camera, track): global id}}."""
        if self._finished:
            return {}
        self._finished = True
        self._record(self.associator.finish())
        online = self.associator.assignments()
        result = {"online": online}
        final = online
        if self.cfg.offline and self.all_files and not interrupted:
            tracks = self.associator.all_tracks()
            offline = refine(tracks, self.topology, self.cfg, online)
            result["offline"] = offline
            final = offline
            t_end = max((st.last_t for st in tracks), default=0.0)
            for key, gid in offline.items():
                if online.get(key) != gid:
                    self._record([LinkEvent(key[0], key[1], gid, online.get(key), t_end, "offline", None,
                                            "offline")])
        if self.writer is not None:
            for mode, ids in result.items():
                self.writer.set_identities(mode, self._identity_rows(ids))
        for cam in self.cameras:
            src = Path(local_dir) / f"{cam}.txt"
            if not src.is_file():
                continue
            relabel_mot_file(src, self.output_dir / "mot" / f"{cam}.txt", cam, final)
            if "offline" in result:
                relabel_mot_file(src, self.output_dir / "mot_online" / f"{cam}.txt", cam, online)
        n_ids = len(set(final.values()))
        log.info("association: %d tracks -> %d global identities (%s)", len(final), n_ids,
                 "offline-refined" if "offline" in result else "online")
        return result

    def counters(self) -> dict:
        a = self.associator
        reasons: dict[str, int] = {}
        for e in a.links:
            reasons[e.reason] = reasons.get(e.reason, 0) + 1
        return dict(identities=len(set(a.assignments().values())), tracks=len(a.all_tracks()), links=reasons,
                    gallery=len(a.gallery) if a.gallery is not None else 0)


__all__ = ["AssociationStage", "relabel_mot_file"]
