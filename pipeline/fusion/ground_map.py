"""`ground_map`: the fused identities on the ground plane, as a table and as a picture (`output.ground`).

With `association.mode: fused` every person the fusion identifies has a position in metres at each step
(`Step.ground`, written by the fused association). This stage writes them where people look for them:

- `DIR/ground/tracks.csv`: one row per person per step:
  `step,time_s,group,global_id,x_m,y_m,vx_mps,vy_mps,cameras,sigma_m` (metres and m/s in the group's homography
  frame; `cameras`: the views that saw the person then, space-separated; `global_id`: the id the person's boxes
  carry in `mot_online/` at that step; `sigma_m`: how surely the position is known, the standard deviation in metres
  along its least certain direction: far from every camera it reaches metres). Flushed at every map refresh, so a
  live run's table can be read while it grows.
- `DIR/ground/map.png` (`map_<group>.png` for each group when there are several): a bird's-eye view of the ground
  with a 1 m grid, each camera's view of the floor (the part of the ground its frame shows, outlined and tinted in
  the camera's colour), and every identity's path in the colour the annotated video gives it, ending in a dot and
  its `G<id>` label; stretches placed less surely than `RELIABLE_SIGMA_M` (far from every camera) thin and pale, the
  extent spanning the placed positions only. Written when the run ends and every `every_s` seconds of the run's
  clock before that.

Memory stays bounded in a 24/7 run: a path keeps a point every 0.1 m or 1 s of a person's movement, at most
`max_points` points in all (the oldest are dropped first).
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from core.geometry import load_homography
from pipeline.fusion.ground import CameraGeometry
from pipeline.stages.base import CameraInfo, RunEnd, RunInfo, Stage, Step, register_stage
from pipeline.video_output import _colour

log = logging.getLogger("mcsa.fusion")

CSV_HEADER = ("step", "time_s", "group", "global_id", "x_m", "y_m", "vx_mps", "vy_mps", "cameras", "sigma_m")
KEEP_EVERY_M = 0.1  # a path keeps a new point once the person moved this far (m) ...
KEEP_EVERY_S = 1.0  # ... or this long after the last kept point (s)
_CAMERA_COLOURS = [(200, 120, 40), (40, 150, 230), (60, 170, 60), (170, 60, 170), (40, 40, 200), (150, 150, 40)]


def _people(n: int) -> str:
    return f"{n} person" if n == 1 else f"{n} people"


def group_names(config) -> dict[str, str]:
    """Fused camera -> the name of its group, as the fused association names them ('+'-joined cameras, or 'fused'
    when `fusion.groups` is not set)."""
    a = config.association
    if a.fusion.groups is None:
        return {cam: "fused" for cam in a.fused_cameras}
    return {cam: "+".join(g) for g in a.fusion.groups for cam in g if cam in a.fused_cameras}


def floor_geometry(camera_id: str, h: np.ndarray, units_per_m: float, size: tuple[int, int] | None
                   ) -> CameraGeometry:
    """The camera's `CameraGeometry` for drawing its view of the floor: with a frame size (width, height) px it
    learns which side of the horizon the floor is on from the frame's bottom centre."""
    geom = CameraGeometry(camera_id, h, units_per_m, None if size is None else (int(size[0]), int(size[1])))
    if size is not None:
        geom.image_to_ground(np.array([[size[0] / 2.0, size[1] - 1.0]]))
    return geom


def fused_homographies(config) -> tuple[dict[str, str], dict[str, np.ndarray]] | None:
    """(fused camera -> group name, fused camera -> homography (3, 3)) when the run writes ground outputs
    (`association.mode: fused` and `output.ground`), else None."""
    a = config.association
    if not (a.enabled and a.mode == "fused" and config.output.ground):
        return None
    groups = group_names(config)
    return groups, {cam: load_homography(a.homographies[cam]) for cam in groups}


