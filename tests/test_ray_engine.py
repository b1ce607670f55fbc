"""The Ray engine (`pipeline/engines/ray_engine.py`) on a local Ray cluster started once for this module.

Parity: on a short two-camera recorded clip, `--engine ray` writes the same MOT files (local, online and final
global ids) and the same action events and identities as the local engine. Fault: killing one camera's actor process
mid-run fails that camera only; the other finishes and the store holds everything committed. Re-ID on Ray Serve
(`reid.ray_service: serve`): the cameras' requests merge into the model's batches, a killed replica is replaced, and
Serve is shut down at the run's end.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from core.paths import REPO_ROOT
from pipeline.config import load_config
from pipeline.runner import Pipeline

ray = pytest.importorskip("ray", reason="the Ray engine needs the `ray` package (requirements.txt)")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local cluster for every Ray test: 2 CPUs, no dashboard."""
    from pipeline.engines.ray_engine import ray_init_kwargs

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, **ray_init_kwargs())
    yield
    from pipeline.engines.ray_engine import stop_serve_router_loop

    stop_serve_router_loop()  # (each run already stops it when it shuts Serve down)
    gc.collect()  # Ray handles left in reference cycles go while the Ray worker is up, not in a later test
    ray.shutdown()
    gc.collect()


def _same_mot_files(a: Path, b: Path) -> int:
    """Every MOT file of run a (mot/, mot_local/, mot_online/) and its ground positions (ground/tracks.csv, fused
    mode) equal run b's; returns the lines compared."""
    compared = 0
    for folder, pattern in (("mot", "*.txt"), ("mot_local", "*.txt"), ("mot_online", "*.txt"), ("ground", "*.csv")):
        for path in sorted((a / folder).glob(pattern)):
            text = path.read_text()
            assert (b / folder / path.name).read_text() == text, f"{folder}/{path.name} differs"
            compared += len(text.splitlines())
    return compared


def _config(frames: int, engine: str = "local", **camera_frames):
    cfg = load_config(REPO_ROOT / "configs" / "epfl_terrace.yaml")
    data = cfg.model_dump()
    for cam in data["cameras"]:
        cam["max_frames"] = camera_frames.get(cam["id"], frames)
    data["run"].update(progress=False, engine=engine)
    return type(cfg).model_validate(data)


def _run_until(engine, camera: str, frames: int, poll_s: float = 0.1):
    """Start `engine.run()` in a thread and return (thread, result dict: "summary" once it ends) as soon as `camera`
    has `frames` frames; fails if the run ends first or after 300 s."""
    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("summary", engine.run()))
    runner.start()
    deadline = time.monotonic() + 300
    while engine.summaries.get(camera) is None or engine.summaries[camera].frames < frames:
        assert runner.is_alive() and time.monotonic() < deadline, f"the run ended before {camera} had {frames} frames"
        time.sleep(poll_s)
    return runner, result


