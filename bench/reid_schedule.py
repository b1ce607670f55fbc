#!/usr/bin/env python3
"""Re-ID clip schedule (`reid.schedule`, pipeline/reid/schedule.py): clips, accuracy and speed with it off and on.

    python bench/reid_schedule.py [--pets-frames 795] [--terrace-frames 1500] [--variants off,on]

For each variant the full pipeline runs on
  * PETS09-S2L1 (`configs/pets09.yaml`, one crowded camera at 7 fps) with association on: `mot_local/` is the shipped
    config's output (its tracker uses no appearance, so it must not change), `mot/` the offline re-linked global ids
    (where the appearance decides); MOT IDF1 / HOTA of both against the ground truth;
  * EPFL Terrace (`configs/epfl_terrace_tracks.yaml`, two overlapping cameras at 25 fps): cross-camera IDF1 / HOTA
    (DukeMTMC protocol, `evaluate_mtmc`) of the offline (`mot/`) and online (`mot_online/`) global ids.
Printed per sequence: clips sent to the model, periodic chances skipped, the frame loop's fps (noisy on a shared
machine: bench/pipeline_speed.py measures speed ratios), the scores, and how close each track's final appearance
embedding is to the schedule-off run's (cosine, the tracks are the same). Also the cosine between consecutive clip
embeddings of a track in the schedule-off run (what `reid.schedule.agree_cos` is compared with).
Variants: off, on (the `reid.schedule` defaults with enabled: true), on:KEY=VALUE:... (schedule keys overridden).
--checkpoint DIR runs every variant on that model (`reid.checkpoint`, e.g. the INT8 folder of bench/reid_int8.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.paths import shared_dir  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.evaluation.mot import evaluate_mot, evaluate_mtmc  # noqa: E402
from pipeline.runner import Pipeline  # noqa: E402


def variant_config(name: str, config: str, frames: int, variant: str, association: bool,
                   checkpoint: str | None = None):
    cfg = load_config(ROOT / "configs" / config)
    data = cfg.model_dump()
    if checkpoint:
        data["reid"]["checkpoint"] = checkpoint
    for cam in data["cameras"]:
        cam["max_frames"] = frames
    data["run"]["progress"] = False
    data["association"]["enabled"] = association or data["association"]["enabled"]
    kind, *overrides = variant.split(":")
    data["reid"]["schedule"]["enabled"] = kind == "on"
    for item in overrides:
        key, value = item.split("=")
        data["reid"]["schedule"][key] = float(value)
    return type(cfg).model_validate(data)


def store_arrays(db: Path) -> tuple[dict, dict]:
    """(track key -> final embedding (D,), track key -> consecutive clip cosines) from a run's store."""
    con = sqlite3.connect(db)
    final = {(c, t): np.frombuffer(e, np.float32) for c, t, e in
             con.execute("select camera_id, track_id, embedding from tracks where embedding is not null")}
    clips: dict = {}
    for c, t, e in con.execute("select camera_id, track_id, embedding from track_clips order by camera_id, track_id, "
                               "t_end, rowid"):
        v = np.frombuffer(e, np.float32)
        clips.setdefault((c, t), []).append(v / max(np.linalg.norm(v), 1e-12))
    cons = {k: [float(np.dot(a, b)) for a, b in zip(v, v[1:])] for k, v in clips.items()}
    return final, cons