def map_extent(points: np.ndarray, aspect_min: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Ground extent (lo (2,), hi (2,)) m to draw points (P, 2) m: their 0.5-99.5 percentile box (a stray far point,
    a track's last guess, does not shrink the rest) plus 1 m, its short side grown to at least `aspect_min` of the
    long one."""
    lo = np.percentile(points, 0.5, axis=0) - 1.0
    hi = np.percentile(points, 99.5, axis=0) + 1.0
    span = np.maximum(hi - lo, 1.0)
    short = int(np.argmin(span))
    grow = max(0.0, aspect_min * span.max() - span[short])
    lo[short] -= grow / 2
    hi[short] += grow / 2
    return lo, lo + np.maximum(hi - lo, 1.0)


class _Canvas:
    """Metres -> pixels for a ground extent drawn in an image of (w, h) px with `pad` px left for the axis labels."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray, w: int, h: int, pad: int) -> None:
        self.lo, self.hi, self.w, self.h, self.pad = np.asarray(lo, float), np.asarray(hi, float), w, h, pad
        self.scale = min((w - 2 * pad) / (self.hi[0] - self.lo[0]), (h - 2 * pad) / (self.hi[1] - self.lo[1]))

    def to_px(self, g: np.ndarray) -> np.ndarray:
        return np.round((np.asarray(g, np.float64).reshape(-1, 2) - self.lo) * self.scale + self.pad).astype(np.int32)

    def background(self, cameras: list[CameraGeometry], font: float = 0.4) -> np.ndarray:
        """White image with each camera's view of the floor (ground cells whose image point lies inside its frame,
        on its side of the horizon: tinted and outlined in the camera's colour, labelled) and a 1 m grid, labelled
        every 5 m."""
        w, h, pad = self.w, self.h, self.pad
        img = np.full((h, w, 3), 255, np.uint8)
        cell = 2
        gx, gy = np.meshgrid(np.arange(0, w, cell) + cell / 2, np.arange(0, h, cell) + cell / 2)
        ground = (np.stack([gx.ravel(), gy.ravel()], axis=1) - pad) / self.scale + self.lo
        for k, geom in enumerate(cameras):
            if geom.frame_size is None:
                continue
            colour = _CAMERA_COLOURS[k % len(_CAMERA_COLOURS)]
            px, ok = geom.ground_to_image(ground)
            fw, fh = geom.frame_size
            inside = ok & (px[:, 0] >= 0) & (px[:, 0] < fw) & (px[:, 1] >= 0) & (px[:, 1] < fh)
            mask = cv2.resize(inside.reshape(gx.shape).astype(np.uint8) * 255, (w, h),
                              interpolation=cv2.INTER_NEAREST)
            if not mask.any():
                continue
            tint = img.copy()
            tint[mask > 0] = colour
            img = cv2.addWeighted(tint, 0.10, img, 0.90, 0)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(img, contours, -1, colour, 1, cv2.LINE_AA)
            ys, xs = np.nonzero(mask)
            cv2.putText(img, geom.camera_id, (int(xs.mean()), int(ys.mean())), cv2.FONT_HERSHEY_SIMPLEX,
                        1.5 * font, colour, 2, cv2.LINE_AA)
        for axis in (0, 1):
            for m in range(int(np.ceil(self.lo[axis])), int(np.floor(self.hi[axis])) + 1):
                at = int(round((m - self.lo[axis]) * self.scale + pad))
                strong = m % 5 == 0
                grey = (170, 170, 170) if strong else (225, 225, 225)
                if axis == 0:
                    cv2.line(img, (at, pad), (at, h - pad), grey, 1)
                    if strong:
                        cv2.putText(img, f"{m} m", (at - 12, h - pad + 18), cv2.FONT_HERSHEY_SIMPLEX, font,
                                    (90, 90, 90), 1)
                else:
                    cv2.line(img, (pad, at), (w - pad, at), grey, 1)
                    if strong:
                        cv2.putText(img, f"{m} m", (4, at + 4), cv2.FONT_HERSHEY_SIMPLEX, font, (90, 90, 90), 1)
        return img

    def draw_paths(self, img: np.ndarray, paths: dict[int, np.ndarray], font: float = 0.45) -> None:
        """Each identity's path (P, 2) m, oldest first, in its video colour, ending in a dot labelled G<id>; a path
        (P, 3) also says which points are approximate (third column true: placed less surely than
        `RELIABLE_SIGMA_M`): the stretches into and between those are drawn thin and pale."""
        for gid, p in paths.items():
            if not len(p):
                continue
            colour = tuple(int(c) for c in _colour(gid))
            pale = tuple(int(c + (255 - c) * 0.6) for c in colour)
            q = self.to_px(p[:, :2])
            approx = p[:, 2] > 0 if p.shape[1] > 2 else np.zeros(len(p), bool)
            start = 0
            for k in range(1, len(q) + 1):  # runs of one kind, each joined to the point before it
                if k == len(q) or approx[k] != approx[start]:
                    run = q[max(start - 1, 0):k]
                    if len(run) > 1:
                        cv2.polylines(img, [run.reshape(-1, 1, 2)], False, pale if approx[start] else colour,
                                      1 if approx[start] else 2, cv2.LINE_AA)
                    start = k
            x, y = q[-1].tolist()
            cv2.circle(img, (x, y), 5, colour, -1, cv2.LINE_AA)
            cv2.putText(img, f"G{gid}", (x + 6, y - 6), cv2.FONT_HERSHEY_SIMPLEX, font, colour, 1, cv2.LINE_AA)


def draw_ground_map(paths: dict[int, np.ndarray], cameras: list[CameraGeometry], size_px: int = 900,
                    title: str = "") -> np.ndarray | None:
    """A bird's-eye view (BGR uint8 image) of identity paths {global id: points (P, 2) m, oldest first; (P, 3) with
    an approximate flag, `_Canvas.draw_paths`} and of each camera's view of the floor (cameras with a known
    `frame_size`); the longer side of the extent of the paths' placed points (plus 1 m) spans about `size_px` px.
    None when there is no point to draw."""
    pts = [p for p in paths.values() if len(p)]
    if not pts:
        return None
    every = np.concatenate([np.c_[p[:, :2], p[:, 2] if p.shape[1] > 2 else np.zeros(len(p))] for p in pts])
    placed = every[every[:, 2] == 0, :2]
    lo, hi = map_extent(placed if len(placed) else every[:, :2])
    pad = 48
    scale = (size_px - 2 * pad) / float((hi - lo).max())  # px per metre
    w, h = (np.ceil((hi - lo) * scale).astype(int) + 2 * pad).tolist()
    canvas = _Canvas(lo, hi, w, h, pad)
    img = canvas.background(cameras)
    canvas.draw_paths(img, paths)
    cv2.putText(img, title or "ground plane", (pad, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (40, 40, 40), 1, cv2.LINE_AA)
    return img


class GroundView:
    """The live bird's-eye tile of the annotated mosaic video (`output.video: mosaic` with the fused mode): where
    everyone stands now, with the last `trail_s` seconds of their path, over the cameras' views of the floor.

    The extent follows the people seen so far (percentiles of a bounded sample of their positions, refreshed every
    `refit_s` seconds and only redrawn when it moves by 0.5 m or more), so the tile settles once the site's walkways
    have been walked. cameras: the group's `CameraGeometry` (with frame sizes, for the floor views)."""

    SAMPLE = 4000  # positions kept for the extent (a reservoir sample of everything seen)

    def __init__(self, name: str, cameras: list[CameraGeometry], trail_s: float = 3.0, refit_s: float = 2.0) -> None:
        self.name = name
        self.cameras = cameras
        self.trail_s, self.refit_s = float(trail_s), float(refit_s)
        self.trails: dict[int, deque] = {}  # id -> (t, x, y), the last trail_s seconds
        self.now = 0.0
        self._sample: list[tuple[float, float]] = []
        self._seen = 0
        self._rng = np.random.default_rng(0)
        self._extent: tuple[np.ndarray, np.ndarray] | None = None
        self._extent_t = -np.inf
        self._background: tuple[tuple, np.ndarray, _Canvas] | None = None

    def set_frame_size(self, camera_id: str, size: tuple[int, int] | None) -> None:
        """A camera of the group opened with frame size (width, height) px: its view of the floor can be drawn."""
        if size is None:
            return
        for k, geom in enumerate(self.cameras):
            if geom.camera_id == camera_id:
                self.cameras[k] = floor_geometry(camera_id, geom.h, geom.units_per_m, size)
                self._background = None

    def add(self, points: list) -> None:
        """This step's `GroundPoint`s of this view's group."""
        for g in points:
            self.now = max(self.now, g.time_s)
            self.trails.setdefault(g.global_id, deque()).append((g.time_s, g.x_m, g.y_m, float(not g.reliable())))
            if not g.reliable():  # the tile's extent follows the placed positions
                continue
            self._seen += 1
            if len(self._sample) < self.SAMPLE:
                self._sample.append((g.x_m, g.y_m))
            else:
                k = int(self._rng.integers(self._seen))
                if k < self.SAMPLE:
                    self._sample[k] = (g.x_m, g.y_m)
        for gid in list(self.trails):
            trail = self.trails[gid]
            while trail and trail[0][0] < self.now - self.trail_s:
                trail.popleft()
            if not trail:
                del self.trails[gid]
        if self._sample and self.now - self._extent_t >= self.refit_s:
            self._extent_t = self.now
            lo, hi = map_extent(np.asarray(self._sample))
            if self._extent is None or max(np.abs(lo - self._extent[0]).max(),
                                           np.abs(hi - self._extent[1]).max()) >= 0.5:
                self._extent = (lo, hi)

    def render(self, w: int, h: int) -> np.ndarray:
        """The tile, BGR (h, w, 3): grey with a note until someone has been placed."""
        if self._extent is None:
            img = np.full((h, w, 3), 235, np.uint8)
            cv2.putText(img, f"{self.name}: nobody placed yet", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (60, 60, 60),
                        1, cv2.LINE_AA)
            return img
        key = (w, h, *self._extent[0].tolist(), *self._extent[1].tolist())
        if self._background is None or self._background[0] != key:
            canvas = _Canvas(*self._extent, w, h, 24)
            self._background = (key, canvas.background(self.cameras, font=0.35), canvas)
        _, background, canvas = self._background
        img = background.copy()
        live = {gid: np.array([(x, y, a) for _, x, y, a in trail]) for gid, trail in self.trails.items()
                if trail[-1][0] >= self.now - 0.5}  # people placed within the last 0.5 s
        canvas.draw_paths(img, live, font=0.4)
        cv2.putText(img, f"{self.name}  t={self.now:.2f}s  {_people(len(live))}", (8, 16), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (40, 40, 40), 1, cv2.LINE_AA)
        return img


def ground_views(config) -> dict[str, GroundView]:
    """Group name -> its `GroundView`, for every fused group of the config (empty unless `association.mode: fused`
    and `output.ground`); the cameras' frame sizes come later (`GroundView.set_frame_size`)."""
    fused = fused_homographies(config)
    if fused is None:
        return {}
    groups, homs = fused
    units = config.association.fusion.ground_units_per_m
    return {name: GroundView("ground plane" if name == "fused" else name,
                             [floor_geometry(cam, homs[cam], units, None) for cam in sorted(groups)
                              if groups[cam] == name])
            for name in sorted(set(groups.values()))}


@register_stage("ground_map")
class GroundMapStage(Stage):
    """Writes the fused identities' ground positions (`Step.ground`) to `ground/tracks.csv` and draws
    `ground/map*.png` (module docstring). homographies: camera -> (3, 3) image -> ground; units_per_m: ground units
    per metre; groups: fused camera -> group name; every_s: map refresh period on the run's clock (s)."""

    def __init__(self, homographies: dict[str, np.ndarray], units_per_m: float, groups: dict[str, str],
                 every_s: float = 60.0, max_points: int = 200_000, size_px: int = 900) -> None:
        self.homographies = homographies
        self.units_per_m = float(units_per_m)
        self.groups = groups
        self.every_s = float(every_s)
        self.size_px = int(size_px)
        self.geoms: dict[str, CameraGeometry] = {}
        self.points: deque = deque(maxlen=int(max_points))  # (group, global id, x m, y m, approximate), oldest first
        self._last_kept: dict[tuple[str, int], tuple[float, float, float]] = {}  # (group, id) -> x, y, t
        self.directory: Path | None = None
        self._file = None
        self._csv = None
        self._last_map_t: float | None = None
        self.rows = 0
        self.people: set[tuple[str, int]] = set()
        self.maps: list[Path] = []

    @classmethod
    def from_config(cls, config, params: dict) -> "GroundMapStage | None":
        fused = fused_homographies(config)
        if fused is None:
            return None
        groups, homs = fused
        return cls(homs, config.association.fusion.ground_units_per_m, groups, **params)

    def open(self, run: RunInfo) -> None:
        self.directory = Path(run.output_dir) / "ground"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._file = open(self.directory / "tracks.csv", "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._csv.writerow(CSV_HEADER)

    def open_camera(self, camera: CameraInfo) -> None:
        if camera.camera_id not in self.groups or camera.error is not None:
            return
        self.geoms[camera.camera_id] = floor_geometry(camera.camera_id, self.homographies[camera.camera_id],
                                                      self.units_per_m, camera.size)

    def on_step(self, step: Step) -> None:
        for g in step.ground:
            self._csv.writerow((step.index, f"{g.time_s:.3f}", g.group, g.global_id, f"{g.x_m:.3f}", f"{g.y_m:.3f}",
                                f"{g.vx_mps:.3f}", f"{g.vy_mps:.3f}", " ".join(g.cameras),
                                "" if g.sigma_m is None else f"{g.sigma_m:.3f}"))
            self.rows += 1
            key = (g.group, g.global_id)
            self.people.add(key)
            last = self._last_kept.get(key)
            if last is None or math.hypot(g.x_m - last[0], g.y_m - last[1]) >= KEEP_EVERY_M \
                    or g.time_s - last[2] >= KEEP_EVERY_S:
                self.points.append((g.group, g.global_id, g.x_m, g.y_m, float(not g.reliable())))
                self._last_kept[key] = (g.x_m, g.y_m, g.time_s)
        if self._last_map_t is None:
            self._last_map_t = step.time_s
        elif step.time_s - self._last_map_t >= self.every_s:
            self._last_map_t = step.time_s
            self._file.flush()
            self._write_maps()
        if len(self._last_kept) > 10_000:  # people gone for a minute need no "last kept point" any more
            self._last_kept = {k: v for k, v in self._last_kept.items() if step.time_s - v[2] < 60.0}

    def close(self, end: RunEnd) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        self._write_maps()

    def _write_maps(self) -> None:
        names = sorted(set(self.groups.values()))
        for name in names:
            paths: dict[int, list] = {}
            for group, gid, x, y, approx in self.points:
                if group == name:
                    paths.setdefault(gid, []).append((x, y, approx))
            cams = [g for c, g in self.geoms.items() if self.groups[c] == name]
            n = len({k for k in self.people if k[0] == name})
            img = draw_ground_map({k: np.asarray(v) for k, v in paths.items()}, cams, self.size_px,
                                  f"{name if len(names) > 1 else 'ground plane'}: {_people(n)} (1 m grid)")
            if img is None:
                continue
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
            path = self.directory / ("map.png" if len(names) == 1 else f"map_{safe}.png")
            if not cv2.imwrite(str(path), img):
                raise OSError(f"cannot write {path}")
            if path not in self.maps:
                self.maps.append(path)

    def counters(self) -> dict:
        return {"positions": self.rows, "people": len(self.people)}

    def summary_line(self) -> str | None:
        if self.directory is None:
            return None
        maps = ", ".join(str(p.relative_to(self.directory.parent)) for p in self.maps) or "no map (nobody identified)"
        return f"Ground plane: {self.rows} positions of {_people(len(self.people))} -> ground/tracks.csv, {maps}"
