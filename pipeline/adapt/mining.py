"""Pseudo-identities from geometry and time, without labels (`run_pipeline.py adapt`, issue #18).

Input: each camera's tracks of a finished run (`DIR/mot_local/<camera>.txt`, the per-camera tracklet ids) with their
foot points on the ground plane (box bottom-centre through the camera's homography, metres; without a homography,
image distances in box heights times `person_height_m`, which is only used within one camera).

Three kinds of evidence, all in metres and seconds:
- **same place, same moment** (must-link): in overlapping views, two tracks whose foot points are each other's
  nearest, within `link_m`, with every other person of both views at least `ambiguity_m` farther, for at least
  `min_together_s` and in at least `min_agree_frac` of the moments both are seen, are one person;
- **continuation** (must-link): in one camera, a track that starts within `continuity_gap_s` after another ended,
  where a walker could have got to (`continuity_m` + `max_speed_mps` x gap), when neither has another candidate,
  nobody else is near, and neither track ever came within `ambiguity_m` of another of the camera's tracks (there a
  per-camera tracker can swap people inside a track), continues it;
- **seen together** (cannot-link): two tracks of one camera alive at the same moment, and two tracks of overlapping
  views seen together `apart_m` or more apart (median), are different people.

A track with same-place-same-moment links to two or more tracks of one other camera that no continuation joins keeps
none of them (`exclusive_partners`): one of the two trackers swapped people there, and the links cannot tell which.

Identities are grown from the must-links, strongest first, never joining two groups with a cannot-link between them.

Before mining, `cut_into_stretches` (`cut_tracks`, on by default) cuts each camera's tracks where their person met
another of the camera's tracks (within `ambiguity_m`) and where the feet jump farther than a walker gets: a tracker
swaps people only there, so every stretch mined is one person.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TrackKey = tuple[str, int]  # (camera id, local track id)


@dataclass
class CameraTracks:
    """One camera's tracks: rows (N, 6) = frame (1-based), track id, x, y, w, h px; `ground` (N, 2) m or None."""

    camera: str
    rows: np.ndarray
    fps: float
    ground: np.ndarray | None = None

    def window(self, first: int, last: int) -> "CameraTracks":
        """The rows of frames first..last (1-based, inclusive): tracks crossing the bounds are cut there."""
        keep = (self.rows[:, 0] >= first) & (self.rows[:, 0] <= last)
        return CameraTracks(self.camera, self.rows[keep], self.fps,
                            None if self.ground is None else self.ground[keep])

    def keys(self) -> list[TrackKey]:
        return [(self.camera, int(t)) for t in np.unique(self.rows[:, 1])]

    def positions(self, person_height_m: float) -> np.ndarray:
        """(N, 2) positions in metres: the ground points, else the bottom-centre in box heights x person height."""
        if self.ground is not None:
            return self.ground
        h = np.maximum(self.rows[:, 5], 1.0)
        foot = np.stack([self.rows[:, 2] + self.rows[:, 4] / 2, self.rows[:, 3] + self.rows[:, 5]], 1)
        return foot / np.median(h) * person_height_m


@dataclass
class MinedIdentities:
    """The result: `identity` maps (camera, track) -> pseudo-identity (only tracks that got one), with the evidence."""

    identity: dict[TrackKey, int] = field(default_factory=dict)
    must_links: list[tuple[TrackKey, TrackKey, str, float]] = field(default_factory=list)  # (a, b, kind, strength)
    cannot_links: set[frozenset] = field(default_factory=set)

    def members(self) -> dict[int, list[TrackKey]]:
        out: dict[int, list[TrackKey]] = defaultdict(list)
        for key, pid in sorted(self.identity.items()):
            out[pid].append(key)
        return dict(out)

    def summary(self) -> str:
        kinds = defaultdict(int)
        for *_, kind, _s in self.must_links:
            kinds[kind] += 1
        groups = self.members()
        multi = sum(len({c for c, _ in m}) > 1 for m in groups.values())
        return (f"{len(groups)} identities ({multi} seen by 2+ cameras) from {len(self.identity)} tracks; "
                f"must-links: {kinds.get('together', 0)} same place+moment, {kinds.get('continuation', 0)} "
                f"continuations; {len(self.cannot_links)} cannot-links")


