"""Action events: hysteresis and minimum duration, the motion source, the sink's outputs (store, jsonl, MQTT)."""

import json
import socket
import threading
import time

import numpy as np
import pytest

from pipeline.config import EventsConfig, parse_config
from pipeline.events import ActionStateMachine, HysteresisParams, MotionParams, MotionSource
from pipeline.events.stage import ActionEventStage, resolve_source
from pipeline.stages import RunEnd, RunInfo
from core.types import Frame, Tracks

FPS = 10.0


def _machine(**kw):
    params = HysteresisParams(**{"enter": 0.6, "exit": 0.4, "min_duration_s": 1.0, "smoothing_s": 0.0, **kw})
    return ActionStateMachine("c0", 7, ["walking", "running"], "model", params)


def _feed(machine, series):
    """Feed (walking score) per frame at FPS; returns every event, including those closed by `finish`."""
    events = []
    for k, p in enumerate(series):
        events += machine.update(k / FPS, k, np.array([p, 0.0]))
    return events + machine.finish()


def test_enter_and_exit_thresholds_give_one_event_with_its_span_and_confidences():
    series = [0.1] * 5 + [0.7, 0.9, 0.5, 0.45, 0.5] + [0.8] * 10 + [0.3] * 5
    (ev,) = _feed(_machine(), series)
    assert ev.action == "walking" and ev.camera_id == "c0" and ev.track_id == 7 and ev.source == "model"
    assert (ev.start_frame, ev.end_frame) == (5, 19)  # 0.5/0.45 stay above exit: no split
    assert ev.start_ts == pytest.approx(0.5) and ev.end_ts == pytest.approx(1.9)
    assert ev.peak_conf == pytest.approx(0.9)
    assert ev.mean_conf == pytest.approx(np.mean(series[5:20]))
    assert ev.frames == 15 and ev.clips == 6  # distinct score vectors: 0.7 0.9 0.5 0.45 0.5 0.8


def test_score_between_thresholds_does_not_start_an_event():
    assert _feed(_machine(), [0.55] * 40) == []


def test_dip_below_exit_splits_into_two_events():
    events = _feed(_machine(), [0.9] * 15 + [0.2] + [0.9] * 15)
    assert [(e.start_frame, e.end_frame) for e in events] == [(0, 14), (16, 30)]


def test_episode_shorter_than_min_duration_is_dropped():
    assert _feed(_machine(), [0.1] * 3 + [0.9] * 9 + [0.1] * 3) == []  # 0.8 s < 1 s
    (ev,) = _feed(_machine(), [0.1] * 3 + [0.9] * 11 + [0.1] * 3)  # 1.0 s
    assert ev.duration_s == pytest.approx(1.0)
    assert _feed(_machine(min_duration_s=0.0), [0.9]) != []


def test_open_episode_is_closed_by_finish_and_reported_as_started_once_confirmed():
    m = _machine()
    for k in range(12):
        m.update(k / FPS, k, np.array([0.9, 0.0]))
    assert m.current() == ("walking", pytest.approx(0.9))
    assert m.pop_started() == [("walking", 0.0)] and m.pop_started() == []
    (ev,) = m.finish()
    assert ev.end_frame == 11


def test_nan_scores_leave_the_state_alone():
    m = _machine()
    series = [0.9] * 6 + [np.nan] * 6 + [0.9] * 6
    events = []
    for k, p in enumerate(series):
        events += m.update(k / FPS, k, np.array([p, np.nan]))
    (ev,) = events + m.finish()
    assert (ev.start_frame, ev.end_frame, ev.frames) == (0, 17, 12)


def test_smoothing_delays_entry_and_removes_a_one_frame_spike():
    assert _feed(_machine(smoothing_s=0.5, min_duration_s=0.0), [0.0] * 5 + [1.0] + [0.0] * 5) == []
    (ev,) = _feed(_machine(smoothing_s=0.3, min_duration_s=0.0), [0.0] * 5 + [1.0] * 20)
    assert ev.start_frame > 5


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError):
        HysteresisParams(enter=0.3, exit=0.5)
    with pytest.raises(Exception, match="exit"):
        EventsConfig(enter=0.3, exit=0.5)


def _walk(source, speed_hps, seconds=2.0, height=100.0, fps=FPS):
    out = None
    for k in range(int(seconds * fps)):
        x = 100 + speed_hps * height * k / fps
        out = source.update(k / fps, np.array([1]), np.array([[x, 50, x + 40, 50 + height]]))
    return out[0]