def _events(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    for row in rows:
        row.pop("run_id")
    return rows


def _table(db: Path, sql: str) -> list:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_ray_engine_matches_local_engine(shared, yolo_weights, ray_cluster, tmp_path):
    from pipeline.engines.ray_engine import RayEngine

    local = Pipeline(_config(150), tmp_path / "local").run()  # people enter at ~70-120
    remote = RayEngine(_config(150, "ray"), tmp_path / "ray").run()
    assert local.exit_code == 0 and remote.exit_code == 0, remote.table()
    for c_local, c_ray in zip(local.cameras, remote.cameras):
        assert (c_ray.camera_id, c_ray.status, c_ray.frames, c_ray.detections, c_ray.track_ids) == (
            c_local.camera_id, c_local.status, c_local.frames, c_local.detections, c_local.track_ids)
        assert c_ray.node  # the summary names the node
    assert local.reid["processed"] > 0 and remote.reid["processed"] == local.reid["processed"]
    # the clip schedule runs on the camera actors, fed the results back at the frames the local engine feeds them
    assert local.reid["skipped"] > 0 and remote.reid["skipped"] == local.reid["skipped"]
    assert remote.reid["batches"] == local.reid["batches"]
    compared = _same_mot_files(tmp_path / "local", tmp_path / "ray")
    assert compared > 100  # tracks were written
    assert _events(tmp_path / "ray" / "events.jsonl") == _events(tmp_path / "local" / "events.jsonl")
    for sql in ("select camera_id, track_id, mode, global_id from identities order by 1, 2, 3",
                "select camera_id, track_id, action, start_frame, end_frame from action_events order by 1, 2, 4",
                "select camera_id, track_id, n_clips from tracks order by 1, 2",
                "select camera_id, track_id, frame, width, height, jpeg from track_thumbnails order by 1, 2"):
        rows = _table(tmp_path / "local" / "events.db", sql)
        assert _table(tmp_path / "ray" / "events.db", sql) == rows, sql
    assert len(_table(tmp_path / "local" / "events.db", "select * from identities")) > 0
    assert len(_table(tmp_path / "local" / "events.db", "select * from track_thumbnails")) > 0


def test_killed_camera_actor_fails_only_that_camera(shared, yolo_weights, ray_cluster, tmp_path):
    from pipeline.engines.ray_engine import RayEngine

    engine = RayEngine(_config(100, "ray"), tmp_path)
    runner, result = _run_until(engine, "c1", 15, poll_s=0.1)
    os.kill(ray.get(engine.actors["c1"].pid.remote()), signal.SIGKILL)
    runner.join(timeout=300)
    summary = result["summary"]
    by_cam = {c.camera_id: c for c in summary.cameras}
    assert by_cam["c0"].status == "completed" and by_cam["c0"].frames == 100, summary.table()
    assert by_cam["c1"].status == "failed" and 15 <= by_cam["c1"].frames < 100
    assert "Ray actor died" in by_cam["c1"].error
    assert summary.exit_code == 3
    db = tmp_path / "events.db"
    assert _table(db, "select status from runs") == [("completed",)]
    assert _table(db, "select camera_id, status, frames from cameras order by 1") == [
        ("c0", "completed", 100), ("c1", "failed", by_cam["c1"].frames)]
    for cam in ("c0", "c1"):  # every box the stages saw is committed
        lines = (tmp_path / "mot_local" / f"{cam}.txt").read_text().splitlines()
        assert _table(db, f"select count(*) from track_boxes where camera_id='{cam}'") == [(len(lines),)]


def test_rtsp_camera_under_ray_resumes_after_its_actor_dies(shared, yolo_weights, ray_cluster, tmp_path):
    """A live RTSP camera (the suite's test server) and a file camera under the Ray engine: killing the live camera's
    actor process makes Ray restart it, the camera reconnects and goes on; the file camera never stops."""
    from pipeline.config import parse_config
    from pipeline.engines.ray_engine import RESTART_ID_STRIDE, RayEngine
    from tests.rtsp_server import RtspTestServer

    if not RtspTestServer.available():
        pytest.skip("RTSP test server needs Debian's gst-rtsp-server (python3-gi, gir1.2-gst-rtsp-server-1.0, "
                    "gstreamer1.0-plugins-{base,good,bad}); .ci/run installs them")
    with RtspTestServer(shared / "data/epfl_terrace1/terrace1-c1.mp4") as server:
        cfg = parse_config({
            "cameras": [{"id": "live", "source": server.url("admin", "s3cretpw")},
                        {"id": "file", "source": str(shared / "data/pets09_s2l1/vtest.avi"), "fps": 7}],
            "streams": {"read_timeout_s": 2, "reconnect_initial_s": 0.2, "reconnect_max_s": 1, "connect_attempts": 5},
            "run": {"progress": False, "duration_s": 240, "engine": "ray"},
        })
        engine = RayEngine(cfg, tmp_path)
        result: dict = {}
        runner = threading.Thread(target=lambda: result.setdefault("summary", engine.run()), daemon=True)
        runner.start()

        def wait(predicate, timeout, what):
            deadline = time.monotonic() + timeout
            while not predicate():
                assert runner.is_alive() and time.monotonic() < deadline, f"timed out waiting for {what}"
                time.sleep(0.1)

        s = engine.summaries
        wait(lambda: "live" in s and s["live"].frames >= 15, 240, "15 live frames")
        os.kill(ray.get(engine.actors["live"].pid.remote()), signal.SIGKILL)
        live_at_kill, file_at_kill = s["live"].frames, s["file"].frames
        wait(lambda: s["live"].reconnects >= 1 and s["live"].frames >= live_at_kill + 10, 240,
             "live frames after the actor's restart")
        engine.stop()
        runner.join(120)
    summary = result["summary"]
    live, file = (next(c for c in summary.cameras if c.camera_id == k) for k in ("live", "file"))
    assert live.status == "stopped" and live.reconnects >= 1 and live.is_live, summary.table()
    assert file.status in ("stopped", "completed") and file.error is None and file.frames > file_at_kill
    assert all(t < RESTART_ID_STRIDE or t > RESTART_ID_STRIDE for t in live.track_ids)  # restarted ids never collide
    db = tmp_path / "events.db"
    assert dict(_table(db, "select camera_id, frames from cameras")) == {"live": live.frames, "file": file.frames}
    assert "s3cretpw" not in _table(db, "select config || source from runs, cameras")[0][0]


def test_reid_service_choice_follows_the_sources():
    """`reid.ray_service: auto` is the actor for recorded files (deterministic) and Serve for live cameras or
    several replicas; an explicit choice is kept."""
    from pipeline.config import parse_config
    from pipeline.engines.ray_engine import RayEngine

    def kind(cameras, **reid):
        return RayEngine(parse_config({"cameras": cameras, "reid": reid, "run": {"engine": "ray"}}))._reid_service_kind()

    files = [{"id": "a", "source": "a.mp4"}, {"id": "b", "source": "b.mp4"}]
    assert kind(files) == "actor"
    assert kind(files, replicas=2) == "serve"
    assert kind(files, ray_service="serve") == "serve"
    assert kind(files + [{"id": "c", "source": "rtsp://cam.local/stream"}]) == "serve"
    assert kind([{"id": "w", "source": 0}]) == "serve"
    assert kind([{"id": "w", "source": "rtsp://cam.local/stream"}], ray_service="actor") == "actor"


def test_reid_on_ray_serve_batches_across_cameras(shared, yolo_weights, ray_cluster, tmp_path):
    """`reid.ray_service: serve`: two cameras (two copies of Terrace c1, so both have people from frame ~75 on) send
    their clips as separate requests; Serve's @serve.batch merges them into one model call. The replica is killed
    mid-run: Serve starts another, the run completes, every clip is either processed or counted as lost; every track
    gets an embedding, association assigns identities, and Serve is shut down at the end of the run."""
    from pipeline.engines.ray_engine import RayEngine

    cfg = _config(100, "ray")
    data = cfg.model_dump()
    data["cameras"] = [{**data["cameras"][1], "id": "c1"}, {**data["cameras"][1], "id": "c1_copy"}]
    data["association"].update(mode="tracks", topology=[], homographies={})  # two copies of one view: not one floor
    data["reid"].update(ray_service="serve", max_wait_ms=100)
    engine = RayEngine(type(cfg).model_validate(data), tmp_path)
    runner, result = _run_until(engine, "c1", 85, poll_s=0.05)  # people are in view
    replicas = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                if a["namespace"] == "serve" and a["name"].startswith("SERVE_REPLICA")]
    assert len(replicas) == 1, replicas
    ray.kill(ray.get_actor(replicas[0], namespace="serve"), no_restart=True)
    runner.join(timeout=300)
    summary = result["summary"]
    assert summary.exit_code == 0, summary.table()
    c = summary.reid
    assert c["submitted"] > 0 and c["processed"] + c["lost_in_service"] == c["submitted"] and c["errors"] == 0, c
    # the kill hits a request when one is in flight or routed to the dead replica (then it is retried once, or its
    # clips are counted lost); on a slow machine every clip may have been answered before it, which is no failure
    assert c["processed"] > c["lost_in_service"], c
    # each request holds one camera's clips; a model batch larger than any request merged requests of both cameras
    assert c["cross_camera_batches"] >= 1 and c["max_batch"] > c["max_request"], c
    assert c["requests"] > c["batches"]
    assert c["tracks_with_embedding"] >= 2
    for cam in ("c1", "c1_copy"):
        assert len((tmp_path / "mot" / f"{cam}.txt").read_text().splitlines()) > 10
    assert len(_table(tmp_path / "events.db", "select * from identities")) >= 2
    assert any("Ray Serve" in line for line in summary.stage_lines)
    # Serve is gone from the cluster: no controller, no replica, no application
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "serve"]
    # and from this process: the loop Serve's handles ran on is stopped (left running, its metrics calls crash the
    # process at a random moment after ray.shutdown)
    assert not [t.name for t in threading.enumerate() if "_run_router_event_loop" in t.name]


