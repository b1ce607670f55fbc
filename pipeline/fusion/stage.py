"""`fused_association`: ground-plane fusion of overlapping cameras as a pipeline stage (`association.mode: fused`).

Per step it gives every camera's reported track boxes (the per-camera tracker's output: boxes, scores and, with
Re-ID, the running embeddings) to one `FusedAssociator` for the cameras that have a homography, and writes the
ground track's identity onto `tracks.global_ids` (-1: not part of a confirmed ground track yet; cameras without a
homography keep -1). A local track's global id is the one most of its boxes had: `end.identities['online']`
({(camera_id, track_id): global id}) for the MOT stage and the store, with `step.links` whenever a track's leading
identity appears or changes. There is no offline pass in this mode (the online ids are final).
"""

from __future__ import annotations

import logging

import numpy as np

from core.geometry import load_homography
from pipeline.association.online import LinkEvent
from pipeline.fusion.associator import FusedAssociator
from pipeline.fusion.ground import CameraGeometry
from pipeline.stages.base import CameraInfo, RunEnd, RunInfo, Stage, Step, register_stage

log = logging.getLogger("mcsa.fusion")


@register_stage("fused_association")
class FusedAssociationStage(Stage):
    """Identities from ground-plane tracks shared by overlapping cameras."""

    writes = ("tracks.global_ids", "step.links", "end.links", "end.identities", "end.identity_spans")

    def __init__(self, cfg) -> None:
        if not cfg.homographies:
            raise ValueError("association.mode fused needs association.homographies (camera id -> image->ground "
                             "file); fit one with `run_pipeline.py calibrate --points CSV`")
        self.cfg = cfg
        self.homographies = {cam: load_homography(path) for cam, path in cfg.homographies.items()}
        self.geoms: dict[str, CameraGeometry] = {}
        self.associator: FusedAssociator | None = None
        self.votes: dict[tuple[str, int], dict[int, int]] = {}
        self.leading: dict[tuple[str, int], int] = {}
        self.spans: dict[tuple[str, int], list[float]] = {}
        self.unfused: list[str] = []

    @classmethod
    def from_config(cls, config, params: dict) -> "FusedAssociationStage | None":
        a = config.association
        return cls(a) if a.enabled and a.mode == "fused" else None

    def open(self, run: RunInfo) -> None:
        pass

    def open_camera(self, camera: CameraInfo) -> None:
        if camera.error is not None:
            return
        h = self.homographies.get(camera.camera_id)
        if h is None:
            self.unfused.append(camera.camera_id)
            log.warning("camera %s has no homography: it is not fused (its tracks get no global id); add it to "
                        "association.homographies", camera.camera_id)
            return
        self.geoms[camera.camera_id] = CameraGeometry(camera.camera_id, h, self.cfg.fusion.ground_units_per_m,
                                                      camera.size)

    def on_step(self, step: Step) -> None:
        views, rows = {}, {}
        for frame, tracks in step.frames:
            cam = frame.camera_id
            tracks.global_ids = np.full(len(tracks), -1, np.int64)
            if cam not in self.geoms:
                continue
            views[cam] = (tracks.xyxy, tracks.scores, tracks.embeddings)
            rows[cam] = tracks
        if not views:
            return
        if self.associator is None:
            self.associator = FusedAssociator(self.geoms, self.cfg.fusion.params())
        out = self.associator.update(step.time_s, views)
        for cam, tracks in rows.items():
            ids = out.ids[cam]
            tracks.global_ids = ids.astype(np.int64)
            for tid, gid in zip(tracks.track_ids.tolist(), ids.tolist()):
                key = (cam, int(tid))
                span = self.spans.setdefault(key, [step.time_s, step.time_s])
                span[1] = step.time_s
                if gid < 0:
                    continue
                v = self.votes.setdefault(key, {})
                v[gid] = v.get(gid, 0) + 1
                lead = max(v, key=v.get)
                prev = self.leading.get(key)
                if lead != prev:
                    self.leading[key] = lead
                    step.links.append(LinkEvent(cam, int(tid), int(lead), prev, step.time_s,
                                                "new" if prev is None else "relink", None, "online"))

    def close(self, end: RunEnd) -> None:
        end.identities["online"] = dict(self.leading)
        end.identity_spans.update({k: (float(a), float(b)) for k, (a, b) in self.spans.items() if k in self.leading})
        log.info("fused association: %d tracks -> %d global identities", len(self.leading),
                 len(set(self.leading.values())))

    def counters(self) -> dict:
        c = dict(self.associator.counters) if self.associator is not None else {}
        c["tracks"] = len(self.leading)
        return c

    def summary_line(self) -> str | None:
        c = self.counters()
        if not c.get("steps"):
            return None
        return (f"Fused association: {c['tracks']} camera tracks -> {c['identities']} ground identities "
                f"({c['merges']} merged duplicates, {c['predicted_boxes']} predicted boxes)")


__all__ = ["FusedAssociationStage"]
