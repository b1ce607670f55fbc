"""End to end on real video with the real detector, tracker and store (short runs: a few dozen frames)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from core.paths import REPO_ROOT
from pipeline.runner import Pipeline


def _mot_rows(path: Path) -> np.ndarray:
    text = path.read_text().strip()
    return np.loadtxt(path, delimiter=",", ndmin=2) if text else np.zeros((0, 10))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between (N,4) and (M,4) xywh boxes."""
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2) - np.maximum(a[:, None, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2) - np.maximum(a[:, None, 1], b[:, 1]), 0, None)
    inter = iw * ih
    return inter / (a[:, None, 2] * a[:, None, 3] + b[:, 2] * b[:, 3] - inter)


def _short_config(name: str, frames: int, **run):
    cfg = load_config(REPO_ROOT / "configs" / name)
    data = cfg.model_dump()
    for cam in data["cameras"]:
        cam["max_frames"] = frames
    data["run"].update(progress=False, **run)
    return type(cfg).model_validate(data)


def test_terrace_two_cameras_tracks_files_and_store(shared, yolo_weights, tmp_path):
    summary = Pipeline(_short_config("epfl_terrace.yaml", 150), tmp_path).run()  # people enter at ~70-120
    assert summary.exit_code == 0, summary.table()
    assert [c.status for c in summary.cameras] == ["completed", "completed"]
    con = sqlite3.connect(tmp_path / "events.db")
    assert con.execute("select status from runs").fetchone()[0] == "completed"
    assert con.execute("select camera_id, frames, status from cameras order by camera_id").fetchall() == [
        ("c0", 150, "completed"), ("c1", 150, "completed")]
    for cam in ("c0", "c1"):
        rows = _mot_rows(tmp_path / "mot" / f"{cam}.txt")
        assert len(rows) > 0, f"no tracks on {cam}"
        assert rows[:, 0].min() >= 1 and rows[:, 0].max() <= 150  # 1-based frames
        assert (rows[:, 4] > 0).all() and (rows[:, 5] > 0).all()
        stored = con.execute("select count(*) from track_boxes where camera_id=?", (cam,)).fetchone()[0]
        assert stored == len(rows)
        # mot/ holds each box's identity (fused mode: a local track can be cut into segments, each stored as a
        # track): every identity the store gives this camera is in its MOT file, and no MOT id lacks a stored track
        mot_ids = set(rows[:, 1].astype(int).tolist())
        gids = {r[0] for r in con.execute("select distinct global_id from identities where camera_id=?", (cam,))}
        assert gids and gids <= mot_ids, (gids, mot_ids)
        n_tracks = con.execute("select count(*) from tracks where camera_id=?", (cam,)).fetchone()[0]
        assert n_tracks >= len(mot_ids)
    _check_ground_output(tmp_path, shared)


