"""Multi-object tracking metrics on MOTChallenge text files, computed by TrackEval (the MOTChallenge reference code).

TrackEval's HOTA, CLEAR and Identity metric classes are fed directly (its dataset classes expect the MOTChallenge
folder layout and seqinfo.ini files, which our outputs do not have). Verified against the published expected values of
the TUD-Campus fixture shipped with motmetrics (tests/test_eval_mot.py). trackeval 1.3.0 (the maintained fork) runs on
numpy 2; for older releases that still use the removed `np.float`/`np.int` aliases, `_import_trackeval` restores them
before import.

File formats (comma- or whitespace-separated, one box per line, `frame,id,x,y,w,h,...`, frames 1-based):
- predictions: `frame,id,x,y,w,h[,conf,...]`; extra columns are ignored (MOTChallenge does not use the score).
- MOTChallenge / PETS09-S2L1 ground truth `frame,id,x,y,w,h,conf,wx,wy,wz` (10 columns): rows with conf == 0
  ("zero-marked") are dropped; the world coordinates are ignored.
- EPFL Terrace (GNN-CCA) ground truth `frame,id,x,y,w,h,1,1,visibility` (9 columns): visibility 0 means occluded.
  Default: every gt box counts, occluded ones too, as in the GNN-CCA evaluation. With `min_visibility` > 0, gt boxes
  whose 9th column is below it become "don't care": they are removed, and predicted boxes matched to them (Hungarian,
  IoU >= 0.5, per frame) are removed as well, so neither a hit nor a miss is counted there (TrackEval's distractor
  rule). Only 9-column files have a visibility column; the 8th (class) column is not interpreted: ground truth is
  assumed to hold people only.
- Frame rates: both files must use the same frame numbering (our PETS09 video frames map 1:1 to the gt frames, and the
  pipeline writes 1-based frame numbers). `frame_step` > 1 evaluates only gt frames 1, 1+k, ... (for predictions made on
  a sub-sampled stream whose frame numbers were written in the original numbering).

Metric values are fractions (0..1); counts are integers. HOTA, DetA, AssA, LocA are averaged over TrackEval's 19 IoU
thresholds (0.05..0.95); CLEAR and Identity use IoU >= 0.5. MOTP is TrackEval's (mean IoU of matches, higher is better).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment

SUMMARY_KEYS = ("HOTA", "DetA", "AssA", "LocA", "IDF1", "IDP", "IDR", "MOTA", "MOTP", "IDSW", "FP", "FN", "TP",
                "MT", "PT", "ML", "Frag")


def _import_trackeval():
    """Import trackeval; restore numpy aliases that old releases use (np.float, np.int, np.bool) if missing."""
    for alias, target in (("float", float), ("int", int), ("bool", bool)):
        if alias not in np.__dict__:
            try:
                getattr(np, alias)
            except AttributeError:
                setattr(np, alias, target)
    import trackeval  # noqa: F401
    from trackeval.metrics import CLEAR, HOTA, Identity

    return HOTA, CLEAR, Identity


def load_mot_file(path: str | Path) -> np.ndarray:
    """Read a MOTChallenge-style text file into a float64 array (N, C), C >= 6; empty files give (0, 10)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MOT file not found: {path}")
    rows = []
    width = None
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"{path}:{lineno}: not a number in {line!r}") from None
        if len(values) < 6:
            raise ValueError(f"{path}:{lineno}: expected at least 6 columns (frame,id,x,y,w,h), got {len(values)}")
        width = len(values) if width is None else min(width, len(values))
        rows.append(values)
    if not rows:
        return np.zeros((0, 10))
    return np.array([r[:width] for r in rows], dtype=np.float64)


def _xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    out = b.astype(np.float64).copy()
    out[:, 2:4] += out[:, 0:2]
    return out


def _ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes (N, 4) x (M, 4), the formula TrackEval uses for boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > np.finfo(float).eps, inter / np.maximum(union, np.finfo(float).eps), 0.0)