def test_detector_on_ray_serve_merges_cameras_and_matches_per_camera_detectors(shared, yolo_weights, ray_cluster,
                                                                               tmp_path):
    """`detector.service: true`: the camera actors load no detector; their frames (Terrace c0 and c1, 40 frames from
    frame 120, people in view) go to one Serve deployment whose @serve.batch merges frames of both cameras into one
    detector call. Terrace's 360x288 frames are smaller than detector.imgsz, so they travel unscaled and the model sees
    the per-camera detectors' exact pixels (the shipped OpenVINO model runs one inference per frame inside the batch):
    the MOT files must be identical to the same run with one detector per camera actor (tolerance: none)."""
    import cv2

    from pipeline.engines.ray_engine import RayEngine

    base = _config(40, "ray")
    data = base.model_dump()
    for cam in data["cameras"]:  # frames 120-159 of the video as PNG (lossless): people in both views throughout
        folder = tmp_path / "frames" / cam["id"]
        folder.mkdir(parents=True)
        video = cv2.VideoCapture(str(cam["source"]))
        for i in range(160):
            ok, image = video.read()
            assert ok, f"{cam['source']}: cannot read frame {i}"
            if i >= 120:
                cv2.imwrite(str(folder / f"{i - 120:06d}.png"), image)
        video.release()
        cam.update(source=str(folder), fps=25.0)
    data["reid"]["enabled"] = False
    data["output"]["video"] = "off"

    def config(service: bool):
        # a batch is full at 2 frames (2 cameras, 1 replica) and runs at once; the long wait makes the first camera's
        # frame wait for the other's, so the merge does not hinge on the two actors' timing on a busy CI machine
        data["detector"].update(service=service, max_batch=8, max_wait_ms=2000)
        return type(base).model_validate(data)

    served = RayEngine(config(True), tmp_path / "served").run()
    own = RayEngine(config(False), tmp_path / "own").run()
    assert served.exit_code == 0 and own.exit_code == 0, served.table()
    c = served.counters["detector_service"]
    assert c["frames"] == 80 and c["dropped_frames"] == 0 and c["retries"] == 0, c
    # requests are one frame each: a batch of 2+ frames holding both cameras merged the cameras' requests
    assert c["cross_camera_batches"] >= 1 and c["max_batch"] >= 2 and c["batches"] < c["frames"], c
    assert any(line.startswith("Detector (Ray Serve)") for line in served.stage_lines)
    assert "detector_service" not in own.counters
    for a, b in zip(served.cameras, own.cameras):
        assert (a.camera_id, a.status, a.frames, a.detections) == (b.camera_id, b.status, b.frames, b.detections)
        assert a.detections >= 30 and a.track_ids, a  # people were detected and tracked in both cameras
        text = (tmp_path / "own" / "mot_local" / f"{a.camera_id}.txt").read_text()
        assert len(text.splitlines()) >= 30
        assert (tmp_path / "served" / "mot_local" / f"{a.camera_id}.txt").read_text() == text, a.camera_id
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "serve"]


