"""Dataset loaders. Each returns a `VideoReIDDataset` of `Tracklet`s (frame paths, pid, camera, 1-based action).

MARS (official layout)
    <root>/bbox_train/<pid4>/<pid4>C<cam>T<tracklet4>F<frame3>.jpg, <root>/bbox_test/...,
    <root>/info/{train_name.txt, test_name.txt, tracks_train_info.mat, tracks_test_info.mat, query_IDX.mat}
    tracks_*_info.mat: one row per tracklet, columns start, end (1-based rows of *_name.txt, inclusive), pid, camid.
    query_IDX.mat: 1-based rows of tracks_test_info that are queries; the other test tracklets are the gallery.
    Junk tracklets (pid -1) are dropped from the gallery (`gallery_junk="drop"`: the MARS protocol ignores them, as
    does the official Re-ID-AR code; `"keep"` ranks them as distractors, ~0.5-1 point lower); distractors (pid 0)
    stay in the gallery; queries are pid > 0 only. Optional action label files list `image_name action`
    per line, parallel to *_name.txt; actions are 1-based, 0 = unlabelled; a tracklet takes its first image's action;
    unlabelled test tracklets are dropped when action files are given.

LPW
    <root>/<scene>/<view>/<pid>/*.jpg ; train = the training scenes, test = the test scene with the query view as
    query and its other views as gallery. Identities are keyed by (scene, pid).

mcsa tracklet folders (written by `run_pipeline.py export_tracklets`)
    <root>/<split>/<pid>/<camera>/<tracklet>/<frame:06d>.jpg  (split: train | test | query | gallery)
    <root>/tracklets.csv, one row per frame: split,pid,camera,tracklet,frame,action,x,y,w,h,quality
    `action` is an action name or empty (unlabelled); a tracklet takes the action of its first frame. `pid` is an
    integer identity (same pid = same person across cameras); `tracklet` an integer unique per (pid, camera).
    `quality` (optional) is the pipeline cropper's quality of the crop (0 = the pipeline's Re-ID would not crop it:
    too small, cut by the frame border, or covered by another person's box; pipeline/reid_data/export.py).
    Without tracklets.csv, the folders alone are read (no actions).
    Evaluation of split `test`: query = tracklets of the query camera (all cameras when unset), gallery = tracklets
    of the gallery camera (all when unset); the MARS rule drops gallery entries with the query's pid AND camera.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


class DatasetError(ValueError):
    """A dataset folder is not in the expected layout; the message names the path and what was expected."""


@dataclass
class Tracklet:
    paths: list[str]
    pid: int
    camid: int
    action: int = 0  # 1-based, 0 = unlabelled
    camera: str = ""
    key: str = ""
    quality: list[float] | None = None  # per crop, as `paths` (None: unknown, e.g. an older export)

    def __len__(self) -> int:
        return len(self.paths)

    def usable(self) -> "Tracklet":
        """This tracklet with only the crops the pipeline's Re-ID would crop (quality > 0); unchanged when the
        quality is unknown or no crop passes (so a query or gallery set keeps every tracklet)."""
        if not self.quality:
            return self
        keep = [i for i, q in enumerate(self.quality) if q > 0]
        if not keep or len(keep) == len(self.paths):
            return self
        return Tracklet([self.paths[i] for i in keep], self.pid, self.camid, self.action, self.camera, self.key,
                        [self.quality[i] for i in keep])


@dataclass
class VideoReIDDataset:
    train: list[Tracklet] = field(default_factory=list)
    query: list[Tracklet] = field(default_factory=list)
    gallery: list[Tracklet] = field(default_factory=list)
    action_names: list[str] = field(default_factory=list)
    val_query: list[Tracklet] = field(default_factory=list)  # validation (see `hold_out_validation`)
    val_gallery: list[Tracklet] = field(default_factory=list)

    def validation(self) -> "VideoReIDDataset":
        """The validation split as a dataset whose query/gallery are `val_query`/`val_gallery` (for evaluation)."""
        return VideoReIDDataset([], self.val_query, self.val_gallery, self.action_names)

    def relabel_train(self) -> int:
        """Map train pids to 0..N-1 (in place); returns N."""
        pids = sorted({t.pid for t in self.train})
        mapping = {p: i for i, p in enumerate(pids)}
        for t in self.train:
            t.pid = mapping[t.pid]
        return len(pids)

    def summary(self) -> str:
        def s(ts: list[Tracklet]) -> str:
            return f"{len({t.pid for t in ts})} ids / {len(ts)} tracklets / {sum(map(len, ts))} frames"

        out = f"train {s(self.train)}; query {s(self.query)}; gallery {s(self.gallery)}"
        if self.val_query or self.val_gallery:
            out += f"; validation query {s(self.val_query)}; validation gallery {s(self.val_gallery)}"
        return out


def _first_frame(t: Tracklet) -> int:
    stem = Path(t.paths[0]).stem
    return int(stem) if stem.isdigit() else 0


def hold_out_validation(ds: VideoReIDDataset, val_ids: list[int], gap: int = 1) -> VideoReIDDataset:
    """Take the training tracklets of `val_ids` out of `ds.train` into a validation split (in place; returns ds).

    Per held-out (pid, camera), the tracklets in time order (first frame) are split into two pseudo-cameras:
    `<camera>:early` = the first half, `<camera>:late` = the rest after `gap` dropped tracklets (so that the halves
    do not touch in time). People with fewer than 2 + gap tracklets in a camera add nothing. Query and gallery are
    both all of these tracklets: the MARS rule (same pid and camera excluded) leaves each query only the other half
    of its own person as matches, against all the other people's tracklets of both halves as distractors (both
    directions, early -> late and late -> early, count)."""
    wanted = set(val_ids)
    if not wanted:
        return ds
    present = {t.pid for t in ds.train}
    missing = sorted(wanted - present)
    if missing:
        raise DatasetError(f"data.val_ids: {missing} not among the training pids")
    groups: dict[tuple[int, str], list[Tracklet]] = defaultdict(list)
    keep = []
    for t in ds.train:
        (groups[(t.pid, t.camera)] if t.pid in wanted else keep).append(t)
    base = max((t.camid for t in ds.train + ds.query + ds.gallery), default=-1) + 1
    cams: dict[str, int] = {}
    val = []
    for (pid, camera), ts in sorted(groups.items()):
        ts.sort(key=_first_frame)
        half = len(ts) // 2
        early, late = ts[:half], ts[half + gap:]
        if not early or not late:
            continue
        for part, name in ((early, f"{camera}:early"), (late, f"{camera}:late")):
            camid = cams.setdefault(name, base + len(cams))
            val.extend(Tracklet(t.paths, t.pid, camid, t.action, name, t.key) for t in part)
    if not val:
        raise DatasetError(f"data.val_ids {sorted(wanted)}: no person has {2 + gap} or more tracklets to split")
    ds.train, ds.val_query, ds.val_gallery = keep, val, list(val)
    return ds


# ----------------------------------------------------------------------------------------------------------------------
# MARS
# ----------------------------------------------------------------------------------------------------------------------


def _read_action_file(path: Path, names: list[str]) -> list[int]:
    actions = []
    with open(path) as f:
        for i, line in enumerate(f):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2 or parts[0] != names[len(actions)]:
                raise DatasetError(f"{path}:{i + 1}: expected `{names[len(actions)]} <action>` (parallel to the name list)")
            actions.append(int(parts[1]))
    if len(actions) != len(names):
        raise DatasetError(f"{path}: {len(actions)} lines but the name list has {len(names)}")
    return actions


def load_mars(root: str | Path, action_file_train: str | None = None, action_file_test: str | None = None,
              min_frames: int = 1, gallery_junk: str = "drop") -> VideoReIDDataset:
    from scipy.io import loadmat

    root = Path(root)
    info = root / "info"
    need = ["train_name.txt", "test_name.txt", "tracks_train_info.mat", "tracks_test_info.mat", "query_IDX.mat"]
    missing = [n for n in need if not (info / n).is_file()]
    if missing:
        raise DatasetError(f"{root}: not a MARS folder (missing info/{', info/'.join(missing)})")

    def names(split: str) -> list[str]:
        return [ln.strip() for ln in open(info / f"{split}_name.txt") if ln.strip()]

    def resolve(p: Path | str | None) -> Path | None:
        if not p:
            return None
        p = Path(p)
        return p if p.is_absolute() else root / p

    def tracks(split: str, action_file: Path | None, drop_unlabelled: bool) -> list[Tracklet]:
        img_names = names(split)
        acts = _read_action_file(action_file, img_names) if action_file else None
        mat = loadmat(str(info / f"tracks_{split}_info.mat"))
        arr = next(v for k, v in mat.items() if not k.startswith("__"))
        out = []
        for row_idx, row in enumerate(arr):
            start, end, pid, camid = (int(v) for v in row[:4])
            frames = img_names[start - 1:end]
            if len(frames) < min_frames:
                continue
            paths = [str(root / f"bbox_{split}" / n[:4] / n) for n in frames]
            action = acts[start - 1] if acts else 0
            out.append(Tracklet(paths, pid, camid - 1, action, f"C{camid}", f"{split}:{row_idx}"))
        if drop_unlabelled and acts is not None:
            out = [t for t in out if t.action > 0]
        return out

    train = [t for t in tracks("train", resolve(action_file_train), drop_unlabelled=False)]
    test = tracks("test", resolve(action_file_test), drop_unlabelled=False)
    q_mat = loadmat(str(info / "query_IDX.mat"))
    q_idx = {int(i) - 1 for i in next(v for k, v in q_mat.items() if not k.startswith("__")).ravel()}
    by_row = {int(t.key.split(":")[1]): t for t in test}
    query = [by_row[i] for i in sorted(q_idx) if i in by_row and by_row[i].pid > 0]
    gallery = [t for i, t in sorted(by_row.items()) if i not in q_idx]
    if gallery_junk == "drop":
        gallery = [t for t in gallery if t.pid != -1]
    elif gallery_junk != "keep":
        raise ValueError(f"gallery_junk must be 'drop' or 'keep', got {gallery_junk!r}")
    if action_file_test:  # unlabelled tracklets are dropped at test
        query = [t for t in query if t.action > 0]
        gallery = [t for t in gallery if t.action > 0]
    train = [t for t in train if t.pid > 0]
    return VideoReIDDataset(train, query, gallery)


# ----------------------------------------------------------------------------------------------------------------------
# LPW
# ----------------------------------------------------------------------------------------------------------------------


def _images(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def load_lpw(root: str | Path, train_scenes: list[str] = ("scen2", "scen3"), test_scene: str = "scen1",
             query_view: str = "view2", min_frames: int = 1) -> VideoReIDDataset:
    root = Path(root)
    if not (root / test_scene).is_dir():
        raise DatasetError(f"{root}: not an LPW folder (expected <root>/{test_scene}/<view>/<pid>/*.jpg)")
    ids: dict[tuple[str, str], int] = {}
    views: dict[str, int] = {}

    def scene_tracklets(scene: str) -> list[Tracklet]:
        out = []
        for view in sorted(p for p in (root / scene).iterdir() if p.is_dir()):
            cam = views.setdefault(f"{scene}/{view.name}", len(views))
            for pdir in sorted(p for p in view.iterdir() if p.is_dir()):
                paths = _images(pdir)
                if len(paths) < min_frames:
                    continue
                pid = ids.setdefault((scene, pdir.name), len(ids) + 1)
                out.append(Tracklet(paths, pid, cam, 0, view.name, f"{scene}/{view.name}/{pdir.name}"))
        return out

    train = [t for s in train_scenes if (root / s).is_dir() for t in scene_tracklets(s)]
    test = scene_tracklets(test_scene)
    query = [t for t in test if t.camera == query_view]
    gallery = [t for t in test if t.camera != query_view]
    return VideoReIDDataset(train, query, gallery)


# ----------------------------------------------------------------------------------------------------------------------
# mcsa tracklet folders
# ----------------------------------------------------------------------------------------------------------------------

CSV_FIELDS = ["split", "pid", "camera", "tracklet", "frame", "action", "x", "y", "w", "h", "quality"]


def tracklet_dir(root: Path, split: str, pid: int, camera: str, tracklet: int) -> Path:
    return root / split / str(pid) / camera / str(tracklet)


def read_tracklet_folder(root: str | Path, action_names: list[str] | None = None,
                         min_frames: int = 1) -> tuple[dict[str, list[Tracklet]], list[str]]:
    """All tracklets per split, and the action names used (config order, else order of first appearance)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such tracklet folder (write one with `run_pipeline.py export_tracklets`)")
    names = list(action_names or [])
    index = {n: i + 1 for i, n in enumerate(names)}
    groups: dict[tuple[str, int, str, int], list[tuple[int, str]]] = defaultdict(list)
    csv_path = root / "tracklets.csv"
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            for row in csv.DictReader(f):
                quality = row.get("quality")
                groups[(row["split"], int(row["pid"]), row["camera"], int(row["tracklet"]))].append(
                    (int(row["frame"]), row.get("action") or "", float(quality) if quality else None)
                )
        tracks: dict[str, list[Tracklet]] = defaultdict(list)
        for (split, pid, camera, tid), frames in sorted(groups.items()):
            frames.sort(key=lambda r: r[0])
            folder = tracklet_dir(root, split, pid, camera, tid)
            paths = [str(folder / f"{fr:06d}.jpg") for fr, _, _ in frames]
            quality = [q for _, _, q in frames]
            quality = quality if all(q is not None for q in quality) else None
            if len(paths) < min_frames:
                continue
            first = frames[0][1]
            if first and first not in index:
                if action_names:  # the config fixes the set: other names count as unlabelled
                    first = ""
                else:
                    names.append(first)
                    index[first] = len(names)
            tracks[split].append(Tracklet(paths, pid, 0, index.get(first, 0), camera, f"{split}/{pid}/{camera}/{tid}",
                                          quality))
    else:
        tracks = defaultdict(list)
        for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for pdir in sorted(p for p in split_dir.iterdir() if p.is_dir() and re.fullmatch(r"-?\d+", p.name)):
                for cdir in sorted(p for p in pdir.iterdir() if p.is_dir()):
                    for tdir in sorted(p for p in cdir.iterdir() if p.is_dir()):
                        paths = _images(tdir)
                        if len(paths) >= min_frames:
                            tracks[split_dir.name].append(
                                Tracklet(paths, int(pdir.name), 0, 0, cdir.name, f"{split_dir.name}/{pdir.name}/{cdir.name}/{tdir.name}")
                            )
    if not tracks:
        raise DatasetError(f"{root}: no tracklets found (expected tracklets.csv or <split>/<pid>/<camera>/<tracklet>/*.jpg)")
    cams = sorted({t.camera for ts in tracks.values() for t in ts})
    for ts in tracks.values():
        for t in ts:
            t.camid = cams.index(t.camera)
    return dict(tracks), names


