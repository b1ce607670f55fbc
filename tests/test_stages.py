"""The stage protocol: the builder (order, registry, sinks from the config), the example sink, the MOT and video stages."""

from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import pytest

from core.types import Frame, Tracks
from pipeline.config import parse_config
from pipeline.stages import STAGES, CameraEnd, CameraInfo, RunEnd, RunInfo, Stage, Step, register_stage
from pipeline.stages.builder import StageConfigError, build_stages, stage_classes


def _config(tmp_path, **extra):
    data = {"cameras": [{"id": "c0", "source": "a.mp4"}, {"id": "c1", "source": "b.mp4"}],
            "reid": {"enabled": False}, "output": {"dir": str(tmp_path)}}
    data.update(extra)
    return parse_config(data)


def _drive(stages, run, frames_per_camera: int, fps: float = 10.0, cameras=("c0", "c1"), tracks_of=None):
    """Drive stages exactly as the loop does: open, open_camera, per step on_frame + on_step, camera ends, close."""
    for stage in stages:
        stage.open(run)
        for cam in cameras:
            stage.open_camera(CameraInfo(cam, f"{cam}.mp4", fps, (64, 48)))
    for k in range(frames_per_camera):
        step = Step(k, k / fps)
        for cam in cameras:
            image = np.full((48, 64, 3), 40, np.uint8)
            tracks = tracks_of(cam, k) if tracks_of else Tracks(np.array([1, 2]), np.array(
                [[4 + k % 10, 4, 20 + k % 10, 40], [30, 6, 50, 44]], np.float32), np.array([0.9, 0.8]), np.zeros(2))
            step.frames.append((Frame(cam, k, k / fps, image), tracks))
        for stage in stages:
            for frame, tracks in step.frames:
                stage.on_frame(frame, tracks)
            stage.on_step(step)
    for cam in cameras:
        for stage in stages:
            stage.on_camera_end(CameraEnd(cam, "completed", frames_per_camera))
    end = RunEnd("completed", [CameraEnd(c, "completed", frames_per_camera) for c in cameras])
    for stage in stages:
        stage.close(end)
    return end


def test_builder_declares_one_order_and_builds_the_example_sink_from_the_config(tmp_path):
    cfg = _config(tmp_path, association={"enabled": True},
                  sinks=[{"name": "json_tracks", "params": {"every_s": 0.5}}], output={"dir": str(tmp_path),
                                                                                          "video": "mosaic"})
    assert [cls.name for cls, _ in stage_classes(cfg)] == ["reid", "association", "events", "mot", "video",
                                                           "ground_map", "thumbnails", "json_tracks", "store"]
    built = build_stages(cfg, tmp_path, all_files=True, redacted_config={})
    names = [s.name for s in built.stages]
    # reid is off; ground_map writes only what a fused association places on the ground (mode tracks here)
    assert names == ["association", "events", "mot", "video", "thumbnails", "json_tracks", "store"]
    assert built.run.run_id == 1 and built.run.embedding_dim is None and built.reid is None
    sink = built.stages[names.index("json_tracks")]
    assert sink.every_s == 0.5
    end = _drive(built.stages, built.run, frames_per_camera=20)  # 2 s at 10 fps, two tracks per camera
    assert end.status == "completed"
    lines = [json.loads(x) for x in (tmp_path / "tracks.jsonl").read_text().splitlines()]
    # one line per track per 0.5 s: t = 0, 0.5, 1.0, 1.5 for 2 tracks x 2 cameras
    assert len(lines) == 4 * 2 * 2 and sink.counters() == {"lines": 16}
    assert {(x["camera_id"], x["track_id"]) for x in lines} == {(c, t) for c in ("c0", "c1") for t in (1, 2)}
    assert all("global_id" in x for x in lines)
    assert set(end.final_identities) == {(c, t) for c in ("c0", "c1") for t in (1, 2)}  # linked at the end
    assert (tmp_path / "video" / "mosaic.mp4").is_file() and (tmp_path / "mot_local" / "c0.txt").is_file()


def test_builder_rejects_unknown_sinks_and_two_writers_of_one_field(tmp_path):
    with pytest.raises(StageConfigError, match="unknown sink 'kafka'.*json_tracks"):
        stage_classes(_config(tmp_path, sinks=[{"name": "kafka"}]))
    with pytest.raises(StageConfigError, match="cannot import module"):
        stage_classes(_config(tmp_path, sinks=[{"name": "x", "module": "no_such_module_xyz"}]))
    with pytest.raises(StageConfigError, match="bad params"):
        build_stages(_config(tmp_path, sinks=[{"name": "json_tracks", "params": {"every": 1}}]), tmp_path, True, {})

    if "test_global_id_writer" not in STAGES:
        @register_stage("test_global_id_writer")
        class _Writer(Stage):
            writes = ("tracks.global_ids",)

    cfg = _config(tmp_path / "b", association={"enabled": True}, sinks=[{"name": "test_global_id_writer"}])
    with pytest.raises(StageConfigError, match="association and test_global_id_writer both write tracks.global_ids"):
        build_stages(cfg, tmp_path / "b", True, {})


