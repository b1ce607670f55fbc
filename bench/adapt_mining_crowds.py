"""Site-adaptation mining in crowds: EPFL Terrace's crowded stand-ins (bench/fusion.py --crowd), run by hand.

    python bench/adapt_mining_crowds.py                   # Terrace, Terrace crowded, 8 occluded crowds
    python bench/adapt_mining_crowds.py --crowd-draws 3 --set ambiguity_m=1.5

The recordings the issue keeps back are later, more crowded footage of the shared scenes, and they are judged on
mined-pair precision (>= 0.95) too. The shared Terrace half holds at most 6 people at once; this bench mines denser
scenes made from it exactly as `bench/fusion.py --crowd` makes them: frames i and i + SHIFT of each camera laid over
one another (two crowds of the same site at once, up to ~9 people; ground truth of the later layer renumbered + 100),
"occluded" draws dropping with probability 0.8 a detection more than half covered by a nearer person of the other
layer. The detections are bench/tracking.py's cached YOLO11n boxes of the real video, so the per-camera tracker sees
real detector noise. Each camera is tracked by the mcsa tracker at 25 fps (shipped parameters), as
`run_pipeline.py adapt` tracks before mining; the tracks are then split in time as adapt splits them (the first
1 - val_fraction trains, the rest validates), each part mined on its own with the shipped `adapt.mining` settings,
and the mined pairs scored against the ground truth (`pipeline.adapt.purity`: each track's majority ground-truth
person at IoU >= 0.5; "distinct ids": the pairs of mined identities, which training treats as two people, that
really are two; the totals add "ids seen apart": the identity pairs a cannot-link separates, the only negatives
known without labels, and the share of the real two-people identity pairs they cover). Prints one row per sequence
and part, and the totals over all pairs.
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
from adapt_mining_laboratory import UNITS_PER_M, mining_config  # noqa: E402
from core.paths import shared_dir  # noqa: E402
from pipeline.adapt.mining import cut_into_stretches, mine_identities, read_camera_tracks  # noqa: E402
from pipeline.adapt.purity import pair_scores, track_truth  # noqa: E402
from pipeline.tracking.config import build_tracker_from_config  # noqa: E402

FPS = 25.0
VAL_FRACTION = 0.2  # adapt.val_fraction's default


def track_camera(frames, out_path: Path) -> None:
    """The mcsa tracker (shipped parameters) over one camera's per-frame Detections -> a MOT file."""
    tracker = build_tracker_from_config("mcsa", {}, frame_rate=FPS)
    lines = []
    for i, d in enumerate(frames):
        tr = tracker.update(d, None)
        for tid, (x1, y1, x2, y2) in zip(tr.track_ids.tolist(), tr.xyxy.tolist()):
            lines.append(f"{i + 1},{tid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,-1,-1,-1\n")
    out_path.write_text("".join(lines))


def mine_part(mots: dict[str, Path], homs: dict[str, np.ndarray], gts: dict[str, np.ndarray], cfg,
              first: int, last: int) -> tuple[dict, dict]:
    """Mine frames first..last of every camera as adapt does -> (pair scores, counts)."""
    tracks = [read_camera_tracks(mots[c], c, FPS, homs[c], UNITS_PER_M, last_frame=last, first_frame=first)
              for c in sorted(mots)]
    if cfg.cut_tracks:
        tracks = [cut_into_stretches(cam, cfg) for cam in tracks]
    mined = mine_identities(tracks, {frozenset(mots)}, cfg)
    truth = {}
    for cam in tracks:
        truth.update(track_truth(cam, gts[cam.camera]))
    people = {truth.get(k) for k in mined.identity} - {None}
    real = {int(p) for g in gts.values() for p in np.unique(g[(g[:, 0] >= first) & (g[:, 0] <= last), 1])}
    return pair_scores(mined, truth), {"identities": len(set(mined.identity.values())), "people_mined": len(people),
                                       "people": len(real)}