def load_tracklet_folder(root: str | Path, action_names: list[str] | None = None, test_root: str | Path | None = None,
                         query_camera: str | None = None, gallery_camera: str | None = None,
                         min_frames: int = 1) -> VideoReIDDataset:
    tracks, names = read_tracklet_folder(root, action_names, min_frames)
    if test_root:
        test_tracks, names = read_tracklet_folder(test_root, names, min_frames)
    else:
        test_tracks = tracks
    query = test_tracks.get("query", [])
    gallery = test_tracks.get("gallery", [])
    test = test_tracks.get("test", [])
    if test and not (query or gallery):
        query = [t for t in test if query_camera is None or t.camera == query_camera]
        gallery = [t for t in test if gallery_camera is None or t.camera == gallery_camera]
        if query_camera and not query:
            raise DatasetError(f"{test_root or root}: no test tracklets from query camera {query_camera!r}")
        if gallery_camera and not gallery:
            raise DatasetError(f"{test_root or root}: no test tracklets from gallery camera {gallery_camera!r}")
    return VideoReIDDataset(tracks.get("train", []), query, gallery, names)


def load_dataset(data_cfg, action_names: list[str] | None = None) -> VideoReIDDataset:
    """Dispatch on `data_cfg.format` (a `DataSection` from models/reid/config.py)."""
    if data_cfg.format == "mars":
        ds = load_mars(data_cfg.root, data_cfg.action_file_train, data_cfg.action_file_test, data_cfg.min_frames,
                       data_cfg.gallery_junk)
        ds.action_names = list(action_names or [])
        return ds
    if data_cfg.format == "lpw":
        return load_lpw(data_cfg.root, data_cfg.lpw_train_scenes, data_cfg.lpw_test_scene, data_cfg.lpw_query_view,
                        data_cfg.min_frames)
    ds = load_tracklet_folder(data_cfg.root, action_names, data_cfg.test_root, data_cfg.query_camera,
                              data_cfg.gallery_camera, data_cfg.min_frames)
    return hold_out_validation(ds, data_cfg.val_ids, data_cfg.val_gap)