def test_motion_source_standing_walking_running_from_box_height_speed():
    names = ["standing", "walking", "running"]
    for speed, expected in [(0.0, "standing"), (0.05, "standing"), (0.6, "walking"), (3.0, "running")]:
        scores = _walk(MotionSource(MotionParams()), speed)
        assert scores.sum() == pytest.approx(1.0, abs=1e-5)
        assert names[int(np.argmax(scores))] == expected, (speed, scores)
    src = MotionSource(MotionParams())
    first = src.update(0.0, np.array([1]), np.array([[0, 0, 10, 50]]))
    assert np.isnan(first).all()  # no history yet


def test_motion_source_uses_the_ground_plane_with_a_homography():
    h = np.diag([0.01, 0.01, 1.0])  # 1 px = 1 cm on the ground; units = metres
    src = MotionSource(MotionParams(walk_mps=0.4, run_mps=2.5), homography=h)
    fast = None
    for k in range(20):  # 300 px/s = 3 m/s, with a tiny box: box-height speed would be absurd
        x = 300 * k / FPS
        fast = src.update(k / FPS, np.array([1]), np.array([[x, 0, x + 2, 5]]))
    assert int(np.argmax(fast[0])) == 2
    assert src.speed(1) == pytest.approx(3.0, rel=1e-3)


def test_motion_source_does_not_read_a_far_walker_as_a_runner():
    """A person walks at 1.2 m/s straight away from a pinhole camera (3 m high, pitched 35 degrees down) whose
    homography was fitted 3 degrees off in pitch (a calibration good near the camera, extrapolated beyond). 4 m out,
    the ground plane gives the speed (walking, within 0.3 m/s). 25 m out, where 2 px of foot point cover more than a
    metre of floor, the ground speed read through that homography is a runner's; the source falls back to the
    scale-free image speed (box-heights/s with the depth term) and says walking."""
    from tests.test_fusion import pinhole_ground_homography

    true_ground_to_img = np.linalg.inv(pinhole_ground_homography((0.0, 0.0), 90.0, pitch_deg=35.0))
    fitted = pinhole_ground_homography((0.0, 0.0), 90.0, pitch_deg=32.0)  # image px -> ground m, 3 degrees off
    names = ["standing", "walking", "running"]
    for start_y, far in ((4.0, False), (25.0, True)):
        src = MotionSource(MotionParams(), homography=fitted, image_height=288)
        scores = None
        for k in range(int(1.5 * FPS)):
            y = start_y + 1.2 * k / FPS
            feet = true_ground_to_img @ np.array([0.0, y, 1.0])
            foot = feet[:2] / feet[2]
            height_px = 300.0 * 1.7 / np.hypot(y, 3.0)  # f x 1.7 m / distance
            box = [foot[0] - height_px / 5, foot[1] - height_px, foot[0] + height_px / 5, foot[1]]
            scores = src.update(k / FPS, np.array([1]), np.array([box]))
        speed, on_ground = src._speed(1)
        assert on_ground is not far, (start_y, speed)
        assert names[int(np.argmax(scores[0]))] == "walking", (start_y, speed, scores)
        hist = src._history[1]  # the ground points the source keeps: what the ground plane alone would say
        ground_mps = np.polyfit([h[0] for h in hist], [h[2] for h in hist], 1)[0]
        if far:
            assert ground_mps > MotionParams().run_mps, ground_mps  # the premise: on the ground plane, a runner
        else:
            assert speed == pytest.approx(ground_mps) and abs(speed - 1.2) < 0.3, speed


def _frame(k, cam="c0"):
    return Frame(cam, k, k / FPS, np.zeros((4, 4, 3), np.uint8))


def _stage(cfg, output_dir=None, action_names=(), run_id=None, **kwargs) -> ActionEventStage:
    stage = ActionEventStage(cfg, keep_events=True, **kwargs)
    stage.open(RunInfo(run_id, output_dir, action_names=tuple(action_names)))
    return stage


def test_sink_model_source_reads_action_probs_and_writes_jsonl(tmp_path):
    cfg = EventsConfig(min_duration_s=0.5, smoothing_s=0.0)
    sink = _stage(cfg, tmp_path, ["walking", "running"], run_id=7)
    for k in range(30):
        probs = np.array([[0.9, 0.1], [np.nan, np.nan]]) if k < 20 else np.array([[0.1, 0.9], [0.1, 0.1]])
        tracks = Tracks(np.array([1, 2]), np.array([[0, 0, 10, 20]] * 2), np.ones(2), np.zeros(2), action_probs=probs,
                        global_ids=np.array([42, -1]))
        sink.on_frame(_frame(k), tracks)
    assert tracks.current_actions == ["running", None]  # written onto the tracks for later stages
    assert tracks.current_action_scores[0] == pytest.approx(0.9) and np.isnan(tracks.current_action_scores[1])
    end = RunEnd("completed")
    sink.close(end)
    assert sorted(e.action for e in end.action_events) == ["running", "walking"]  # handed on to the store
    events = sorted((e.action, e.global_id, e.start_frame, e.end_frame) for e in sink.events)
    assert events == [("running", 42, 20, 29), ("walking", 42, 0, 19)]
    lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert {x["run_id"] for x in lines} == {7}
    assert {(x["action"], x["global_id"], x["source"]) for x in lines} == {("walking", 42, "model"),
                                                                          ("running", 42, "model")}
    assert sink.counters() == {"source": "model", "events": 2, "by_action": {"walking": 1, "running": 1}}


