"""Camera topology: which camera pairs overlap, transit windows between the others, and ground-plane homographies.

A `PairLink` says how two cameras relate: `overlap=True` (they can see the same person at the same moment) or a transit
window `[min_transit_s, max_transit_s]` (seconds between leaving one view and entering the other; no simultaneity).
Homographies are 3x3 matrices mapping image points (px) to the ground plane (the EPFL `Homography.txt` files: nine
whitespace-separated numbers, row-major, image -> ground, ground units as in the file). A person's ground point is
the bottom-centre of the box mapped through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.geometry import load_homography, to_ground


@dataclass(frozen=True)
class PairLink:
    """How two cameras relate. Non-overlapping: a person needs `min_transit_s..max_transit_s` s to go across."""

    overlap: bool = False
    min_transit_s: float = 0.0
    max_transit_s: float | None = None  # None: no upper bound


class CameraTopology:
    """Pair links between cameras (symmetric) plus optional per-camera homographies.

    `default` applies to pairs that are not listed. The same camera is never 'overlapping' with itself: one identity
    cannot be two simultaneous tracks of one camera.
    """

    def __init__(self, links: dict[tuple[str, str], PairLink] | None = None, default: PairLink | None = None,
                 homographies: dict[str, np.ndarray] | None = None) -> None:
        self.default = default or PairLink(overlap=False)
        self._links: dict[frozenset, PairLink] = {}
        for (a, b), link in (links or {}).items():
            self._links[frozenset((a, b))] = link
        self.homographies = dict(homographies or {})

    @classmethod
    def from_config(cls, cfg) -> "CameraTopology":
        """From an `AssociationConfig` (its `topology` list, `default_link` and `homographies` mapping)."""
        links = {}
        for pair in cfg.topology:
            links[(pair.cameras[0], pair.cameras[1])] = PairLink(pair.overlap, pair.min_transit_s, pair.max_transit_s)
        d = cfg.default_link
        default = PairLink(d.overlap, d.min_transit_s, d.max_transit_s)
        homs = {cam: load_homography(path) for cam, path in cfg.homographies.items()}
        return cls(links, default, homs)

    def link(self, a: str, b: str) -> PairLink:
        if a == b:
            return PairLink(overlap=False, min_transit_s=0.0, max_transit_s=None)
        return self._links.get(frozenset((a, b)), self.default)

    def ground(self, camera_id: str, xyxy: np.ndarray) -> np.ndarray | None:
        """Ground points (N, 2) of boxes of this camera, or None without a homography."""
        h = self.homographies.get(camera_id)
        return None if h is None else to_ground(h, xyxy)


def build_topology(cfg) -> CameraTopology:
    """The topology of an `AssociationConfig`; with `constraints: false` only the one rule that keeps outputs valid
    remains (one identity is never two simultaneous tracks of one camera): every camera pair overlaps, no ground."""
    if cfg.constraints:
        return CameraTopology.from_config(cfg)
    return CameraTopology(default=PairLink(overlap=True))


@dataclass
class Span:
    """What the constraints need of one track: camera, time span (s) and ground points over time."""

    camera_id: str
    first_t: float
    last_t: float
    times: np.ndarray | None = None  # (K,) s, increasing
    ground: np.ndarray | None = None  # (K, 2) ground points at `times`


def ground_distance(a: Span, b: Span, tolerance_s: float) -> float | None:
    """Median ground-plane distance between two tracks over the moments both are seen (within `tolerance_s`), or
    None when they share no moment or lack ground points (the median tolerates occluded boxes and short id switches)."""
    if a.times is None or b.times is None or len(a.times) == 0 or len(b.times) == 0:
        return None
    idx = np.clip(np.searchsorted(b.times, a.times), 1, len(b.times) - 1) if len(b.times) > 1 else None
    if idx is None:
        nearest = np.zeros(len(a.times), np.int64)
    else:
        left, right = b.times[idx - 1], b.times[idx]
        nearest = np.where(np.abs(a.times - left) <= np.abs(right - a.times), idx - 1, idx)
    ok = np.abs(b.times[nearest] - a.times) <= tolerance_s
    if not ok.any():
        return None
    return float(np.median(np.linalg.norm(a.ground[ok] - b.ground[nearest[ok]], axis=1)))


@dataclass(frozen=True)
class Verdict:
    """Whether two tracks may be the same person; `ground_distance` is set when simultaneous ground points exist."""

    ok: bool
    ground_distance: float | None = None
    reason: str = ""


def check_pair(topology: CameraTopology, a: Span, b: Span, *, ground_gate: float, overlap_tolerance_s: float,
               sync_tolerance_s: float) -> Verdict:
    """Can tracks `a` and `b` belong to one identity?

    - same camera: their time spans must not overlap at all (one identity is never two boxes of one frame);
    - non-overlapping cameras: no overlap in time (beyond `overlap_tolerance_s`), and the gap must lie in the pair's
      transit window;
    - overlapping cameras: anything goes in time, but where both are seen at the same moments and both cameras have
      homographies, the median ground distance must stay below `ground_gate`.
    """
    overlap_s = min(a.last_t, b.last_t) - max(a.first_t, b.first_t)
    link = topology.link(a.camera_id, b.camera_id)
    if a.camera_id == b.camera_id:  # never two boxes of one identity in one frame
        return Verdict(False, reason="simultaneous") if overlap_s >= 0 else Verdict(True)
    if not link.overlap:
        if overlap_s > overlap_tolerance_s:
            return Verdict(False, reason="simultaneous")
        if a.camera_id != b.camera_id:
            gap = max(b.first_t - a.last_t, a.first_t - b.last_t)
            if gap < link.min_transit_s or (link.max_transit_s is not None and gap > link.max_transit_s):
                return Verdict(False, reason="transit")
        return Verdict(True)
    if overlap_s < -sync_tolerance_s:
        return Verdict(True)
    d = ground_distance(a, b, sync_tolerance_s)
    if d is not None and d > ground_gate:
        return Verdict(False, d, reason="ground")
    return Verdict(True, d)
