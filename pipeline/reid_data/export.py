"""Cut person crops out of a video with MOTChallenge-format boxes into the mcsa tracklet folder format
(see pipeline/reid_data/datasets.py): <root>/<split>/<pid>/<camera>/<tracklet>/<frame:06d>.jpg + tracklets.csv.

Boxes: a MOT text file `frame,id,x,y,w,h,conf,...` (1-based frames; ground truth or the pipeline's own MOT output).
Rows with conf == 0 are skipped (MOT16+ "ignore"); `min_visibility` applies to column 9 when the file has it
(EPFL gt: visibility 0/1; MOT15 gt has world coordinates there, so leave it unset for those files).
Optional per-frame action labels: a CSV with frame/id columns and a label column (CAVIAR `*_labels_derived.csv`:
`frame0` and `id` are 0-based there, so 1 is added to both to meet the 1-based MOT file; column `movement`).
A new tracklet starts at a gap of more than `max_gap` sampled frames, every `max_len` frames, and, with
`split_on_action`, where the action changes (so that "a tracklet takes the action of its first frame" holds).
Held-out data: `test_ids` sends whole people to split `test`; `test_every` = N sends every N-th tracklet of each
person (the N-th, 2N-th, ... in time) to `test` (held-out tracklets of people also seen in training).
Re-running an export into the same folder replaces the earlier crops of the same camera and ids (no duplicates).
Each row's `quality` is what the pipeline's Re-ID cropper would make of that box (`pipeline.reid.cropper.crop_quality`:
box height, not cut by the frame border, at most `max_overlap` of it covered by another box of the same frame, 0 =
the pipeline would not crop it); "another box" means every other row of that frame in the boxes file, whatever the
id filters, plus the rows of `context` (e.g. the run's other tracks when only some tracks are exported).
`skip_unusable` leaves quality-0 crops out (a gap in the tracklet), so a model trains on the crops it will be shown.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.reid_data.datasets import CSV_FIELDS, tracklet_dir

log = logging.getLogger(__name__)


@dataclass
class ExportOptions:
    camera: str = "cam0"
    split: str = "train"
    test_ids: tuple[int, ...] = ()  # these (original) ids go to split `test`
    test_every: int = 0  # every N-th tracklet of each id goes to split `test` (0 = off)
    id_offset: int = 0
    min_height: int = 0
    frame_step: int = 1
    max_len: int = 0  # 0 = unlimited
    max_gap: int = 1  # in sampled frames
    min_len: int = 1
    min_visibility: float | None = None
    split_on_action: bool = False
    margin: float = 0.0  # enlarge boxes by this fraction of their size on each side
    ids: tuple[int, ...] = ()  # keep only these ids (empty = all)
    max_frames: int | None = None
    first_frame: int = 1  # boxes of earlier frames (1-based) are skipped (a time split: train early, test late)
    # the pipeline's crop gate (ReIDConfig's min_box_height / border_margin / max_overlap), for the `quality` column
    gate_min_height: float = 40.0  # px
    gate_border_margin: float = 2.0  # px
    gate_max_overlap: float = 0.6  # fraction of the box covered by another box
    skip_unusable: bool = False  # leave out crops of quality 0 (the pipeline would not crop them)
    context: str | Path | None = None  # more boxes (a MOT file) that can cover the exported ones


def frame_boxes(arr: np.ndarray, context: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """Every box of each frame (1-based) -> xyxy (N, 4): the rows of `arr` and of `context` (MOT arrays; rows
    with conf 0, the MOT16+ "ignore" rows, included: the person is there all the same)."""
    rows = arr if context is None else np.concatenate([arr[:, :6], context[:, :6]])
    out: dict[int, list] = defaultdict(list)
    for r in rows:
        out[int(r[0])].append((r[2], r[3], r[2] + r[4], r[3] + r[5]))
    return {f: np.asarray(b, np.float64) for f, b in out.items()}


def box_quality(box_xywh: np.ndarray, others: np.ndarray, iw: int, ih: int, opts: ExportOptions) -> float:
    """The pipeline cropper's quality of one box (x, y, w, h) among the frame's boxes `others` (xyxy (N, 4), the box
    itself may be among them: identical boxes are not counted as covering it)."""
    from pipeline.reid.cropper import frame_crop_quality

    x, y, w, h = (float(v) for v in box_xywh)
    xyxy = np.array([x, y, x + w, y + h])
    others = others[~np.all(np.abs(others - xyxy) < 1e-6, axis=1)]
    return float(frame_crop_quality(np.vstack([xyxy[None], others]), iw, ih, opts.gate_min_height,
                                    opts.gate_border_margin, opts.gate_max_overlap)[0])


def read_mot(path: str | Path) -> np.ndarray:
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append([float(v) for v in line.replace(" ", "").split(",")])
    if not rows:
        raise ValueError(f"{path}: no boxes (expected MOT lines `frame,id,x,y,w,h,conf,...`)")
    width = max(len(r) for r in rows)
    arr = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        arr[i, : len(r)] = r
    return arr


def read_action_labels(path: str | Path, column: str = "movement") -> dict[tuple[int, int], str]:
    """(frame 1-based, id 1-based) -> label. Accepts `frame0`/`id` (0-based, CAVIAR conversion) or `frame`/`id`
    (1-based, as in MOT files)."""
    out: dict[tuple[int, int], str] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if column not in fields:
            raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(fields)})")
        zero_based = "frame0" in fields
        fcol = "frame0" if zero_based else "frame"
        for row in reader:
            fr, pid = int(float(row[fcol])), int(float(row["id"]))
            if zero_based:
                fr, pid = fr + 1, pid + 1
            out[(fr, pid)] = row[column].strip()
    return out


def export_tracklets(video: str | Path, boxes: str | Path, output: str | Path, opts: ExportOptions,
                     labels: dict[tuple[int, int], str] | None = None, progress: bool = False) -> dict[str, int]:
    """Write crops + append rows to <output>/tracklets.csv. Returns counts."""
    import cv2

    output = Path(output)
    arr = read_mot(boxes)
    everyone = frame_boxes(arr, read_mot(opts.context) if opts.context else None)
    by_frame: dict[int, list[np.ndarray]] = defaultdict(list)
    for row in arr:
        fr, pid = int(row[0]), int(row[1])
        if opts.ids and pid not in opts.ids:
            continue
        if (fr - 1) % opts.frame_step or fr < opts.first_frame:
            continue
        if arr.shape[1] > 6 and not np.isnan(row[6]) and row[6] == 0:
            continue
        if opts.min_visibility is not None and arr.shape[1] > 8 and row[8] < opts.min_visibility:
            continue
        if row[5] < opts.min_height:
            continue
        by_frame[fr].append(row)
    if not by_frame:
        raise ValueError(f"{boxes}: no boxes left after filtering (min height {opts.min_height}, step {opts.frame_step})")

    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise ValueError(f"{video}: cannot open video")
    last_frame = max(by_frame)
    if opts.max_frames:
        last_frame = min(last_frame, opts.max_frames)
    state: dict[int, dict] = {}  # pid -> {tid, last, len, action, split}
    next_tid: dict[int, int] = defaultdict(int)
    made: dict[int, int] = defaultdict(int)  # tracklets started per pid in this export (for test_every)
    existing = output / "tracklets.csv"
    if existing.is_file():
        _upgrade_header(existing)  # a folder written before a column was added gets it (empty) first
        pids = {int(row[1]) + opts.id_offset for rows in by_frame.values() for row in rows}
        _remove_rows(output, opts.camera, pids)  # a re-run replaces its earlier crops instead of duplicating them
        with open(existing, newline="") as f:  # other ids of this camera keep their tracklet numbers
            for row in csv.DictReader(f):
                if row["camera"] == opts.camera:
                    key = int(row["pid"])
                    next_tid[key] = max(next_tid[key], int(row["tracklet"]) + 1)
    output.mkdir(parents=True, exist_ok=True)
    new_file = not existing.is_file()
    fcsv = open(existing, "a", newline="")
    writer = csv.DictWriter(fcsv, fieldnames=CSV_FIELDS)
    if new_file:
        writer.writeheader()
    counts = {"crops": 0, "tracklets": 0, "unusable": 0}
    frame_no = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=last_frame, desc=f"export {opts.camera}", unit="frame", leave=False)
    while frame_no < last_frame:
        ok, img = cap.read()
        if not ok:
            break
        frame_no += 1
        if bar is not None:
            bar.update(1)
        rows = by_frame.get(frame_no)
        if not rows:
            continue
        ih, iw = img.shape[:2]
        for row in rows:
            src_pid = int(row[1])
            x, y, w, h = row[2:6]
            x0, y0 = x - opts.margin * w, y - opts.margin * h
            x1, y1 = x + w * (1 + opts.margin), y + h * (1 + opts.margin)
            x0, y0, x1, y1 = max(0, int(round(x0))), max(0, int(round(y0))), min(iw, int(round(x1))), min(ih, int(round(y1)))
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            quality = box_quality(row[2:6], everyone.get(frame_no, np.zeros((0, 4))), iw, ih, opts)
            if opts.skip_unusable and quality <= 0:
                counts["unusable"] += 1
                continue
            action = (labels or {}).get((frame_no, src_pid), "")
            pid = src_pid + opts.id_offset
            st = state.get(pid)
            new = (
                st is None
                or frame_no - st["last"] > opts.max_gap * opts.frame_step
                or (opts.max_len and st["len"] >= opts.max_len)
                or (opts.split_on_action and action != st["action"])
            )
            if new:
                held_out = src_pid in opts.test_ids or (opts.test_every > 0 and made[pid] % opts.test_every == opts.test_every - 1)
                st = state[pid] = {"tid": next_tid[pid], "last": frame_no, "len": 0, "action": action,
                                   "split": "test" if held_out else opts.split}
                next_tid[pid] += 1
                made[pid] += 1
                counts["tracklets"] += 1
            st["last"], st["len"] = frame_no, st["len"] + 1
            split = st["split"]
            folder = tracklet_dir(output, split, pid, opts.camera, st["tid"])
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{frame_no:06d}.jpg"), img[y0:y1, x0:x1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            writer.writerow({"split": split, "pid": pid, "camera": opts.camera, "tracklet": st["tid"],
                             "frame": frame_no, "action": action, "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0,
                             "quality": f"{quality:.3f}"})
            counts["crops"] += 1
    if bar is not None:
        bar.close()
    cap.release()
    fcsv.close()
    if opts.min_len > 1:
        counts["dropped_short"] = _drop_short(output, opts.camera, opts.min_len)
    return counts


def _upgrade_header(path: Path) -> None:
    """Rewrite tracklets.csv with today's columns (CSV_FIELDS) when it was written with fewer, so appended rows line
    up; the missing columns stay empty for the old rows."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames == CSV_FIELDS:
            return
        rows = list(reader)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _remove_rows(output: Path, camera: str, pids: set[int]) -> int:
    """Delete the rows and crop folders of `camera` for these pids (from an earlier export); returns rows removed."""
    import shutil

    path = output / "tracklets.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    drop = [r for r in rows if r["camera"] == camera and int(r["pid"]) in pids]
    if not drop:
        return 0
    for split, pid in {(r["split"], r["pid"]) for r in drop}:
        shutil.rmtree(output / split / pid / camera, ignore_errors=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(r for r in rows if not (r["camera"] == camera and int(r["pid"]) in pids))
    log.info("%s: replaced %d earlier rows of camera %s", path, len(drop), camera)
    return len(drop)


def _drop_short(output: Path, camera: str, min_len: int) -> int:
    """Remove this camera's tracklets shorter than min_len frames (rows and crops)."""
    import shutil

    path = output / "tracklets.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    sizes: dict[tuple, int] = defaultdict(int)
    for r in rows:
        sizes[(r["split"], r["pid"], r["camera"], r["tracklet"])] += 1
    short = {k for k, n in sizes.items() if k[2] == camera and n < min_len}
    for split, pid, cam, tid in short:
        shutil.rmtree(output / split / pid / cam / tid, ignore_errors=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(r for r in rows if (r["split"], r["pid"], r["camera"], r["tracklet"]) not in short)
    return len(short)