def read_camera_tracks(path: str | Path, camera: str, fps: float, homography: np.ndarray | None = None,
                       units_per_m: float = 1.0, last_frame: int | None = None,
                       first_frame: int = 1) -> CameraTracks:
    """A MOT file (`frame,id,x,y,w,h,score,...`) -> `CameraTracks` with ground points in metres when a homography is
    given. Rows with score 0 are left out: the fused mode's predicted boxes (a person this view's detector missed,
    projected from the other views, often hidden behind someone else) are no observation to mine or crop."""
    from core.geometry import to_ground

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no tracks of camera {camera} (run the pipeline first, or pass --run DIR "
                                "of a finished run)")
    text = path.read_text().strip()
    table = np.loadtxt(path, delimiter=",", ndmin=2) if text else np.zeros((0, 6))
    rows = table[:, :6]
    keep = rows[:, 0] >= first_frame
    if table.shape[1] > 6:
        keep &= table[:, 6] != 0
    if last_frame is not None:
        keep &= rows[:, 0] <= last_frame
    rows = rows[keep]
    ground = None
    if homography is not None and len(rows):
        xyxy = np.concatenate([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]], 1)
        ground = to_ground(homography, xyxy) / units_per_m
    return CameraTracks(camera, rows, fps, ground)


def cut_into_stretches(cam: CameraTracks, cfg) -> CameraTracks:
    """The camera's tracks cut into stretches that each hold one person (`cfg`: an `AdaptMiningConfig`, metres and
    seconds). A track is cut
    - where its person met another of the camera's tracks (feet within `ambiguity_m`): a tracker can swap people
      only where two meet; the boxes of those moments are left out (they are also the crops where one person hides
      the other);
    - where its feet jump farther than a walker gets (`continuity_m` + `max_speed_mps` x the time since its last
      box): the tracker took up someone else, e.g. a lost track matched to another person's box.
    The first stretch keeps the track's id, later ones get new ids above every id of the camera."""
    if len(cam.rows) == 0:
        return cam
    rows = cam.rows
    pos = cam.positions(cfg.person_height_m)
    frames = rows[:, 0].astype(np.int64)
    close = _near_another(frames, pos, cfg.ambiguity_m)
    new_ids = rows[:, 1].copy()
    next_id = int(rows[:, 1].max()) + 1
    for tid in np.unique(rows[:, 1]):
        m = np.flatnonzero(rows[:, 1] == tid)
        m = m[np.argsort(frames[m], kind="stable")]
        current, last, cut = tid, None, False
        for i in m:
            if close[i]:
                cut = True
                continue
            if last is not None:
                reach = cfg.continuity_m + cfg.max_speed_mps * (frames[i] - frames[last]) / cam.fps
                cut |= float(np.linalg.norm(pos[i] - pos[last])) > reach
            if cut and last is not None:
                current, next_id = float(next_id), next_id + 1
            cut, last = False, i
            new_ids[i] = current
    keep = ~close
    out = rows[keep].copy()
    out[:, 1] = new_ids[keep]
    return CameraTracks(cam.camera, out, cam.fps, None if cam.ground is None else cam.ground[keep])


