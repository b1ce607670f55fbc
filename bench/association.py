"""Cross-camera association on EPFL Terrace and EPFL Laboratory: IDF1 of the floor, appearance only, online, offline.

Terrace: the pipeline is run once (YOLO + tracker + Re-ID, `configs/epfl_terrace_tracks.yaml`, cached in --run-dir), then
association variants are replayed on its store (`pipeline.association.replay`) and scored with `evaluate_mtmc`
(cameras concatenated, DukeMTMC / AI City protocol). Columns:
  floor       per-camera local ids, no association;
  appearance  Re-ID embeddings only (no topology / ground-plane constraints; one camera's simultaneous tracks are
              still kept apart, or the output would not be a valid MOT file), online and offline;
  online / offline  the configured association (constraints, homography gating and scoring);
  oracle      each local track given the ground-truth id it overlaps most: the ceiling association can reach with
              these local tracks;
  box ceiling each BOX given the ground-truth id it overlaps most (IoU >= 0.5, one box per gt id and frame): the
              ceiling of any identity labelling of these detections, even with perfect per-camera tracks (what is
              left is missed and false boxes).
Laboratory (4 cameras, boxes only): ground-truth boxes, each camera's ground-truth ids taken as local track ids, no
appearance: only the ground-plane path (homographies) links them.

    python bench/association.py                 # runs the Terrace pipeline first when --run-dir has no events.db
    python bench/association.py --skip-terrace  # Laboratory only
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.association.offline import refine  # noqa: E402
from pipeline.association.replay import RecordedRun, load_run, replay, write_mot  # noqa: E402
from pipeline.association.topology import build_topology  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.evaluation.mot import _ious, evaluate_mtmc, load_mot_file  # noqa: E402
from core.paths import shared_dir  # noqa: E402


def oracle_ids(run: RecordedRun, gt: dict[str, str]) -> dict:
    """Each local track -> the gt id its boxes overlap most (IoU >= 0.5), without two simultaneous tracks of one
    camera on one id (longest evidence first)."""
    ids = {}
    for cam in run.cameras:
        g, b = load_mot_file(gt[cam]), run.boxes[cam]
        votes: dict[int, dict[int, int]] = {}
        for fr in np.unique(b[:, 0]):
            pb, gg = b[b[:, 0] == fr], g[g[:, 0] == fr + 1]
            if not len(gg):
                continue
            gx = gg[:, 2:6].copy()
            gx[:, 2:] += gx[:, :2]
            iou = _ious(pb[:, 3:7], gx)
            for i in range(len(pb)):
                j = int(iou[i].argmax())
                if iou[i, j] >= 0.5:
                    v = votes.setdefault(int(pb[i, 2]), {})
                    v[int(gg[j, 1])] = v.get(int(gg[j, 1]), 0) + 1
        spans: dict[int, list] = {}
        for tid, v in sorted(votes.items(), key=lambda kv: -max(kv[1].values())):
            gid = max(v, key=v.get)
            m = b[:, 2] == tid
            s0, s1 = b[m, 1].min(), b[m, 1].max()
            if any(not (s1 < a0 or s0 > a1) for a0, a1 in spans.get(gid, [])):
                continue
            spans.setdefault(gid, []).append((s0, s1))
            ids[(cam, tid)] = gid
    return ids


def box_ceiling(run: RecordedRun, gt: dict[str, str], out: Path) -> dict:
    """IDF1 when every recorded box carries the gt id it overlaps most (per frame, Hungarian on IoU >= 0.5); boxes
    matching no gt box get ids of their own."""
    from scipy.optimize import linear_sum_assignment

    out.mkdir(parents=True, exist_ok=True)
    pred = {}
    spare = 10**7
    for cam in run.cameras:
        g, b = load_mot_file(gt[cam]), run.boxes[cam]
        lines = []
        for fr in np.unique(b[:, 0]):
            pb, gg = b[b[:, 0] == fr], g[g[:, 0] == fr + 1]
            ids = np.full(len(pb), -1, np.int64)
            if len(gg):
                gx = gg[:, 2:6].copy()
                gx[:, 2:] += gx[:, :2]
                iou = _ious(pb[:, 3:7], gx)
                r, c = linear_sum_assignment(-iou)
                ok = iou[r, c] >= 0.5
                ids[r[ok]] = gg[c[ok], 1].astype(np.int64)
            for k, (_, _, _, x1, y1, x2, y2) in enumerate(pb.tolist()):
                if ids[k] < 0:
                    spare += 1
                    ids[k] = spare
                lines.append(f"{int(fr) + 1},{ids[k]},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,-1,-1,-1\n")
        path = pred[cam] = out / f"{cam}.txt"
        path.write_text("".join(lines))
    return evaluate_mtmc(gt, {c: str(p) for c, p in pred.items()})


def score(run: RecordedRun, ids: dict, gt: dict[str, str], out: Path) -> dict:
    pred = write_mot(run, ids, out)
    return evaluate_mtmc(gt, {c: str(p) for c, p in pred.items()})


def variants(run: RecordedRun, cfg, gt: dict[str, str], out: Path, oracle: bool) -> dict[str, dict]:
    res = {"floor": score(run, {}, gt, out / "floor")}
    runs = [("appearance", cfg.model_copy(update={"constraints": False}))] if cfg.use_appearance else []
    for name, c in runs + [("", cfg)]:
        t0 = time.perf_counter()
        online, assoc = replay(run, c)
        t1 = time.perf_counter()
        offline = refine(assoc.all_tracks(), build_topology(c), c, online)
        t2 = time.perf_counter()
        prefix = f"{name} " if name else ""
        res[f"{prefix}online"] = score(run, online, gt, out / f"{name or 'full'}_online")
        res[f"{prefix}offline"] = score(run, offline, gt, out / f"{name or 'full'}_offline")
        res[f"{prefix}online"]["time_s"], res[f"{prefix}offline"]["time_s"] = t1 - t0, t2 - t1
    if oracle:
        res["oracle"] = score(run, oracle_ids(run, gt), gt, out / "oracle")
        res["box ceiling"] = box_ceiling(run, gt, out / "box_ceiling")
    return res


def table(title: str, res: dict[str, dict]) -> str:
    names = list(res)
    w = max(12, *(len(n) + 1 for n in names))
    cams = list(next(iter(res.values()))["per_camera"])
    lines = [title, f"{'':<14}" + "".join(f"{n:>{w}}" for n in names)]
    for key, label in (("IDF1", "IDF1"), ("IDP", "IDP"), ("IDR", "IDR")):
        lines.append(f"{label:<14}" + "".join(f"{res[n][key]:>{w}.3f}" for n in names))
    for cam in cams:
        lines.append(f"{'IDF1 ' + cam:<14}" + "".join(f"{res[n]['per_camera'][cam]['IDF1']:>{w}.3f}" for n in names))
    lines.append(f"{'pred ids':<14}" + "".join(f"{res[n]['num_pred_ids']:>{w}d}" for n in names))
    lines.append(f"{'time s':<14}" + "".join(f"{res[n].get('time_s', float('nan')):>{w}.2f}" for n in names))
    return "\n".join(lines)


def laboratory_run(lab: Path, fps: float = 25.0) -> tuple[RecordedRun, dict[str, str]]:
    """Ground-truth boxes of EPFL Laboratory as a recorded run (gt ids as local track ids)."""
    cams = sorted(p.name.split("-")[-1] for p in lab.glob("laboratory6-c*"))
    run, gt = RecordedRun(cams), {}
    for cam in cams:
        path = lab / f"laboratory6-{cam}" / "gt_mot_derived.txt"
        gt[cam] = str(path)
        g = load_mot_file(path)
        b = np.stack([g[:, 0] - 1, (g[:, 0] - 1) / fps, g[:, 1], g[:, 2], g[:, 3], g[:, 2] + g[:, 4],
                      g[:, 3] + g[:, 5]], axis=1)
        run.boxes[cam] = b[np.lexsort((b[:, 2], b[:, 0]))]
    return run, gt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/epfl_terrace_tracks.yaml"))
    ap.add_argument("--run-dir", default=str(ROOT / "out/bench_association/terrace"),
                    help="output folder of the Terrace pipeline run (reused when it holds events.db)")
    ap.add_argument("--out", default=str(ROOT / "out/bench_association"))
    ap.add_argument("--skip-terrace", action="store_true")
    ap.add_argument("--skip-laboratory", action="store_true")
    args = ap.parse_args()
    shared = shared_dir()
    out = Path(args.out)
    if not args.skip_terrace:
        cfg = load_config(args.config)
        run_dir = Path(args.run_dir)
        db = run_dir / "events.db"
        if not db.is_file():
            print(f"running the Terrace pipeline into {run_dir} (several minutes on CPU) ...", flush=True)
            subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), "run", "--config", args.config, "--output",
                            str(run_dir), "--no-progress"], check=True)
        terrace = shared / "data/epfl_terrace1"
        gt = {c.id: str(terrace / f"gt_{c.id}/gt.txt") for c in cfg.cameras}
        res = variants(load_run(db), cfg.association, gt, out / "terrace", oracle=True)
        print(table(f"EPFL Terrace ({db}): cross-camera and per-camera IDF1", res))
        print()
    if not args.skip_laboratory:
        lab = shared / "data/epfl_laboratory_gt"
        run, gt = laboratory_run(lab)
        from pipeline.config import AssociationConfig

        cfg = AssociationConfig(
            enabled=True, use_appearance=False, ground_gate=60.0,
            default_link={"overlap": True},
            homographies={c: str(lab / f"laboratory6-{c}/Homography.txt") for c in run.cameras},
        )
        res = variants(run, cfg, gt, out / "laboratory", oracle=False)
        print(table("EPFL Laboratory (ground-truth boxes, ground plane only): cross-camera and per-camera IDF1", res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
