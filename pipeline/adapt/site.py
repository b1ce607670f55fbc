"""Site adaptation end to end (`run_pipeline.py adapt`): run -> mine -> export -> train -> validate -> checkpoint.

1. **Tracks**: the site's recordings go through detection and tracking (`run`, Re-ID and association off: they are
   not needed to mine), or a finished run's `mot_local/` (else `mot/`) files are reused (`--run DIR`).
2. **Split in time**: the first `1 - adapt.val_fraction` of the recording trains, the rest validates; tracks are cut
   at the boundary and each part is mined on its own, so nothing of the validation part is trained on.
3. **Mining** (pipeline/adapt/mining.py): pseudo-identities from geometry and time; **weak action labels**
   (pipeline/adapt/motion_labels.py): standing / walking / running from each track's ground speed.
4. **Export**: crops of the mined tracks, one every `frame_step_s`, cut into tracklets of `clip_len_s` and where the
   action changes (only crops the pipeline's Re-ID would take: `reid.min_box_height`, `border_margin`, at most
   `max_overlap` covered by another track's box), into `OUT/tracklets/` (the format of `export_tracklets`; train part = split `train`, validation
   part = split `test`, every camera against the others).
5. **Train** Re-ID-AR with the recipe `adapt.recipe` (configs/adapt/*.yaml) starting from its pretrained backbone.
6. **Validate** on the held-out part with its own mined identities (no ground truth): the pretrained backbone alone
   (frame average, cosine) against the adapted checkpoint; `OUT/model_adapted.pth` is written either way and the
   report says which to use (`reid.checkpoint`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.adapt.mining import (CameraTracks, MinedIdentities, cut_into_stretches, mine_identities,
                                   read_camera_tracks)
from pipeline.adapt.motion_labels import MOTION_ACTIONS, motion_state, track_speeds

log = logging.getLogger("mcsa.adapt")


class AdaptError(RuntimeError):
    """Adaptation cannot go on; the message names the cause and the fix."""


@dataclass
class AdaptReport:
    output: Path
    frames: int = 0
    split_frame: int = 0
    mining: dict[str, str] = field(default_factory=dict)
    purity: dict[str, dict] = field(default_factory=dict)
    exported: dict[str, dict] = field(default_factory=dict)
    baseline: dict | None = None
    adapted: dict | None = None
    checkpoint: Path | None = None
    minutes: dict[str, float] = field(default_factory=dict)
    advice: str = ""

    def to_json(self) -> dict:
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
        for k in ("baseline", "adapted"):
            if out[k]:
                out[k] = {m: v for m, v in out[k].items() if m in ("rank1", "rank5", "mAP", "actions", "by_identity")}
        return out


def camera_fps(cam) -> float:
    """The camera's frame rate: the config's `fps`, else the file's, else 25."""
    if cam.fps:
        return float(cam.fps)
    import cv2

    cap = cv2.VideoCapture(str(cam.source))
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    return float(fps) if fps and 0 < fps < 1000 else 25.0


def ground_units_per_m(cfg) -> float:
    return cfg.adapt.mining.ground_units_per_m or cfg.association.fusion.ground_units_per_m


def overlapping_pairs(cfg) -> set[frozenset]:
    """Camera pairs that see the same floor: the topology's overlapping pairs, every pair with `default_link.overlap`,
    and, in fused mode (`association.mode: fused`), every pair of cameras with a homography (one overlapping group)."""
    pairs = {frozenset(p.cameras) for p in cfg.association.topology if p.overlap}
    ids = [c.id for c in cfg.cameras]
    if cfg.association.default_link.overlap:
        pairs |= {frozenset((a, b)) for i, a in enumerate(ids) for b in ids[i + 1:]}
    if cfg.association.mode == "fused":
        fused = [c for c in ids if c in cfg.association.homographies]
        pairs |= {frozenset((a, b)) for i, a in enumerate(fused) for b in fused[i + 1:]}
    return pairs


def run_tracks(cfg, out: Path, max_frames: int | None, progress: bool) -> Path:
    """Detection + tracking of every camera into OUT/run (Re-ID, association, video and thumbnails off)."""
    from pipeline.config import parse_config
    from pipeline.engines import build_engine

    data = cfg.model_dump()
    data["reid"]["enabled"] = False
    data["association"]["enabled"] = False
    data["output"].update(dir=str(out / "run"), overwrite=True, video="off")
    data["store"]["thumbnails"] = False
    data["run"].update(progress=progress, engine="local")
    data["store"]["url"] = None
    data["sinks"] = []
    for cam in data["cameras"]:
        if max_frames:
            cam["max_frames"] = max_frames
    run_cfg = parse_config(data, origin="adapt run")
    summary = build_engine(run_cfg, run_cfg.output.dir).run()
    if summary.error:
        raise AdaptError(f"the tracking run failed: {summary.error}")
    return Path(run_cfg.output.dir)