def main() -> int:
    import fusion as bf

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crowd-draws", type=int, default=7, help="occluded crowds beyond the first (bench/fusion.py's "
                    "--crowd-draws: other frame shifts and occlusion draws)")
    ap.add_argument("--set", action="append", default=[], help="adapt.mining override NAME=VALUE")
    ap.add_argument("--out", default=str(ROOT / "out/bench_adapt_crowds"))
    args = ap.parse_args()
    cfg = mining_config(args.set)
    terrace = shared_dir() / "data/epfl_terrace1"
    if not terrace.is_dir():
        raise SystemExit(f"{terrace}: EPFL Terrace missing (../shared/data)")
    cams = ["c0", "c1"]
    homs = {c: load_homography(str(terrace / f"gt_{c}/Homography.txt")) for c in cams}
    gt_paths = {c: str(terrace / f"gt_{c}/gt.txt") for c in cams}
    out = Path(args.out)
    print(f"mining settings: {cfg}")
    dets, _ = bf.terrace_detections(None, appearance=False)
    draws = [(None, 0, 0, "Terrace"), (0.0, 750, 0, "Terrace crowded"), (0.8, 750, 0, "Terrace crowded, occluded")]
    draws += [(0.8, half, k, f"Terrace crowded, occluded {half}/{k}") for k, half in
              ((k, bf.CROWD_SHIFTS[(k - 1) % len(bf.CROWD_SHIFTS)]) for k in range(1, args.crowd_draws + 1))]
    rows = []
    totals = {"cross-camera": [0, 0], "same-camera": [0, 0], "cannot-links": [0, 0], "distinct ids": [0, 0],
              "ids seen apart": [0, 0]}
    for occ, half, k, name in draws:
        where = out / name.replace(" ", "_").replace(",", "").replace("/", "_")
        where.mkdir(parents=True, exist_ok=True)
        if occ is None:
            seq, seq_gt = dets, gt_paths
        else:
            seq, seq_gt, _ = bf.crowd_overlay(dets, gt_paths, where / "gt", half=half, occlusion=occ,
                                              rng=np.random.default_rng(k))
        gts = {c: np.loadtxt(seq_gt[c], delimiter=",", ndmin=2) for c in cams}
        mots = {}
        for c in cams:
            mots[c] = where / f"{c}.txt"
            track_camera(seq[c], mots[c])
        n = min(len(seq[c]) for c in cams)
        split = int(round(n * (1 - VAL_FRACTION)))
        peak = max(len(np.unique(g[g[:, 0] == f, 1])) for g in gts.values() for f in np.unique(g[:, 0]))
        for part, (first, last) in (("train", (1, split)), ("validation", (split + 1, n))):
            scores, counts = mine_part(mots, homs, gts, cfg, first, last)
            rows.append((name, part, peak, scores, counts))
            for key in totals:
                s = scores[key]
                if s["mined_pairs"]:
                    totals[key][0] += s["mined_pairs"]
                    totals[key][1] += s["precision"] * s["mined_pairs"]
            print(format_row(*rows[-1]), flush=True)
    print("\nEPFL Terrace and its crowded stand-ins: adapt's mining, precision (pairs); goal >= 0.95")
    print(f"{'sequence':<34s} {'part':<10s} {'most in view':>12s} {'cross-camera':>14s} {'same-camera':>13s} "
          f"{'cannot-links':>14s} {'distinct ids':>13s} {'identities':>10s} {'people mined':>13s}")
    for row in rows:
        print(format_row(*row))
    print("all pairs: " + ", ".join(f"{k} {v[1] / v[0]:.3f} ({v[0]})" if v[0] else f"{k} -" for k, v in totals.items()))
    cover = [r[3]["ids seen apart"] for r in rows if r[3]["ids seen apart"]["real_pairs"]]
    print(f"ids seen apart cover {sum(c['recall'] * c['real_pairs'] for c in cover):.0f} of "
          f"{sum(c['real_pairs'] for c in cover)} identity pairs that are two real people")
    return 0


def format_row(name: str, part: str, peak: int, scores: dict, counts: dict) -> str:
    def cell(key: str, width: int) -> str:
        s = scores[key]
        return (f"{s['precision']:.3f} ({s['mined_pairs']})" if s["mined_pairs"] else "- (0)").rjust(width)

    return (f"{name:<34s} {part:<10s} {peak:>12d} {cell('cross-camera', 14)} {cell('same-camera', 13)} "
            f"{cell('cannot-links', 14)} {cell('distinct ids', 13)} {counts['identities']:>10d} "
            f"{counts['people_mined']:>6d} of {counts['people']:<3d}")


if __name__ == "__main__":
    raise SystemExit(main())