def _by_frame(cam: CameraTracks, pos: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """frame -> (track ids (k,), positions (k, 2) m)."""
    out: dict[int, tuple[list, list]] = defaultdict(lambda: ([], []))
    for row, p in zip(cam.rows, pos):
        ids, ps = out[int(row[0])]
        ids.append(int(row[1]))
        ps.append(p)
    return {f: (np.asarray(i), np.asarray(p)) for f, (i, p) in out.items()}


class _Groups:
    """Union-find over track keys that refuses merges across a cannot-link."""

    def __init__(self, keys: list[TrackKey], cannot: set[frozenset]) -> None:
        self.parent = {k: k for k in keys}
        self.members = {k: {k} for k in keys}
        self.cannot: dict[TrackKey, set[TrackKey]] = defaultdict(set)
        for pair in cannot:
            a, b = tuple(pair)
            self.cannot[a].add(b)
            self.cannot[b].add(a)

    def find(self, k: TrackKey) -> TrackKey:
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def try_union(self, a: TrackKey, b: TrackKey) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        ma, mb = self.members[ra], self.members[rb]
        if any(self.cannot[x] & mb for x in ma):
            return False
        if len(ma) < len(mb):
            ra, rb, ma, mb = rb, ra, mb, ma
        self.parent[rb] = ra
        ma |= mb
        del self.members[rb]
        return True


def mine_identities(cameras: list[CameraTracks], overlapping: set[frozenset], cfg) -> MinedIdentities:
    """Mine pseudo-identities. `overlapping`: camera pairs (frozensets) whose views overlap and are synchronised
    (the same frame number is the same moment); `cfg`: an `AdaptMiningConfig` (pipeline/config.py)."""
    result = MinedIdentities()
    tracks: dict[TrackKey, dict] = {}
    frames_of: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    pos_of: dict[str, np.ndarray] = {}  # camera -> (N, 2) m, one per row
    for cam in cameras:
        pos = cam.positions(cfg.person_height_m)
        pos_of[cam.camera] = pos
        frames_of[cam.camera] = _by_frame(cam, pos)
        for tid in np.unique(cam.rows[:, 1]):
            m = cam.rows[:, 1] == tid
            fr = cam.rows[m, 0].astype(int)
            order = np.argsort(fr)
            if (fr.max() - fr.min() + 1) / cam.fps < cfg.min_track_s:
                continue
            tracks[(cam.camera, int(tid))] = {"frames": fr[order], "pos": pos[m][order], "fps": cam.fps}
    by_cam = {cam.camera: cam for cam in cameras}

    # cannot-links within a camera: alive at the same moment
    for cam in cameras:
        for ids, _ in frames_of[cam.camera].values():
            ids = [int(i) for i in ids if (cam.camera, int(i)) in tracks]
            for i in range(len(ids)):
                for j in range(i + 1, len(ids)):
                    result.cannot_links.add(frozenset(((cam.camera, ids[i]), (cam.camera, ids[j]))))

    # cross-view evidence, moment by moment
    agree: dict[frozenset, int] = defaultdict(int)
    together: dict[frozenset, list[float]] = defaultdict(list)
    nearest: dict[frozenset, int] = defaultdict(int)
    for pair in overlapping:
        ca, cb = sorted(pair)
        if ca not in by_cam or cb not in by_cam or by_cam[ca].ground is None or by_cam[cb].ground is None:
            continue
        fa, fb = frames_of[ca], frames_of[cb]
        for f in set(fa) & set(fb):
            ia, pa = fa[f]
            ib, pb = fb[f]
            d = np.linalg.norm(pa[:, None, :] - pb[None, :, :], axis=2)  # (ka, kb) m
            for x in range(len(ia)):
                for y in range(len(ib)):
                    key = frozenset(((ca, int(ia[x])), (cb, int(ib[y]))))
                    together[key].append(float(d[x, y]))
            for x in range(len(ia)):
                y = int(np.argmin(d[x]))
                if int(np.argmin(d[:, y])) != x:
                    continue
                key = frozenset(((ca, int(ia[x])), (cb, int(ib[y]))))
                nearest[key] += 1
                best = d[x, y]
                others = np.concatenate([np.delete(d[x], y), np.delete(d[:, y], x)])
                # the other people of both views, and each view's own other people near this point
                near_a = np.linalg.norm(np.delete(pa, x, 0) - pa[x], axis=1) if len(pa) > 1 else np.zeros(0)
                near_b = np.linalg.norm(np.delete(pb, y, 0) - pb[y], axis=1) if len(pb) > 1 else np.zeros(0)
                clear = np.concatenate([others, near_a, near_b])
                if best <= cfg.link_m and (not len(clear) or clear.min() >= best + cfg.ambiguity_m):
                    agree[key] += 1
    for key, dists in together.items():
        a, b = tuple(key)
        if a not in tracks or b not in tracks:
            continue
        fps = min(tracks[a]["fps"], tracks[b]["fps"])
        med = float(np.median(dists))
        if len(dists) / fps >= cfg.min_together_s and med >= cfg.apart_m:
            result.cannot_links.add(key)
        if (agree[key] / fps >= cfg.min_together_s and med <= cfg.link_m
                and nearest[key] >= cfg.min_agree_frac * len(dists)):
            result.must_links.append((*sorted(key), "together", agree[key] / fps))

    # continuations within a camera
    if cfg.continuity_gap_s > 0:
        for cam in cameras:
            keys = [k for k in tracks if k[0] == cam.camera]
            ends = {k: (tracks[k]["frames"][-1], np.median(tracks[k]["pos"][-5:], 0)) for k in keys}
            starts = {k: (tracks[k]["frames"][0], np.median(tracks[k]["pos"][:5], 0)) for k in keys}
            cand: dict[TrackKey, list[TrackKey]] = defaultdict(list)
            back: dict[TrackKey, list[TrackKey]] = defaultdict(list)
            for a in keys:
                fa, pa = ends[a]
                for b in keys:
                    fb, pb = starts[b]
                    gap = (fb - fa) / cam.fps
                    if b == a or not 0 < gap <= cfg.continuity_gap_s:
                        continue
                    if np.linalg.norm(pb - pa) <= cfg.continuity_m + cfg.max_speed_mps * gap:
                        cand[a].append(b)
                        back[b].append(a)
            crowded = _crowded_tracks(cam, pos_of[cam.camera], cfg.ambiguity_m)
            for a, bs in cand.items():
                if len(bs) != 1 or len(back[bs[0]]) != 1 or a in crowded or bs[0] in crowded:
                    continue
                b = bs[0]
                if _someone_near(frames_of[cam.camera], a, b, ends[a], starts[b], cam.fps, cfg):
                    continue
                gap = (starts[b][0] - ends[a][0]) / cam.fps
                result.must_links.append((a, b, "continuation", 1.0 / (1.0 + gap)))

    if cfg.exclusive_partners:
        result.must_links = _exclusive_partners(result.must_links, list(tracks))

    # grow identities: simultaneous evidence first (strongest first), then continuations
    order = sorted(result.must_links, key=lambda m: (m[2] != "together", -m[3]))
    groups = _Groups(list(tracks), result.cannot_links)
    kept = []
    for a, b, kind, strength in order:
        if groups.try_union(a, b):
            kept.append((a, b, kind, strength))
    result.must_links = kept
    roots = sorted({groups.find(k) for k in tracks})
    numbering = {r: i + 1 for i, r in enumerate(roots)}
    for k in tracks:
        result.identity[k] = numbering[groups.find(k)]
    if cfg.min_cameras > 1:
        cams_of = defaultdict(set)
        for k, pid in result.identity.items():
            cams_of[pid].add(k[0])
        result.identity = {k: p for k, p in result.identity.items() if len(cams_of[p]) >= cfg.min_cameras}
        result.must_links = [m for m in result.must_links if m[0] in result.identity and m[1] in result.identity]
    return result


def _exclusive_partners(links: list, keys: list[TrackKey]) -> list:
    """Drop the same-place-same-moment links of a track with another camera when it has them with two or more of that
    camera's tracks that no continuation joins: one of the two cameras' trackers swapped people there (a track that
    slid from one person to another while the other had no box in its view shows no meeting and no jump), and the
    links cannot tell which. Continuations and the other cameras' links stay."""
    chains = _Groups(keys, set())
    for a, b, kind, _s in links:
        if kind == "continuation":
            chains.try_union(a, b)
    partners: dict[tuple[TrackKey, str], set[TrackKey]] = defaultdict(set)
    for a, b, kind, _s in links:
        if kind == "together":
            partners[(a, b[0])].add(b)
            partners[(b, a[0])].add(a)

    def exclusive(key: TrackKey, camera: str) -> bool:
        return len({chains.find(p) for p in partners[(key, camera)]}) <= 1

    return [m for m in links if m[2] != "together" or (exclusive(m[0], m[1][0]) and exclusive(m[1], m[0][0]))]


def _near_another(frames: np.ndarray, pos: np.ndarray, near_m: float) -> np.ndarray:
    """Mask (N,) of the rows whose position (N, 2) m lies within near_m of another row of the same frame (N,)."""
    close = np.zeros(len(frames), bool)
    order = np.argsort(frames, kind="stable")
    for idx in np.split(order, np.flatnonzero(np.diff(frames[order])) + 1):
        if len(idx) < 2:
            continue
        d = np.linalg.norm(pos[idx, None] - pos[None, idx], axis=2)
        np.fill_diagonal(d, np.inf)
        close[idx[d.min(axis=1) < near_m]] = True
    return close


def _crowded_tracks(cam: CameraTracks, pos: np.ndarray, near_m: float) -> set[TrackKey]:
    """This camera's tracks that came within near_m of another of its tracks at some moment (pos (N, 2) m, one per
    row): where a per-camera tracker can swap people inside one track, so a continuation through it could join two
    people."""
    near = _near_another(cam.rows[:, 0].astype(np.int64), pos, near_m)
    return {(cam.camera, int(t)) for t in np.unique(cam.rows[near, 1])}


def _someone_near(frames: dict, a: TrackKey, b: TrackKey, end, start, fps: float, cfg) -> bool:
    """Another track of the camera near the gap (within reach of a's end or b's start, from `continuity_gap_s` before
    a ended to as long after b started) makes the continuation ambiguous: two people met there."""
    reach = cfg.continuity_m + cfg.max_speed_mps * max(0, (start[0] - end[0])) / fps
    margin = int(round(cfg.continuity_gap_s * fps))
    for f in range(int(end[0]) - margin, int(start[0]) + margin + 1):
        ids, ps = frames.get(f, (np.zeros(0), np.zeros((0, 2))))
        for i, q in zip(ids, ps):
            if int(i) not in (a[1], b[1]) and min(np.linalg.norm(q - end[1]), np.linalg.norm(q - start[1])) <= reach:
                return True
    return False