def test_sink_motion_source_closes_events_of_tracks_that_ended(tmp_path):
    cfg = EventsConfig(min_duration_s=0.5, smoothing_s=0.2, track_end_s=1.0)
    sink = _stage(cfg)
    assert sink.source == "motion" and sink.action_names == ["standing", "walking", "running"]
    for k in range(30):  # track 5 stands still for 3 s
        sink.on_frame(_frame(k), Tracks(np.array([5]), np.array([[10, 10, 50, 110]]), np.ones(1), np.zeros(1)))
    for k in range(30, 50):  # then only other tracks: track 5 ends after track_end_s
        sink.on_frame(_frame(k), Tracks.empty())
    assert [(e.action, e.track_id, e.global_id, e.source) for e in sink.events] == [("standing", 5, None, "motion")]
    assert ("c0", 5) not in sink.machines
    sink.close(RunEnd("completed"))


def test_sink_episode_goes_on_across_tracklet_cuts_reported_per_tracklet():
    # a person walks right at 0.5 box-heights/s; TrackletSplitter cut the camera's track 7 into tracklets 11 and 12
    cfg = EventsConfig(min_duration_s=0.5, smoothing_s=0.2, track_end_s=1.0)
    sink = _stage(cfg)
    for k in range(40):
        x = 10 + 5.0 * k
        tracklet = 11 if k < 20 else 12
        tracks = Tracks(np.array([tracklet]), np.array([[x, 10, x + 40, 110]]), np.ones(1), np.zeros(1),
                        view_ids=np.array([7]), global_ids=np.array([3 if tracklet == 11 else -1]))
        sink.on_frame(_frame(k), tracks)
        assert tracks.current_actions[0] in (None, "walking")
        if k >= 20:  # the episode goes on across the cut, still confirmed: no re-confirmation delay
            assert tracks.current_actions[0] == "walking"
    sink.close(RunEnd("completed"))
    events = [(e.action, e.track_id, e.global_id, e.start_frame, e.end_frame) for e in sink.events]
    # each part names its own tracklet and that tracklet's global id, within the tracklet's frames (11: 0-19, 12: 20-39)
    assert len(events) == 2, events
    assert events[0][:3] == ("walking", 11, 3) and events[0][4] <= 19
    assert events[1] == ("walking", 12, None, 20, 39)


def test_source_resolution():
    assert resolve_source("auto", ["walking"]) == "model"
    assert resolve_source("auto", None) == "motion"
    assert resolve_source("motion", ["walking"]) == "motion"
    with pytest.raises(ValueError, match="trained action branch"):
        resolve_source("model", [])


def test_config_defaults_and_video_switch():
    cfg = parse_config({"cameras": [{"id": "a", "source": "x.mp4"}], "output": {"video": "mosaic"}})
    assert cfg.events.enabled and cfg.events.source == "auto" and cfg.events.mqtt_url is None
    assert cfg.output.video == "mosaic"


def _broker_up(host="127.0.0.1", port=1883) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_events_are_published_over_mqtt():
    if not _broker_up():
        pytest.skip("no MQTT broker on 127.0.0.1:1883 (start mosquitto to run this test)")
    import paho.mqtt.client as mqtt

    from pipeline.events.mqtt import MqttPublisher

    topic = f"mcsa-test/{time.time_ns()}"
    got, subscribed = [], threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{topic}/#", qos=1)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, m: got.append((m.topic, json.loads(m.payload)))
    sub.connect("127.0.0.1", 1883)
    sub.loop_start()
    try:
        assert subscribed.wait(5)
        cfg = EventsConfig(min_duration_s=0.2, smoothing_s=0.0)
        sink = _stage(cfg, None, ["walking"], publisher=MqttPublisher("mqtt://127.0.0.1:1883", topic))
        for k in range(10):
            p = np.array([[0.9 if k < 6 else 0.1]])
            sink.on_frame(_frame(k, "door"), Tracks(np.array([3]), np.zeros((1, 4)), np.ones(1), np.zeros(1),
                                                    action_probs=p))
        sink.close(RunEnd("completed"))
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert [(t, m["type"], m["action"]) for t, m in got] == [(f"{topic}/door", "start", "walking"),
                                                             (f"{topic}/door", "end", "walking")]
    assert got[1][1]["end_ts"] == pytest.approx(0.5)