def test_messages_are_picklable():
    tracks = Tracks(np.array([3]), np.array([[1, 2, 3, 4]]), np.ones(1), np.zeros(1), global_ids=np.array([7]),
                    current_actions=["walking"], current_action_scores=np.array([0.8], np.float32))
    step = Step(4, 0.4, [(Frame("c0", 4, 0.4, np.zeros((2, 2, 3), np.uint8)), tracks)])
    end = RunEnd("completed", [CameraEnd("c0", "completed", 5)], identities={"online": {("c0", 3): 7}})
    for message in (RunInfo(1, None), CameraInfo("c0", "a.mp4", 25.0, (360, 288)), step, end):
        copy = pickle.loads(pickle.dumps(message))
        assert type(copy) is type(message)
    assert pickle.loads(pickle.dumps(step)).frames[0][1].current_actions == ["walking"]
    assert pickle.loads(pickle.dumps(end)).final_identities == {("c0", 3): 7}


def test_mot_stage_without_association_writes_local_ids_in_motchallenge_format(tmp_path):
    from pipeline.outputs import MotStage

    stage = MotStage.from_config(_config(tmp_path), {})
    assert stage is not None and not stage.global_ids
    _drive([stage], RunInfo(None, tmp_path), frames_per_camera=3)
    lines = (tmp_path / "mot" / "c0.txt").read_text().splitlines()
    assert lines[0] == "1,1,4.00,4.00,16.00,36.00,0.9000,-1,-1,-1"
    assert len(lines) == 6 and lines[-1].startswith("3,2,30.00,6.00,20.00,38.00,")
    assert not (tmp_path / "mot_local").exists()


def test_mot_stage_relabels_with_the_final_identities(tmp_path):
    from pipeline.outputs import MotStage

    stage = MotStage(global_ids=True)
    stage.open(RunInfo(None, tmp_path))
    stage.open_camera(CameraInfo("c0", "a.mp4"))
    stage.on_frame(Frame("c0", 0, 0.0, np.zeros((4, 4, 3), np.uint8)),
                   Tracks(np.array([5, 6]), np.array([[0, 0, 2, 2], [1, 1, 3, 3]]), np.ones(2), np.zeros(2)))
    stage.close(RunEnd("completed", identities={"online": {("c0", 5): 1, ("c0", 6): 2}, "offline": {("c0", 5): 9}}))
    assert [x.split(",")[1] for x in (tmp_path / "mot" / "c0.txt").read_text().splitlines()] == ["9", "10"]
    assert [x.split(",")[1] for x in (tmp_path / "mot_online" / "c0.txt").read_text().splitlines()] == ["1", "2"]
    assert [x.split(",")[1] for x in (tmp_path / "mot_local" / "c0.txt").read_text().splitlines()] == ["5", "6"]


@pytest.mark.parametrize("mode", ["per_camera", "mosaic"])
def test_video_stage_draws_ids_and_actions_from_the_tracks(tmp_path, mode):
    from pipeline.video_output import AnnotatedVideoStage

    def tracks_of(cam, k):
        return Tracks(np.array([1]), np.array([[10, 8, 40, 44]], np.float32), np.ones(1), np.zeros(1),
                      global_ids=np.array([4 if k >= 2 else -1]), current_actions=["walking" if k >= 4 else None],
                      current_action_scores=np.array([0.75], np.float32))

    stage = AnnotatedVideoStage(mode)
    drawn = stage.annotate(Frame("c0", 5, 0.5, np.zeros((48, 64, 3), np.uint8)), tracks_of("c0", 5))
    assert drawn[8, 25].any() and not drawn[30, 25].any()  # the box edge is drawn, its inside left alone
    _drive([stage], RunInfo(None, tmp_path), frames_per_camera=6, tracks_of=tracks_of)
    files = sorted(p.name for p in (tmp_path / "video").iterdir())
    assert files == (["c0.mp4", "c1.mp4"] if mode == "per_camera" else ["mosaic.mp4"])
    cap = cv2.VideoCapture(str(tmp_path / "video" / files[0]))
    n, size = 0, None
    while True:
        ok, img = cap.read()
        if not ok:
            break
        n, size = n + 1, img.shape[:2]
    cap.release()
    assert n == 6 and size == ((48, 64) if mode == "per_camera" else (48, 128))
    assert stage.frames_written == (12 if mode == "per_camera" else 6)
