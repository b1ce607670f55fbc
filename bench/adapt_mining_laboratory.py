"""Site-adaptation mining on a second scene: EPFL Laboratory (4 overlapping cameras, 6 people), run by hand.

    python bench/adapt_mining_laboratory.py                 # seeds 0 1 2, default mining settings
    python bench/adapt_mining_laboratory.py --set link_m=1.5 --seeds 0

The adapt command's mining thresholds (`adapt.mining`, metres and seconds) were checked on EPFL Terrace only (2
cameras). The Laboratory has no video, only ground-truth boxes, so the tracks to mine come from the mcsa tracker run
on `bench/fusion.py`'s simulated detector (30 % of boxes dropped, occlusion drops, 3 % jitter, false positives), one
tracker per camera at 25 fps, exactly as `run_pipeline.py adapt` would track. Then `mine_identities` with every
camera pair overlapping, and the mined pairs scored against the ground truth (`pipeline.adapt.purity`, each track's
majority ground-truth person at IoU >= 0.5). The goal of the issue (mined-pair precision >= 0.95) is checked per seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from core.geometry import load_homography  # noqa: E402
from core.paths import shared_dir  # noqa: E402
from pipeline.adapt.mining import cut_into_stretches, mine_identities, read_camera_tracks  # noqa: E402
from pipeline.adapt.purity import format_pair_scores, pair_scores, track_truth  # noqa: E402
from pipeline.config import AdaptMiningConfig  # noqa: E402
from pipeline.tracking.config import build_tracker_from_config  # noqa: E402
from pipeline.tracking.tracklets import TrackletSplitter  # noqa: E402

FPS = 25.0
UNITS_PER_M = 40.0  # EPFL homographies: 2.5 cm grid


def mining_config(overrides: list[str]) -> AdaptMiningConfig:
    """The shipped `adapt.mining` settings for the EPFL homographies (UNITS_PER_M), with NAME=VALUE overrides."""
    over = {}
    for item in overrides:
        k, _, v = item.partition("=")
        over[k] = float(v)
    return AdaptMiningConfig(ground_units_per_m=UNITS_PER_M, **over)


def main() -> int:
    import fusion as bf

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[], help="adapt.mining override NAME=VALUE")
    ap.add_argument("--tracklets", action="store_true", help="cut the tracks at contacts and gaps first "
                    "(tracker.tracklets: TrackletSplitter, contact_iou 0.2, max_gap 5), as the tracks config does")
    ap.add_argument("--out", default=str(ROOT / "out/bench_adapt_lab"))
    args = ap.parse_args()
    cfg = mining_config(args.set)
    lab = shared_dir() / "data/epfl_laboratory_gt"
    if not lab.is_dir():
        raise SystemExit(f"{lab}: EPFL Laboratory ground truth missing (../shared/data)")
    gts = bf.laboratory_gt(lab)
    cams = sorted(gts)
    n = int(max(g[:, 0].max() for g in gts.values()))
    gt_rows = {c: np.loadtxt(lab / f"laboratory6-{c}/gt_mot_derived.txt", delimiter=",", ndmin=2) for c in cams}
    overlapping = {frozenset((a, b)) for i, a in enumerate(cams) for b in cams[i + 1:]}
    print(f"mining settings: {cfg}")
    results = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        out = Path(args.out) / f"seed{seed}"
        out.mkdir(parents=True, exist_ok=True)
        tracks = []
        for c in cams:
            dets = bf.simulate_detector(gts[c], (360, 288), rng, n_frames=n)
            tracker = build_tracker_from_config("mcsa", {}, frame_rate=FPS)
            if args.tracklets:
                tracker = TrackletSplitter(tracker, 0.2, 5)
            lines = []
            for i, d in enumerate(dets):
                tr = tracker.update(d, None)
                for tid, (x1, y1, x2, y2) in zip(tr.track_ids.tolist(), tr.xyxy.tolist()):
                    lines.append(f"{i + 1},{tid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,-1,-1,-1\n")
            (out / f"{c}.txt").write_text("".join(lines))
            tracks.append(read_camera_tracks(out / f"{c}.txt", c, FPS,
                                             load_homography(str(lab / f"laboratory6-{c}/Homography.txt")),
                                             UNITS_PER_M))
        if cfg.cut_tracks:
            tracks = [cut_into_stretches(cam, cfg) for cam in tracks]
        mined = mine_identities(tracks, overlapping, cfg)
        truth = {}
        for cam in tracks:
            truth.update(track_truth(cam, gt_rows[cam.camera]))
        scores = pair_scores(mined, truth)
        print(f"\nLaboratory seed {seed}: {mined.summary()}")
        print(format_pair_scores(scores))
        results.append(scores)
    print("\nmined-pair precision per seed (goal >= 0.95):")
    for name in results[0]:
        vals = [r[name]["precision"] for r in results]
        rec = [r[name]["recall"] for r in results]
        print(f"  {name:<14s} precision {' '.join(f'{v:.3f}' for v in vals)}   recall {' '.join(f'{v:.3f}' for v in rec)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