def test_detector_service_config():
    """`detector.replicas` > 1 needs `detector.service: true` (without it each camera actor has its own detector);
    a camera pre-scales a frame to the size Ultralytics' letterbox resizes it to."""
    from pipeline.config import parse_config
    from pipeline.engines.detector_serve import letterbox_size

    cams = [{"id": "a", "source": "a.mp4"}]
    assert parse_config({"cameras": cams, "detector": {"service": True, "replicas": 2}}).detector.replicas == 2
    with pytest.raises(Exception, match="detector.replicas 2 needs detector.service: true"):
        parse_config({"cameras": cams, "detector": {"replicas": 2}})
    assert letterbox_size(1920, 1080, 640) == (640, 360)  # what Ultralytics resizes a 1080p frame to
    assert letterbox_size(768, 576, 640) == (640, 480)
    assert letterbox_size(360, 288, 640) == (640, 512)  # scaled up: the camera sends such frames as they are


def _actor_config(frames: int, ray_stages: str, **store):
    cfg = _config(frames, "ray")
    data = cfg.model_dump()
    data["run"]["ray_stages"] = ray_stages
    data["store"].update(store)
    return type(cfg).model_validate(data)


def test_stages_in_one_named_actor_match_the_local_engine(shared, yolo_weights, ray_cluster, tmp_path):
    """`run.ray_stages: actor`: association .. store run in one named actor (found with `ray.get_actor` during the
    run) and write the same MOT files, identities and boxes as the local engine."""
    from pipeline.engines.ray_engine import RayEngine

    frames = 100  # a person enters c1 at frame ~69, c0 at ~121: tracks, fused identities and Re-ID clips
    local = Pipeline(_config(frames), tmp_path / "local").run()
    engine = RayEngine(_actor_config(frames, "actor"), tmp_path / "ray")
    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("summary", engine.run()))
    runner.start()
    found = None
    while runner.is_alive() and found is None:
        proxy = engine.stages_proxy
        if proxy is not None:
            found = ray.get(ray.get_actor(proxy.actor_name).where.remote())
        time.sleep(0.05)
    runner.join(timeout=300)
    remote = result["summary"]
    assert local.exit_code == 0 and remote.exit_code == 0, remote.table()
    assert found is not None and found["pid"] != os.getpid()  # the stages ran in another process
    assert found["stages"][0] == "fused_association" and found["stages"][-1] == "store"
    assert engine.stages_proxy.actor_name.startswith("mcsa-stages-")
    assert remote.reid["processed"] == local.reid["processed"] > 0
    assert remote.counters["fused_association"] == local.counters["fused_association"]
    # the fusion read each detection's own embedding, cut on the camera actors and embedded by the driver
    embedded = [[x for x in s.stage_lines if x.startswith("Re-ID of single detections")] for s in (local, remote)]
    assert embedded[0] == embedded[1] and len(embedded[0]) == 1 and " 0 crops" not in embedded[0][0], embedded
    compared = _same_mot_files(tmp_path / "local", tmp_path / "ray")
    assert compared > 20  # tracks were written
    for sql in ("select camera_id, track_id, mode, global_id from identities order by 1, 2, 3",
                "select camera_id, count(*) from track_boxes group by 1 order by 1",
                "select camera_id, track_id, n_clips from tracks order by 1, 2"):
        rows = _table(tmp_path / "local" / "events.db", sql)
        assert _table(tmp_path / "ray" / "events.db", sql) == rows, sql
    assert len(_table(tmp_path / "local" / "events.db", "select * from identities")) > 0


def test_killed_stages_actor_stops_the_run_and_keeps_what_was_committed(shared, yolo_weights, ray_cluster,
                                                                         tmp_path):
    from pipeline.engines.ray_engine import RayEngine

    engine = RayEngine(_actor_config(120, "actor", flush_interval_s=0.05, batch_rows=10), tmp_path)
    runner, result = _run_until(engine, "c1", 95, poll_s=0.02)
    ray.kill(ray.get_actor(engine.stages_proxy.actor_name))
    runner.join(timeout=300)
    summary = result["summary"]
    assert summary.status == "failed" and summary.exit_code == 1, summary.table()
    assert summary.error.startswith(f"the stages actor {engine.stages_proxy.actor_name} (fused_association, ")
    assert "died" in summary.error and "\n" not in summary.error
    assert sum(c.frames for c in summary.cameras) < 240  # the cameras stopped with the run
    db = tmp_path / "events.db"  # the store opens and holds what was committed before the kill
    assert _table(db, "select status from runs") == [("failed",)]  # not left 'running'
    assert _table(db, "select camera_id from cameras order by 1") == [("c0",), ("c1",)]
    assert _table(db, "select count(*) from track_boxes where camera_id='c1'")[0][0] > 0