def load_tracks(cfg, run_dir: Path, first: int, last: int) -> list[CameraTracks]:
    """Each camera's tracks of frames first..last (1-based) from a run folder, with ground points when calibrated."""
    from core.geometry import load_homography

    units = ground_units_per_m(cfg)
    out = []
    for cam in cfg.cameras:
        path = run_dir / "mot_local" / f"{cam.id}.txt"
        if not path.is_file():
            path = run_dir / "mot" / f"{cam.id}.txt"
        hom = cfg.association.homographies.get(cam.id)
        out.append(read_camera_tracks(path, cam.id, camera_fps(cam), load_homography(hom) if hom else None, units,
                                      last_frame=last, first_frame=first))
    return out


def export_part(cfg, tracks: list[CameraTracks], mined: MinedIdentities, root: Path, split: str, pid_offset: int,
                first: int, last: int, progress: bool) -> dict[str, dict]:
    """Crops of the mined tracks of frames first..last into the tracklet folder `root` (split `split`), with the
    weak action labels; pseudo-identities are numbered from `pid_offset`."""
    from pipeline.reid_data.export import ExportOptions, export_tracklets

    a = cfg.adapt
    counts = {}
    work = root / "_boxes"
    work.mkdir(parents=True, exist_ok=True)
    for cam_cfg, cam in zip(cfg.cameras, tracks):
        pos = cam.positions(a.mining.person_height_m)
        mot_rows, labels = [], {}
        for tid in np.unique(cam.rows[:, 1]) if len(cam.rows) else []:
            pid = mined.identity.get((cam.camera, int(tid)))
            if pid is None:
                continue
            m = np.flatnonzero(cam.rows[:, 1] == tid)
            m = m[np.argsort(cam.rows[m, 0])]
            states = motion_state(track_speeds(cam.rows[m, 0] / cam.fps, pos[m], a.speed_window_s),
                                  a.standing_mps, a.running_mps)
            for i, state in zip(m, states):
                fr = int(cam.rows[i, 0])
                mot_rows.append([fr, pid + pid_offset, *cam.rows[i, 2:6]])
                labels[(fr, pid + pid_offset)] = state
        if not mot_rows:
            counts[cam.camera] = {"crops": 0, "tracklets": 0}
            continue
        mot = work / f"{split}_{cam.camera}.txt"
        np.savetxt(mot, np.asarray(mot_rows), fmt=["%d", "%d", "%.2f", "%.2f", "%.2f", "%.2f"], delimiter=",")
        step = max(1, round(a.frame_step_s * cam.fps))
        everyone = work / f"{split}_{cam.camera}_all.txt"  # every track of the camera can hide a mined one
        np.savetxt(everyone, cam.rows[:, :6] if len(cam.rows) else np.zeros((0, 6)), fmt="%.2f", delimiter=",")
        opts = ExportOptions(camera=cam.camera, split=split, frame_step=step,
                             max_len=max(4, round(a.clip_len_s / a.frame_step_s)), min_len=4,
                             min_height=a.min_height_px, max_gap=2, split_on_action=True, first_frame=first,
                             max_frames=last, gate_min_height=cfg.reid.min_box_height,
                             gate_border_margin=cfg.reid.border_margin, gate_max_overlap=cfg.reid.max_overlap,
                             skip_unusable=True, context=everyone if len(cam.rows) else None)
        counts[cam.camera] = export_tracklets(cam_cfg.source, mot, root, opts, labels, progress=progress)
    return counts


def _recipe(cfg, root: Path, out: Path):
    """The training config: the recipe's model/loss/train sections, this site's data."""
    from core.paths import expand_path
    from models.reid.config import load_reid_config

    path = Path(expand_path(cfg.adapt.recipe))
    if not path.is_file():
        raise AdaptError(f"adapt.recipe {path} not found (configs/adapt/ holds the shipped recipes)")
    rc = load_reid_config(path)
    rc.actions = list(MOTION_ACTIONS)
    rc.data.format = "tracklets"
    rc.data.root = str(root)
    rc.data.test_root = None
    rc.data.query_camera = None
    rc.data.gallery_camera = None
    rc.data.val_ids = []
    rc.train.max_minutes = cfg.adapt.max_minutes
    rc.name = f"adapted_{out.name}"
    return rc


