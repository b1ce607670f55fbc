"""How pure mined identities are, where ground truth exists (benchmarks and `adapt --gt`; never used to mine).

Each track is given the ground-truth id that most of its boxes match (IoU >= 0.5, one-to-one per frame, Hungarian);
a track matching no ground truth in most of its boxes gets none (a false track: every pair with it is wrong).
Pairs are counted over the tracks as mined (the stretches, when mining cut the tracks: `cut_tracks`): precision =
share of the mined same-identity pairs that are one real person; recall = share of the real same-person pairs (both
tracks matched) that were mined. Reported for cross-camera pairs, same-camera pairs and the must-links themselves,
the cannot-links (precision: share that are two real people), and the pairs of distinct mined identities (training
treats them as two people; precision: share that are two real people, each identity taken as its tracks' majority
person; a pair that is one person is an identity the mining split, e.g. before and after a gap nothing bridged).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations

import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.adapt.mining import CameraTracks, MinedIdentities, TrackKey


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xywh boxes a (n, 4) and b (m, 4)."""
    ax1, ay1, ax2, ay2 = a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx1, by1, bx2, by2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(ax1[:, None], bx1[None]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(ay1[:, None], by1[None]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return inter / np.maximum(union, 1e-9)


def track_truth(cam: CameraTracks, gt_rows: np.ndarray, min_iou: float = 0.5) -> dict[TrackKey, int | None]:
    """(camera, track) -> majority ground-truth id (None: mostly unmatched). gt_rows (M, >=6) MOT `frame,id,x,y,w,h`."""
    gt_by_frame: dict[int, np.ndarray] = defaultdict(lambda: np.zeros((0, 6)))
    for f in np.unique(gt_rows[:, 0]):
        gt_by_frame[int(f)] = gt_rows[gt_rows[:, 0] == f, :6]
    votes: dict[int, Counter] = defaultdict(Counter)
    for f in np.unique(cam.rows[:, 0]):
        det = cam.rows[cam.rows[:, 0] == f]
        gt = gt_by_frame[int(f)]
        matched: dict[int, int] = {}
        if len(gt):
            iou = _iou(det[:, 2:6], gt[:, 2:6])
            r, c = linear_sum_assignment(-iou)
            matched = {int(i): int(gt[j, 1]) for i, j in zip(r, c) if iou[i, j] >= min_iou}
        for i, row in enumerate(det):
            votes[int(row[1])][matched.get(i)] += 1
    return {(cam.camera, tid): v.most_common(1)[0][0] for tid, v in votes.items()}


def pair_scores(mined: MinedIdentities, truth: dict[TrackKey, int | None]) -> dict[str, dict[str, float]]:
    """Precision / recall / counts of mined pairs against `truth` (see the module docstring)."""
    keys = sorted(mined.identity)

    def same_real(a: TrackKey, b: TrackKey) -> bool:
        return truth.get(a) is not None and truth.get(a) == truth.get(b)

    out: dict[str, dict[str, float]] = {}
    for name, want in (("cross-camera", True), ("same-camera", False)):
        mined_pairs = good = 0
        for a, b in combinations(keys, 2):
            if (a[0] != b[0]) == want and mined.identity[a] == mined.identity[b]:
                mined_pairs += 1
                good += same_real(a, b)
        # recall over every real pair among all tracks with ground truth (also the ones left without an identity)
        all_real = sum(same_real(a, b) for a, b in combinations(sorted(truth), 2) if (a[0] != b[0]) == want)
        out[name] = {"mined_pairs": mined_pairs, "precision": good / mined_pairs if mined_pairs else float("nan"),
                     "recall": good / all_real if all_real else float("nan"), "real_pairs": all_real}
    links = [(a, b) for a, b, _k, _s in mined.must_links]
    ok = sum(same_real(a, b) for a, b in links)
    out["must-links"] = {"mined_pairs": len(links), "precision": ok / len(links) if links else float("nan"),
                         "recall": float("nan"), "real_pairs": 0}
    cl = [tuple(p) for p in mined.cannot_links]
    wrong = sum(same_real(a, b) for a, b in cl)
    out["cannot-links"] = {"mined_pairs": len(cl), "precision": 1 - wrong / len(cl) if cl else float("nan"),
                           "recall": float("nan"), "real_pairs": 0}
    person = {}
    for pid, members in mined.members().items():
        person[pid] = Counter(truth.get(k) for k in members).most_common(1)[0][0]
    id_pairs = list(combinations(sorted(person), 2))
    one = sum(person[a] is not None and person[a] == person[b] for a, b in id_pairs)
    out["distinct ids"] = {"mined_pairs": len(id_pairs), "precision": 1 - one / len(id_pairs) if id_pairs
                           else float("nan"), "recall": float("nan"), "real_pairs": 0}
    apart = {frozenset((mined.identity[a], mined.identity[b])) for a, b in cl
             if a in mined.identity and b in mined.identity and mined.identity[a] != mined.identity[b]}
    two = [p for p in id_pairs if not (person[p[0]] is not None and person[p[0]] == person[p[1]])]
    ok_apart = sum(not (person[a] is not None and person[a] == person[b]) for a, b in map(tuple, apart))
    out["ids seen apart"] = {"mined_pairs": len(apart), "precision": ok_apart / len(apart) if apart else float("nan"),
                             "recall": sum(frozenset(p) in apart for p in two) / len(two) if two else float("nan"),
                             "real_pairs": len(two)}
    return out


def format_pair_scores(scores: dict[str, dict[str, float]]) -> str:
    lines = [f"{'pairs':<14s}{'mined':>7s}{'precision':>11s}{'recall':>8s}"]
    for name, s in scores.items():
        rec = "" if np.isnan(s["recall"]) else f"{s['recall']:.3f}"
        lines.append(f"{name:<14s}{int(s['mined_pairs']):>7d}{s['precision']:>11.3f}{rec:>8s}")
    return "\n".join(lines)