def _json_output(main, argv: list[str]):
    """The JSON a CLI command prints (its exit code 0)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return json.loads(buf.getvalue())


def _check_ground_output(out: Path, shared: Path) -> None:
    """ground/tracks.csv: every row's person stands where each view it names sees the floor (its ground point maps
    into that camera's frame), under an id a box of that frame carries in mot_online/; ground/map.png is a picture."""
    import csv

    import cv2

    from core.geometry import load_homography
    from pipeline.fusion.ground import CameraGeometry

    shown = set()
    for cam in ("c0", "c1"):
        rows = _mot_rows(out / "mot_online" / f"{cam}.txt")
        shown |= {(int(f), int(i)) for f, i in rows[:, :2]}
    geoms = {}
    for cam in ("c0", "c1"):
        h = load_homography(shared / "data" / "epfl_terrace1" / f"gt_{cam}" / "Homography.txt")
        geoms[cam] = CameraGeometry(cam, h, 40.0, (360, 288))
        geoms[cam].image_to_ground(np.array([[180.0, 287.0]]))
    with open(out / "ground" / "tracks.csv", newline="") as f:
        ground = list(csv.DictReader(f))
    assert len(ground) > 50, "the fused people are placed on the ground"
    for r in ground:
        assert (int(r["step"]) + 1, int(r["global_id"])) in shown, r
        for cam in r["cameras"].split():
            px, ok = geoms[cam].ground_to_image(np.array([[float(r["x_m"]), float(r["y_m"])]]))
            assert ok[0] and -60 < px[0, 0] < 420 and -60 < px[0, 1] < 348, (r, px)
    img = cv2.imread(str(out / "ground" / "map.png"))
    assert img is not None and min(img.shape[:2]) > 200
    # the store holds the same people's positions (one per 0.2 s), and `query ground --near` finds them
    con = sqlite3.connect(out / "events.db")
    stored = con.execute("select global_id, ts, x_m, y_m from ground_positions order by ts").fetchall()
    con.close()
    csv_ids = {int(r["global_id"]) for r in ground}
    assert stored and {r[0] for r in stored} == csv_ids
    gid, ts, x, y = stored[len(stored) // 2]
    from pipeline.cli import main

    rows = _json_output(main, ["query", "ground", "--output", str(out), "--near", f"{x},{y}", "--radius", "0.3",
                               "--json"])
    assert any(r["closest_m"] <= 0.3 for r in rows) and rows


def test_pets09_tracks_cover_ground_truth(shared, yolo_weights, tmp_path):
    """The output boxes find most ground-truth people (a broken detector/tracker/writer chain fails this)."""
    summary = Pipeline(_short_config("pets09.yaml", 60), tmp_path).run()
    assert summary.exit_code == 0, summary.table()
    pred = _mot_rows(tmp_path / "mot" / "view001.txt")
    gt = np.loadtxt(shared / "data/pets09_s2l1/gt/gt.txt", delimiter=",")
    gt = gt[gt[:, 0] <= 60]
    matched = 0
    for frame in range(11, 61):  # after track confirmation
        g, p = gt[gt[:, 0] == frame, 2:6], pred[pred[:, 0] == frame, 2:6]
        if len(g) and len(p):
            matched += int((_iou(g, p).max(axis=1) >= 0.5).sum())
    recall = matched / len(gt[gt[:, 0] >= 11])
    assert recall > 0.7, f"recall {recall:.2f}"
    # timestamps use the 7 fps override: frame 59 (0-based) at 59/7 s
    con = sqlite3.connect(tmp_path / "events.db")
    last = con.execute("select max(frame), max(ts) from track_boxes").fetchone()
    assert last[1] == pytest.approx(last[0] / 7, abs=1e-6)


def _cli(*args, **kw):
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "run_pipeline.py"), *args], capture_output=True, text=True,
        cwd=kw.get("cwd", REPO_ROOT), timeout=kw.get("timeout", 300),
    )


def test_cli_source_option_runs(shared, yolo_weights, tmp_path):
    out = tmp_path / "out2"
    proc = _cli("run", "--source", f"view001={shared}/data/pets09_s2l1/vtest.avi", "--output", str(out),
                "--max-frames", "15", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "mot" / "view001.txt").stat().st_size > 0
    assert (out / "events.db").is_file()
    assert "view001" in proc.stdout and "completed" in proc.stdout


def test_cli_help_teaches():
    proc = _cli("run", "--help")
    assert proc.returncode == 0
    for word in ("--config", "--source", "CAM_ID=URI", "mot/<camera_id>.txt", "events.db", "exit codes"):
        assert word in proc.stdout


def test_ctrl_c_stops_cleanly_and_keeps_everything(shared, yolo_weights, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "run_pipeline.py"), "run", "--config", "configs/epfl_terrace.yaml",
         "--output", str(out), "--no-progress"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        mot = out / "mot_local" / "c0.txt"  # with association on, live per-frame lines go to mot_local/
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not mot.exists() or mot.stat().st_size < 2000):
            time.sleep(0.5)
        assert mot.exists() and mot.stat().st_size >= 2000, "the run wrote no tracks within 120 s"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a failed check above must not leave the pipeline running
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr[-2000:]
    con = sqlite3.connect(out / "events.db")
    assert con.execute("select status from runs").fetchone()[0] == "interrupted"
    for cam in ("c0", "c1"):
        rows = _mot_rows(out / "mot" / f"{cam}.txt")
        stored = con.execute("select count(*) from track_boxes where camera_id=?", (cam,)).fetchone()[0]
        assert stored == len(rows) > 0
    frames = dict(con.execute("select camera_id, frames from cameras"))
    assert 0 < frames["c0"] < 1500 and frames["c0"] == frames["c1"]


def _rows_without_run(db: Path, table: str) -> list[tuple]:
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute(f"pragma table_info({table})") if r[1] not in ("run_id", "id")]
    rows = con.execute(f"select {', '.join(cols)} from {table} order by {', '.join(cols)}").fetchall()
    con.close()
    return rows