def _prepare(gt: np.ndarray, pred: np.ndarray, min_visibility: float, frame_step: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (gt kept, gt distractors, pred) with columns frame, id, x1, y1, x2, y2."""
    gt = gt[gt[:, 6] != 0] if gt.shape[1] >= 7 else gt  # zero-marked rows are not evaluated
    if frame_step > 1:
        gt = gt[(gt[:, 0] - 1) % frame_step == 0]
        pred = pred[(pred[:, 0] - 1) % frame_step == 0]
    distract = np.zeros(len(gt), bool)
    if min_visibility > 0 and gt.shape[1] == 9:
        distract = gt[:, 8] < min_visibility

    def cols(a: np.ndarray) -> np.ndarray:
        out = np.zeros((len(a), 6))
        out[:, 0:2] = a[:, 0:2]
        out[:, 2:6] = _xywh_to_xyxy(a[:, 2:6])
        return out

    return cols(gt[~distract]), cols(gt[distract]), cols(pred)


def _remove_matched_to_distractors(distract: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    if len(distract) == 0 or len(pred) == 0:
        return pred
    drop = np.zeros(len(pred), bool)
    for f in np.unique(distract[:, 0]):
        pi = np.flatnonzero(pred[:, 0] == f)
        if len(pi) == 0:
            continue
        di = distract[distract[:, 0] == f]
        # match distractors against all predictions of that frame; TrackEval matches against all gt, close enough
        iou = _ious(di[:, 2:6], pred[pi, 2:6])
        rows, cols = linear_sum_assignment(-iou)
        ok = iou[rows, cols] >= threshold - np.finfo(float).eps
        drop[pi[cols[ok]]] = True
    return pred[~drop]


def _sequence_data(gt: np.ndarray, pred: np.ndarray, frames: np.ndarray) -> dict[str, Any]:
    """TrackEval's per-sequence `data` dict; `frames` lists the frame numbers of the timesteps, in order."""
    for name, arr in (("ground truth", gt), ("predictions", pred)):
        if len(arr):
            key = arr[:, 0].astype(np.int64) * (1 << 32) + arr[:, 1].astype(np.int64)
            uniq, counts = np.unique(key, return_counts=True)
            if (counts > 1).any():
                k = int(uniq[np.argmax(counts > 1)])
                raise ValueError(f"{name}: id {k & 0xFFFFFFFF} appears twice in frame {k >> 32}")
    gt_uids, gt_idx = np.unique(gt[:, 1], return_inverse=True)
    pr_uids, pr_idx = np.unique(pred[:, 1], return_inverse=True)
    index_of = {int(f): t for t, f in enumerate(frames)}
    gt_t = np.array([index_of.get(int(f), -1) for f in gt[:, 0]], dtype=np.int64)
    pr_t = np.array([index_of.get(int(f), -1) for f in pred[:, 0]], dtype=np.int64)
    n = len(frames)
    gt_order = np.argsort(gt_t, kind="stable")
    pr_order = np.argsort(pr_t, kind="stable")
    gt_bounds = np.searchsorted(gt_t[gt_order], np.arange(n + 1))
    pr_bounds = np.searchsorted(pr_t[pr_order], np.arange(n + 1))
    data: dict[str, Any] = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    for t in range(n):
        gi = gt_order[gt_bounds[t]:gt_bounds[t + 1]]
        pi = pr_order[pr_bounds[t]:pr_bounds[t + 1]]
        data["gt_ids"].append(gt_idx[gi].astype(int))
        data["tracker_ids"].append(pr_idx[pi].astype(int))
        data["similarity_scores"].append(_ious(gt[gi, 2:6], pred[pi, 2:6]))
    data.update(
        num_timesteps=n, num_gt_ids=len(gt_uids), num_tracker_ids=len(pr_uids),
        num_gt_dets=int((gt_t >= 0).sum()), num_tracker_dets=int((pr_t >= 0).sum()),
    )
    return data


def _score(data: dict[str, Any]) -> dict[str, Any]:
    HOTA, CLEAR, Identity = _import_trackeval()
    with contextlib.redirect_stdout(io.StringIO()):  # TrackEval prints its config
        metrics = [HOTA(), CLEAR({"THRESHOLD": 0.5, "PRINT_CONFIG": False}),
                   Identity({"THRESHOLD": 0.5, "PRINT_CONFIG": False})]
    res: dict[str, Any] = {}
    for metric in metrics:
        res.update(metric.eval_sequence(data))
    out = {
        "HOTA": float(np.mean(res["HOTA"])), "DetA": float(np.mean(res["DetA"])), "AssA": float(np.mean(res["AssA"])),
        "LocA": float(np.mean(res["LocA"])),
        "IDF1": float(res["IDF1"]), "IDP": float(res["IDP"]), "IDR": float(res["IDR"]),
        "MOTA": float(res["MOTA"]), "MOTP": float(res["MOTP"]),
        "IDSW": int(res["IDSW"]), "FP": int(res["CLR_FP"]), "FN": int(res["CLR_FN"]), "TP": int(res["CLR_TP"]),
        "MT": int(res["MT"]), "PT": int(res["PT"]), "ML": int(res["ML"]), "Frag": int(res["Frag"]),
        "num_frames": int(data["num_timesteps"]), "num_gt_ids": int(data["num_gt_ids"]),
        "num_pred_ids": int(data["num_tracker_ids"]), "num_gt_dets": int(data["num_gt_dets"]),
        "num_pred_dets": int(data["num_tracker_dets"]),
    }
    return out


def _load_pair(gt_path, pred_path, min_visibility: float, frame_step: int) -> tuple[np.ndarray, np.ndarray]:
    gt_raw, pred_raw = load_mot_file(gt_path), load_mot_file(pred_path)
    gt, distract, pred = _prepare(gt_raw, pred_raw, min_visibility, frame_step)
    return gt, _remove_matched_to_distractors(distract, pred)


def _frames(gt: np.ndarray, pred: np.ndarray, num_frames: int | None, frame_step: int) -> np.ndarray:
    last = int(max(gt[:, 0].max() if len(gt) else 0, pred[:, 0].max() if len(pred) else 0))
    if num_frames is not None:
        last = max(last, int(num_frames))
    first = int(min(1, gt[:, 0].min() if len(gt) else 1, pred[:, 0].min() if len(pred) else 1))
    return np.arange(first, last + 1, max(1, frame_step))


def evaluate_mot(
    gt_path: str | Path,
    pred_path: str | Path,
    min_visibility: float = 0.0,
    frame_step: int = 1,
    num_frames: int | None = None,
) -> dict[str, Any]:
    """HOTA, DetA, AssA, LocA, IDF1, IDP, IDR, MOTA, MOTP, IDSW, FP, FN (+ TP, MT, PT, ML, Frag and sizes) of one
    camera's predictions against its ground truth (see the module docstring for the formats and options)."""
    if frame_step < 1:
        raise ValueError("frame_step must be >= 1")
    gt, pred = _load_pair(gt_path, pred_path, min_visibility, frame_step)
    return _score(_sequence_data(gt, pred, _frames(gt, pred, num_frames, frame_step)))


def evaluate_mtmc(
    gt: Mapping[str, str | Path],
    pred: Mapping[str, str | Path],
    min_visibility: float = 0.0,
) -> dict[str, Any]:
    """Multi-target multi-camera scores (DukeMTMC / AI City protocol): the cameras' sequences are concatenated into one
    (frame offsets), with ids global across cameras in both gt and predictions, so an identity matched to different
    people in two cameras is penalised. Returns the overall metrics plus `per_camera` (each camera alone).

    `gt` and `pred` map camera id -> MOT file; a camera missing from `pred` counts as all misses.
    """
    unknown = sorted(set(pred) - set(gt))
    if unknown:
        raise ValueError(f"predictions for cameras without ground truth: {unknown}")
    gts, preds, per_camera, offset = [], [], {}, 0
    for cam in sorted(gt):
        g_raw = load_mot_file(gt[cam])
        p_raw = load_mot_file(pred[cam]) if cam in pred else np.zeros((0, 10))
        g, distract, p = _prepare(g_raw, p_raw, min_visibility, 1)
        p = _remove_matched_to_distractors(distract, p)
        frames = _frames(g, p, None, 1)
        per_camera[cam] = _score(_sequence_data(g, p, frames))
        shift = offset - frames[0] + 1
        g = g.copy()
        p = p.copy()
        g[:, 0] += shift
        p[:, 0] += shift
        gts.append(g)
        preds.append(p)
        offset += len(frames)
    g_all = np.concatenate(gts) if gts else np.zeros((0, 6))
    p_all = np.concatenate(preds) if preds else np.zeros((0, 6))
    out = _score(_sequence_data(g_all, p_all, np.arange(1, offset + 1)))
    out["per_camera"] = per_camera
    return out


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A readable table, one row per named result; fractions printed as percentages."""
    cols = ["HOTA", "DetA", "AssA", "IDF1", "IDP", "IDR", "MOTA", "MOTP", "IDSW", "FP", "FN"]
    pct = {"HOTA", "DetA", "AssA", "IDF1", "IDP", "IDR", "MOTA", "MOTP"}
    name_w = max([4] + [len(n) for n in results])
    lines = [f"{'name':<{name_w}} " + " ".join(f"{c:>7}" for c in cols)]
    for name, r in results.items():
        cells = [f"{100 * r[c]:7.2f}" if c in pct else f"{int(r[c]):7d}" for c in cols]
        lines.append(f"{name:<{name_w}} " + " ".join(cells))
    return "\n".join(lines)