def first_frames(gt: Path, frames: int, out: Path) -> str:
    """The ground truth of the first `frames` frames (a run limited to them is scored on them only)."""
    rows = np.loadtxt(gt, delimiter=",", ndmin=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(out, rows[rows[:, 0] <= frames], delimiter=",", fmt="%g")
    return str(out)


def run_one(seq: str, cfg, out: Path, frames: int, reuse: bool) -> dict:
    info = out / "bench.json"
    if reuse and info.is_file():
        res = json.loads(info.read_text())
    else:
        t = time.perf_counter()
        summary = Pipeline(cfg, out).run()
        wall = time.perf_counter() - t
        assert summary.exit_code == 0, summary.table()
        res = {"wall_s": wall, "fps": float(np.mean([c.fps for c in summary.cameras])),
               "clips": summary.reid["processed"], "skipped": summary.reid.get("skipped", 0)}
        info.write_text(json.dumps(res))
    data = shared_dir() / "data"
    if seq == "pets09":
        gt = first_frames(data / "pets09_s2l1" / "gt" / "gt.txt", frames, out / "gt" / "view001.txt")
        res["local"] = evaluate_mot(gt, out / "mot_local" / "view001.txt")
        res["global"] = evaluate_mot(gt, out / "mot" / "view001.txt")
    else:
        gt = {c: first_frames(data / "epfl_terrace1" / f"gt_{c}" / "gt.txt", frames, out / "gt" / f"{c}.txt")
              for c in ("c0", "c1")}
        res["global"] = evaluate_mtmc(gt, {c: str(out / "mot" / f"{c}.txt") for c in gt})
        res["online"] = evaluate_mtmc(gt, {c: str(out / "mot_online" / f"{c}.txt") for c in gt})
    res["final"], res["consecutive"] = store_arrays(out / "events.db")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pets-frames", type=int, default=795, help="PETS09 frames (0: skip)")
    ap.add_argument("--terrace-frames", type=int, default=1500, help="EPFL Terrace frames per camera (0: skip)")
    ap.add_argument("--variants", default="off,on", help="comma-separated: off, on, on:KEY=VALUE:...")
    ap.add_argument("--out", default="/tmp/mcsa_reid_schedule", help="run folders (replaced)")
    ap.add_argument("--checkpoint", default=None, help="reid.checkpoint of every variant (default: the config's)")
    ap.add_argument("--reuse", action="store_true", help="score runs already in --out instead of running them again")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    variants = args.variants.split(",")
    seqs = [(s, c, f) for s, c, f in (("pets09", "pets09.yaml", args.pets_frames),
                                      ("terrace", "epfl_terrace_tracks.yaml", args.terrace_frames)) if f > 0]
    results: dict = {}
    for seq, config, frames in seqs:
        for v in variants:
            out = Path(args.out) / f"{seq}_{v.replace(':', '_').replace('=', '')}"
            cfg = variant_config(seq, config, frames, v, seq == "pets09", args.checkpoint)
            data = cfg.model_dump()
            data["output"]["overwrite"] = True
            cfg = type(cfg).model_validate(data)
            results[(seq, v)] = run_one(seq, cfg, out, frames, args.reuse)
            print(f"done {seq} {v}: {results[(seq, v)]['clips']} clips", flush=True)

    for seq, _, frames in seqs:
        base = results[(seq, variants[0])]
        cos = np.concatenate([np.asarray(c) for c in base["consecutive"].values() if c] or [np.zeros(0)])
        if len(cos):
            q = np.percentile(cos, [5, 25, 50, 75, 95])
            print(f"\n{seq}: consecutive clip cosine in variant {variants[0]} ({len(cos)} pairs): p5 {q[0]:.3f}, "
                  f"p25 {q[1]:.3f}, median {q[2]:.3f}, p75 {q[3]:.3f}, p95 {q[4]:.3f}")
        cols = (["local", "global"] if seq == "pets09" else ["global", "online"])
        names = {"local": "local ids", "global": "global (offline)" if seq == "terrace" else "global ids",
                 "online": "global (online)"}
        print(f"{seq} ({frames} frames/camera)")
        head = f"{'variant':<34} {'clips':>6} {'ratio':>6} {'skipped':>8} {'fps':>6} "
        head += " ".join(f"{names[c] + ' IDF1':>22} {'HOTA':>6}" for c in cols)
        print(head + f" {'emb cos mean':>12} {'min':>6}")
        for v in variants:
            r = results[(seq, v)]
            common = [k for k in r["final"] if k in base["final"]]
            sims = np.array([float(np.dot(r["final"][k], base["final"][k])) for k in common]) if common else \
                np.full(1, np.nan)
            line = (f"{v:<34} {r['clips']:>6d} {r['clips'] / max(base['clips'], 1):>6.3f} {r['skipped']:>8d} "
                    f"{r['fps']:>6.2f} ")
            line += " ".join(f"{r[c]['IDF1'] * 100:>22.2f} {r[c]['HOTA'] * 100:>6.2f}" for c in cols)
            print(line + f" {sims.mean():>12.4f} {sims.min():>6.3f}")
        if seq == "terrace":
            for v in variants:
                pc = results[(seq, v)]["global"]["per_camera"]
                print(f"  {v}: per camera IDF1 (offline global ids) " +
                      ", ".join(f"{c} {pc[c]['IDF1'] * 100:.2f}" for c in sorted(pc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