def baseline_model(rc):
    """The pretrained backbone alone, as the pipeline uses it without a checkpoint: frame features averaged over
    the clip (no attention), L2-normalised."""
    from models.reid.model import ReIDAR

    m = rc.model
    return ReIDAR(m.backbone, 1, [], tuple(rc.data.input_size), m.pretrained or None, temporal_attention=False,
                  last_stride=m.last_stride, embedding="global", normalize_embedding=True).eval()


def adapt_site(cfg, out: str | Path, run_dir: str | Path | None = None, max_frames: int | None = None,
               gt: dict[str, str] | None = None, progress: bool = True, train: bool = True) -> AdaptReport:
    """Adapt Re-ID-AR to the cameras of `cfg` (a `PipelineConfig`); see the module docstring."""
    from core.device import resolve_device
    from pipeline.reid_data.datasets import load_tracklet_folder
    from pipeline.reid_data.training import evaluate_model
    from pipeline.reid_data.training import train as train_model

    from core.paths import expand_path

    recipe = Path(expand_path(cfg.adapt.recipe))
    if not recipe.is_file():  # fail before the long steps
        raise AdaptError(f"adapt.recipe {recipe} not found (configs/adapt/ holds the shipped recipes)")
    if run_dir is not None and not Path(run_dir).is_dir():
        raise AdaptError(f"--run {run_dir}: no such folder (give the --output folder of a finished `run`, or leave "
                         "--run out to track the cameras now)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = AdaptReport(out)
    t0 = time.time()
    if run_dir is None:
        log.info("adapt: tracking the site's cameras (detection + tracking) into %s", out / "run")
        run_dir = run_tracks(cfg, out, max_frames, progress)
    run_dir = Path(run_dir)
    report.minutes["tracking"] = (time.time() - t0) / 60
    everything = load_tracks(cfg, run_dir, 1, max_frames or 10**9)  # read once, cut into the parts below
    last = int(max((c.rows[:, 0].max() for c in everything if len(c.rows)), default=0))
    if last == 0:
        raise AdaptError(f"{run_dir}: no tracks to learn from (did the cameras see people? check the run's mot files)")
    report.frames = last
    split = int(last * (1 - cfg.adapt.val_fraction)) if cfg.adapt.val_fraction else last
    report.split_frame = split
    pairs = overlapping_pairs(cfg)
    if not pairs:
        log.warning("adapt: no overlapping camera pairs (association.topology, or mode fused with homographies): only "
                    "continuations are mined, and "
                    "identities seen by one camera (set adapt.mining.min_cameras: 1 for a single camera)")
    root = out / "tracklets"
    if root.exists():
        import shutil

        shutil.rmtree(root)
    t1 = time.time()
    parts = [("train", 1, split, 0)] + ([("test", split + 1, last, 100000)] if split < last else [])
    mined_parts = {}
    for name, first, end, offset in parts:
        tracks = [cam.window(first, end) for cam in everything]
        if cfg.adapt.mining.cut_tracks:
            tracks = [cut_into_stretches(cam, cfg.adapt.mining) for cam in tracks]
        mined = mine_identities(tracks, pairs, cfg.adapt.mining)
        mined_parts[name] = (tracks, mined)
        report.mining[name] = f"frames {first}-{end}: {mined.summary()}"
        log.info("adapt: mined %s", report.mining[name])
        if gt:
            from pipeline.adapt.purity import pair_scores, track_truth

            truth = {}
            for cam in tracks:
                if cam.camera in gt:
                    rows = np.loadtxt(gt[cam.camera], delimiter=",", ndmin=2)
                    truth.update(track_truth(cam, rows[(rows[:, 0] >= first) & (rows[:, 0] <= end)]))
            report.purity[name] = pair_scores(mined, truth)
        report.exported[name] = export_part(cfg, tracks, mined, root, name, offset, first, end, progress)
    report.minutes["mining+export"] = (time.time() - t1) / 60
    rc = _recipe(cfg, root, out)
    hint = ("record longer (several people crossing the overlapping views), check the homographies "
            "(adapt.mining.ground_units_per_m) or loosen adapt.mining")
    if not sum(c.get("crops", 0) for c in report.exported["train"].values()):
        unusable = sum(c.get("unusable", 0) for c in report.exported["train"].values())
        if unusable:
            raise AdaptError(f"every crop of the identities mined from frames 1-{split} of {run_dir} ({unusable}) is one "
                             "the pipeline's Re-ID would not take (covered by another person's box, cut by the frame "
                             "border or lower than reid.min_box_height): nothing to learn from; record a stretch where "
                             "people walk apart, or lower reid.min_box_height for a far camera")
        raise AdaptError(f"no identity mined from frames 1-{split} of {run_dir}: nothing to learn from; {hint}")
    ds = load_tracklet_folder(root, list(MOTION_ACTIONS))
    n_ids = len({t.pid for t in ds.train})
    if n_ids == 1:
        log.warning("adapt: only 1 identity mined from frames 1-%d: the model can learn the site's look and the "
                    "actions, not to tell people apart; %s", split, hint)
    rc.data.p = min(rc.data.p, len({t.pid for t in ds.train}))  # a small site may have fewer people than P
    device = resolve_device(rc.train.device)
    dc = rc.data
    has_val = bool(ds.query) and len({t.pid for t in ds.query}) >= 2
    if has_val:
        report.baseline = evaluate_model(baseline_model(rc).to(device), ds, dc.seq_len, tuple(dc.input_size),
                                         dc.test_sampling, dc.test_max_clips, device=device, resize=dc.resize)
    if not train:
        return _finish(report, t0)
    t2 = time.time()
    summary = train_model(rc, out / "train", progress=progress, dataset=ds)
    report.minutes["training"] = (time.time() - t2) / 60
    ckpt = out / "model_adapted.pth"
    ckpt.write_bytes(Path(summary["checkpoint"]).read_bytes())
    report.checkpoint = ckpt
    if has_val:
        from models.reid.model import load_checkpoint

        model, _ = load_checkpoint(ckpt, device)
        report.adapted = evaluate_model(model, ds, dc.seq_len, tuple(dc.input_size), dc.test_sampling,
                                        dc.test_max_clips, device=device, resize=dc.resize)
    return _finish(report, t0)


def _finish(report: AdaptReport, t0: float) -> AdaptReport:
    report.minutes["total"] = (time.time() - t0) / 60
    b, a = report.baseline, report.adapted
    if report.checkpoint is None:
        report.advice = "mining only (no training)"
    elif b and a:
        gain = a["mAP"] - b["mAP"]
        report.advice = (f"adapted model {'better' if gain > 0 else 'NOT better'} on the held-out part (mAP "
                         f"{b['mAP']:.3f} -> {a['mAP']:.3f}): "
                         + (f"set reid.checkpoint: {report.checkpoint}" if gain > 0 else
                            "keep the pretrained model (record more, or check the mining report)"))
    else:
        report.advice = (f"no validation possible (fewer than 2 identities mined in the held-out part); "
                         f"reid.checkpoint: {report.checkpoint} is unvalidated")
    (report.output / "adapt_report.json").write_text(json.dumps(report.to_json(), indent=2, default=float))
    return report


def format_report(report: AdaptReport) -> str:
    lines = [f"adapt: {report.frames} frames per camera, trained on 1-{report.split_frame}, validated on "
             f"{report.split_frame + 1}-{report.frames}"]
    lines += [f"  mined {k}: {v}" for k, v in report.mining.items()]
    for k, v in report.exported.items():
        lines.append(f"  exported {k}: " + ", ".join(f"{c} {n.get('crops', 0)} crops / {n.get('tracklets', 0)} "
                                                      f"tracklets ({n.get('unusable', 0)} crops the pipeline's Re-ID "
                                                      "would not take left out)" for c, n in v.items()))
    if report.purity:
        from pipeline.adapt.purity import format_pair_scores

        for k, v in report.purity.items():
            lines.append(f"  mined pairs vs ground truth ({k}):")
            lines += ["    " + ln for ln in format_pair_scores(v).splitlines()]
    if report.baseline or report.adapted:
        lines.append(f"  held-out re-id (mined identities, every camera vs the others):  {'rank-1':>7s}{'mAP':>7s}")
        for name, r in (("pretrained backbone (frame average)", report.baseline), ("adapted", report.adapted)):
            if r:
                lines.append(f"    {name:<58s}{r['rank1']:>7.3f}{r['mAP']:>7.3f}")
        from pipeline.reid_data.metrics import hardest_identities

        final = report.adapted or report.baseline
        hard = hardest_identities(final.get("by_identity") or {}, 2)
        if hard:
            lines.append(f"  hardest held-out identities ({'adapted' if report.adapted else 'pretrained'}; crops in "
                         f"{report.output / 'tracklets/test'}/<id>/: two look-alikes, which only geometry tells "
                         "apart, or one person mined as two):")
            lines += [f"    {h}" for h in hard]
    lines.append("  minutes: " + ", ".join(f"{k} {v:.1f}" for k, v in report.minutes.items()))
    lines.append(f"  {report.advice}")
    return "\n".join(lines)
