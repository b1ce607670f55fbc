"""Re-id ranking metrics (CMC, mAP) with the MARS protocol, per identity, and per-action classification metrics."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np


def euclidean_distances(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    d2 = (q ** 2).sum(1)[:, None] + (g ** 2).sum(1)[None, :] - 2.0 * q @ g.T
    return np.sqrt(np.maximum(d2, 0.0))


def _ranked_queries(distmat: np.ndarray, q_pids, g_pids, q_cams, g_cams):
    """Per query with a valid match (MARS protocol: gallery entries with the query's pid AND camera excluded):
    (query index, the kept gallery pids in ranked order (G',), whether each is a true match (G',) bool)."""
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_cams, g_cams = np.asarray(q_cams), np.asarray(g_cams)
    for i in range(len(q_pids)):
        order = np.argsort(distmat[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        ranked = g_pids[order][keep]
        matches = ranked == q_pids[i]
        if matches.any():
            yield i, ranked, matches


def _average_precision(matches: np.ndarray) -> float:
    hits = matches.cumsum()
    return float((hits / (np.arange(len(matches)) + 1) * matches).sum() / matches.sum())


def evaluate_ranking(distmat: np.ndarray, q_pids, g_pids, q_cams, g_cams, ranks=(1, 5, 10, 20)) -> dict[str, float]:
    """CMC at `ranks` and mAP. Gallery entries with the query's pid AND camera are excluded (MARS protocol);
    queries without any valid match are skipped (their count is returned as `num_skipped`)."""
    max_rank = max(ranks)
    cmc_sum = np.zeros(max_rank)
    aps = []
    for _i, _ranked, matches in _ranked_queries(distmat, q_pids, g_pids, q_cams, g_cams):
        cmc = np.minimum(matches.cumsum(), 1).astype(np.float64)
        row = np.ones(max_rank)
        row[: min(max_rank, len(cmc))] = cmc[:max_rank]
        cmc_sum += row
        aps.append(_average_precision(matches))
    valid = len(aps)
    out = {f"rank{r}": float(cmc_sum[r - 1] / valid) if valid else 0.0 for r in ranks}
    out["mAP"] = float(np.mean(aps)) if aps else 0.0
    out["num_query"] = valid
    out["num_skipped"] = len(q_pids) - valid
    return out


def identity_breakdown(distmat: np.ndarray, q_pids, g_pids, q_cams, g_cams) -> dict[int, dict[str, Any]]:
    """Per query identity (MARS rule as `evaluate_ranking`): its queries' count, rank-1 and mAP, and the identity
    whose gallery entries rank most often above the query's last true match (`confused_with`, None when nothing
    does) with that count (`confused_count`) among all such entries (`wrong_above`). Shows which people a model
    mixes up, e.g. two look-alikes that hold a sequence's mAP down."""
    stats: dict[int, dict[str, Any]] = {}
    for i, ranked, matches in _ranked_queries(distmat, q_pids, g_pids, q_cams, g_cams):
        s = stats.setdefault(int(np.asarray(q_pids)[i]), {"queries": 0, "rank1": 0.0, "ap": [], "wrong": Counter()})
        s["queries"] += 1
        s["rank1"] += float(matches[0])
        s["ap"].append(_average_precision(matches))
        last = int(np.flatnonzero(matches)[-1])
        s["wrong"].update(int(p) for p in ranked[:last][~matches[:last]])
    out = {}
    for pid, s in sorted(stats.items()):
        top = s["wrong"].most_common(1)
        out[pid] = {"queries": s["queries"], "rank1": s["rank1"] / s["queries"], "mAP": float(np.mean(s["ap"])),
                    "confused_with": top[0][0] if top else None, "confused_count": top[0][1] if top else 0,
                    "wrong_above": int(sum(s["wrong"].values()))}
    return out


def hardest_identities(by_identity: dict, n: int = 3) -> list[str]:
    """The `n` identities of `identity_breakdown` with the lowest mAP (below 1), each as
    "5 (4 queries, mAP 0.653): mixed up with 4 (81 of 85 entries ranked above its last match)"."""
    worst = sorted(((k, v) for k, v in by_identity.items() if v["mAP"] < 1.0), key=lambda kv: kv[1]["mAP"])[:n]
    return [f"{k} ({v['queries']} queries, mAP {v['mAP']:.3f}): mixed up with {v['confused_with']} "
            f"({v['confused_count']} of {v['wrong_above']} entries ranked above its last match)" for k, v in worst]


def action_metrics(probs: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    """Per-action precision/recall/F1 of the arg-max prediction on labelled tracklets (labels 1-based, 0 dropped),
    with `support` (true count) and `predicted` (predicted count), plus overall accuracy under key `_overall`.
    Undefined ratios (nothing predicted / nothing present) are reported as 0."""
    labels = np.asarray(labels)
    mask = labels > 0
    out: dict[str, dict[str, float]] = {}
    if probs.size == 0 or not mask.any():
        return out
    pred = probs[mask].argmax(1) + 1
    gt = labels[mask]
    for a, name in enumerate(names, start=1):
        tp = int(((pred == a) & (gt == a)).sum())
        fp = int(((pred == a) & (gt != a)).sum())
        fn = int(((pred != a) & (gt == a)).sum())
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out[name] = {"precision": prec, "recall": rec, "f1": f1, "support": int((gt == a).sum()), "predicted": tp + fp,
                     "accuracy": float(((pred == a) == (gt == a)).mean())}
    out["_overall"] = {"accuracy": float((pred == gt).mean()), "support": int(mask.sum())}
    return out
