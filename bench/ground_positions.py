"""How close the fused mode's ground positions (`OUT/ground/tracks.csv`) are to where the annotated people stand.

Run by hand, on a finished run of a fused config:

    python3 run_pipeline.py run --config configs/epfl_terrace.yaml --output out
    python3 bench/ground_positions.py --run out                       # EPFL Terrace ground truth (the defaults)
    python3 bench/ground_positions.py --run out --config SITE.yaml --gt c0=gt0.txt c1=gt1.txt --frame-size 1920x1080

Truth: no annotation gives floor positions here, so a person's position at a frame is the mean of the foot points
(box bottom-centre through the camera's homography) of their ground-truth boxes in the views that show their feet
(box bottom at least 4 px above the frame's lower edge), kept only where at least `--min-views` views do (default 2:
a truth taken from one view would favour that view's own foot point). It carries the homographies' own disagreement
(0.5 m median between two views on Terrace), so read the numbers as agreement with the annotators' boxes, not as
absolute accuracy.

Each ground-truth box is matched to the run's `mot_online/` boxes of its frame (IoU >= 0.5, one to one); the matched
box's id at that frame gives its ground row. Two ways to place that person, side by side:
- fused: the ground row of that id at that step (all views, the learnt view alignment, the Kalman filter);
- single view (baseline): the matched box's own foot point through its camera's homography, what a per-camera tool
  with a homography would report (no view alignment, no cut-box handling).
Per camera: matched boxes, median / 90th percentile error (m), and the fused / single-view ratio of the medians.
Then how the fused positions' own `sigma_m` (ground/tracks.csv; the Kalman filter's position standard deviation
along its least certain direction) compares with those errors: its median, and the share of errors within 1 and 2
sigma (a 2-D Gaussian with that sigma on both axes would give at least 39 % and 86 %; the truth's own error adds to
the measured ones), and how many rows of the whole run are approximate (sigma above core.geometry.RELIABLE_SIGMA_M).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.geometry import load_homography  # noqa: E402
from core.paths import REPO_ROOT, shared_dir  # noqa: E402
from pipeline.config import load_config  # noqa: E402


def _mot(path: Path) -> np.ndarray:
    text = path.read_text().strip() if path.is_file() else ""
    return np.loadtxt(path, delimiter=",", ndmin=2) if text else np.zeros((0, 10))


def _foot_m(h_m: np.ndarray, xywh: np.ndarray) -> np.ndarray:
    """Foot points (N, 2) m of boxes (N, 4) xywh px through an image px -> metres homography (3, 3)."""
    px = np.c_[xywh[:, 0] + xywh[:, 2] / 2, xywh[:, 1] + xywh[:, 3], np.ones(len(xywh))]
    g = px @ h_m.T
    return g[:, :2] / g[:, 2:3]


def _iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ax2, ay2, bx2, by2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2) - np.maximum(a[:, None, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2) - np.maximum(a[:, None, 1], b[:, 1]), 0, None)
    inter = iw * ih
    return inter / np.maximum(a[:, None, 2] * a[:, None, 3] + b[:, 2] * b[:, 3] - inter, 1e-9)


def main(argv: list[str] | None = None) -> int:
    shared = shared_dir()
    terrace = shared / "data" / "epfl_terrace1"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="output folder of a finished fused run")
    ap.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "epfl_terrace.yaml",
                    help="the run's config (homographies and ground units)")
    ap.add_argument("--gt", nargs="+", default=[f"c{k}={terrace / f'gt_c{k}' / 'gt.txt'}" for k in (0, 1)],
                    metavar="CAM=MOT", help="ground truth per camera (MOTChallenge; ids shared across cameras)")
    ap.add_argument("--frame-size", default="360x288", help="frame width x height, px (default: Terrace's)")
    ap.add_argument("--min-views", type=int, default=2, help="views that must show a person's feet for a truth")
    args = ap.parse_args(argv)
    ground_csv = args.run / "ground" / "tracks.csv"
    if not ground_csv.is_file():
        sys.exit(f"{ground_csv} not found: run a fused config first (association.mode: fused, output.ground: true)")
    if not terrace.is_dir() and args.gt == ap.get_default("gt"):
        sys.exit(f"shared data not found at {shared} (set MCSA_SHARED), or give --gt")
    cfg = load_config(args.config)
    a = cfg.association
    fw, fh = (float(v) for v in args.frame_size.lower().split("x"))
    scale = np.diag([1 / a.fusion.ground_units_per_m, 1 / a.fusion.ground_units_per_m, 1.0])
    gts = dict(item.split("=", 1) for item in args.gt)
    h_m = {cam: scale @ load_homography(a.homographies[cam]) for cam in gts}

    placed: dict[tuple[int, int], np.ndarray] = {}  # (step, global id) -> fused position (2,) m
    sigma: dict[tuple[int, int], float] = {}  # (step, global id) -> sigma m (runs since ground rows carry it)
    with open(ground_csv, newline="") as f:
        for r in csv.DictReader(f):
            placed[(int(r["step"]), int(r["global_id"]))] = np.array([float(r["x_m"]), float(r["y_m"])])
            if r.get("sigma_m"):
                sigma[(int(r["step"]), int(r["global_id"]))] = float(r["sigma_m"])
    gt = {cam: _mot(Path(p)) for cam, p in gts.items()}
    truth: dict[tuple[int, int], list[np.ndarray]] = {}  # (frame, gt id) -> foot points of views showing the feet
    for cam, rows in gt.items():
        whole = rows[:, 3] + rows[:, 5] <= fh - 4
        feet = _foot_m(h_m[cam], rows[:, 2:6])
        for (frame, pid), p, ok in zip(rows[:, :2].astype(int).tolist(), feet, whole):
            if ok:
                truth.setdefault((frame, pid), []).append(p)
    truth = {k: v for k, v in truth.items() if len(v) >= args.min_views}
    print(f"ground positions of {args.run} against the ground-truth boxes' foot points ({len(truth)} person-frames "
          f"with feet in >= {args.min_views} views)")
    print("| camera | matched boxes | fused: median / p90 error (m) | single view: median / p90 (m) | fused / single |")
    print("|---|---|---|---|---|")
    every = {"fused": [], "single": []}
    sigma_err: list[tuple[float, float]] = []  # (fused error m, its sigma m)
    for cam, rows in gt.items():
        pred = _mot(args.run / "mot_online" / f"{cam}.txt")
        errs = {"fused": [], "single": []}
        for frame in np.unique(rows[:, 0]).astype(int).tolist():
            g = rows[rows[:, 0] == frame]
            p = pred[pred[:, 0] == frame]
            if not len(p):
                continue
            iou = _iou_xywh(g[:, 2:6], p[:, 2:6])
            for i, j in zip(*linear_sum_assignment(-iou)):
                key = (frame, int(g[i, 1]))
                fused = placed.get((frame - 1, int(p[j, 1])))
                if iou[i, j] < 0.5 or key not in truth or fused is None:
                    continue
                t = np.mean(truth[key], axis=0)
                errs["fused"].append(float(np.linalg.norm(fused - t)))
                if (frame - 1, int(p[j, 1])) in sigma:
                    sigma_err.append((errs["fused"][-1], sigma[(frame - 1, int(p[j, 1]))]))
                errs["single"].append(float(np.linalg.norm(_foot_m(h_m[cam], p[j:j + 1, 2:6])[0] - t)))
        for k in errs:
            every[k] += errs[k]
        _row(cam, errs)
    _row("all", every)
    if sigma_err:
        from core.geometry import RELIABLE_SIGMA_M

        e, sg = np.asarray(sigma_err).T
        sig_all = np.asarray(list(sigma.values()))
        print(f"\nsigma_m of the matched fused positions: median {np.median(sg):.3f} m (90th percentile "
              f"{np.percentile(sg, 90):.3f}); errors within 1 sigma {np.mean(e <= sg):.0%}, within 2 sigma "
              f"{np.mean(e <= 2 * sg):.0%}; rows of the run approximate (sigma > {RELIABLE_SIGMA_M:g} m): "
              f"{int((sig_all > RELIABLE_SIGMA_M).sum())} of {len(sig_all)} "
              f"({len({k[1] for k, v in sigma.items() if v > RELIABLE_SIGMA_M})} ids)")
    return 0


def _row(name: str, errs: dict) -> None:
    if not errs["fused"]:
        print(f"| {name} | 0 | - | - | - |")
        return
    f, s = np.asarray(errs["fused"]), np.asarray(errs["single"])
    print(f"| {name} | {len(f)} | {np.median(f):.3f} / {np.percentile(f, 90):.3f} | {np.median(s):.3f} / "
          f"{np.percentile(s, 90):.3f} | {np.median(f) / max(np.median(s), 1e-9):.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