@pytest.mark.parametrize("config", ["epfl_terrace_tracks.yaml", "epfl_terrace.yaml"])  # track-then-match, fused
def test_recorded_run_gives_the_same_outputs_every_time(shared, yolo_weights, tmp_path, config):
    """Two runs of a two-camera recording, the second with the next step's detection overlapping each step's
    tracking (run.overlap_detection: on): every output file and every stored row identical, byte for byte (Re-ID
    results are applied at a fixed step after their request for files, whatever the model's timing; camera ends are
    reported between the same steps); and every action event lies within the frames of the (tracklet) track it
    names."""
    cfg = _short_config(config, 240)
    data = cfg.model_dump()
    data["sinks"] = [{"name": "json_tracks", "params": {"every_s": 1.0}}]
    data["reid"]["max_wait_ms"] = 1  # live-style timing knobs must not matter for files
    outs = []
    for k, overlap in enumerate(("off", "on")):
        data["run"]["overlap_detection"] = overlap
        cfg = type(cfg).model_validate(data)
        out = tmp_path / f"run{k}"
        summary = Pipeline(cfg, out).run()
        assert summary.exit_code == 0, summary.table()
        assert summary.reid["processed"] > 0 and summary.association["tracks"] > 0
        outs.append(out)
    a, b = outs
    files = sorted(p.relative_to(a) for p in [*a.rglob("*.txt"), *a.rglob("*.csv")]) + [Path("tracks.jsonl")]
    expected = {"mot", "mot_local", "mot_online", "tracks.jsonl"}  # both modes refine files offline
    assert {p.parts[0] for p in files} >= expected | ({"ground"} if config == "epfl_terrace.yaml" else set())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), f"{rel} differs between two runs"
    events = [[{k: v for k, v in json.loads(x).items() if k != "run_id"} for x in (o / "events.jsonl").open()]
              for o in outs]
    assert events[0] == events[1]
    for table in ("tracks", "track_boxes", "track_clips", "identity_links", "identities", "action_events"):
        assert _rows_without_run(a / "events.db", table) == _rows_without_run(b / "events.db", table), table
    con = sqlite3.connect(a / "events.db")
    bad = con.execute(
        "select e.camera_id, e.track_id, e.start_frame, e.end_frame, t.first_frame, t.last_frame from action_events e "
        "join tracks t on t.camera_id = e.camera_id and t.track_id = e.track_id "
        "where e.start_frame < t.first_frame or e.end_frame > t.last_frame").fetchall()
    n_events = con.execute("select count(*) from action_events").fetchone()[0]
    unmatched = con.execute("select count(*) from action_events e where not exists (select 1 from tracks t where "
                            "t.camera_id = e.camera_id and t.track_id = e.track_id)").fetchone()[0]
    assert n_events > 0 and bad == [] and unmatched == 0, (n_events, bad, unmatched)


def test_overlapped_detection_reports_an_early_camera_end_at_the_same_step(shared, yolo_weights, tmp_path):
    """Cameras of different lengths (c1 stops 40 frames before c0): with run.overlap_detection on, the step after
    c1's last frame is read ahead while c1's last step is still being processed; c1's end must still reach the
    stages after that step, so the MOT files, the events, the stored rows and the per-camera summary are the same as
    without overlap."""
    data = _short_config("epfl_terrace.yaml", 160).model_dump()
    data["cameras"][1]["max_frames"] = 120
    data["reid"]["enabled"] = False
    data["association"]["enabled"] = False
    outs, summaries = [], []
    for overlap in ("off", "on"):
        data["run"]["overlap_detection"] = overlap
        cfg = load_config(REPO_ROOT / "configs" / "epfl_terrace.yaml").model_validate(data)
        out = tmp_path / overlap
        summaries.append(Pipeline(cfg, out).run())
        outs.append(out)
    assert [(c.camera_id, c.status, c.frames) for c in summaries[0].cameras] == [
        ("c0", "completed", 160), ("c1", "completed", 120)]
    assert [(c.camera_id, c.status, c.frames, c.detections) for c in summaries[1].cameras] == [
        (c.camera_id, c.status, c.frames, c.detections) for c in summaries[0].cameras]
    for rel in ("mot/c0.txt", "mot/c1.txt"):
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel
    for table in ("tracks", "track_boxes", "action_events", "cameras"):
        assert _rows_without_run(outs[0] / "events.db", table) == _rows_without_run(outs[1] / "events.db", table)
