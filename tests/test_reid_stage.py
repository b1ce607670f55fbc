"""The Re-ID stage: cropper gates and memory bound, deterministic clip sampling, batching equal to per-clip inference,
routing across many cameras, back-pressure, and a real pipeline run that stores embeddings."""

from __future__ import annotations

import random
import sqlite3

import numpy as np
import pytest
import torch

from models.reid import ReIDAR
from pipeline.reid import ClipEncoder, ClipRequest, ReIDBatcher, TrackAppearance, TrackletCropper
from pipeline.reid.cropper import covered_fraction, sample_indices
from core.types import Frame, Tracks

SIZE = (64, 32)  # small crops keep the real network fast in tests


@pytest.fixture(scope="module")
def encoder() -> ClipEncoder:
    torch.manual_seed(0)
    model = ReIDAR("osnet_x0_25", num_classes=1, action_names=["walking", "standing"], input_size=SIZE)
    return ClipEncoder.from_model(model, device="cpu")


def _frame(cam="c0", index=0, h=288, w=360, seed=0):
    rng = np.random.default_rng(seed + index)
    return Frame(cam, index, index / 25.0, rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _tracks(ids, boxes):
    n = len(ids)
    return Tracks(np.array(ids), np.array(boxes, np.float32).reshape(n, 4), np.ones(n), np.zeros(n))


def _clip(cam, tid, seed, has_embedding=False):
    rng = np.random.default_rng(seed)
    crops = rng.integers(0, 255, (4, *SIZE, 3), dtype=np.uint8)
    return ClipRequest(cam, tid, crops, np.arange(4) * 0.04 + seed, np.zeros((4, 4), np.float32), 1.0,
                       has_embedding=has_embedding)


def test_quality_gates_skip_small_border_and_covered_boxes():
    cropper = TrackletCropper(camera_id="c0", input_size=SIZE, clip_len=2, clip_every=1, min_box_height=40)
    boxes = [
        [100, 100, 130, 180],  # good
        [10, 10, 20, 30],  # too small
        [0, 50, 30, 150],  # cut by the left border
        [200, 100, 240, 200],  # covered by the next box
        [195, 95, 245, 205],  # covers the previous one (is itself covered only ~65 %)
    ]
    out = cropper.on_tracks(_frame(), _tracks([1, 2, 3, 4, 5], boxes))
    assert sorted(r.track_id for r in out) == [1]
    assert cropper.crops_rejected == 4
    np.testing.assert_allclose(covered_fraction(np.array(boxes[3:], np.float32))[0], 1.0)


def test_clips_periodic_and_at_track_end_with_spread_sampling():
    cropper = TrackletCropper(camera_id="c0", input_size=SIZE, clip_len=4, clip_every=10, window=16, end_after_frames=5)
    emitted = []
    for i in range(25):
        emitted += cropper.on_tracks(_frame(index=i), _tracks([7], [[100 + i, 100, 140 + i, 190]]))
    assert [r.reason for r in emitted] == ["periodic", "periodic"]
    last = emitted[-1]
    assert last.crops.shape == (4, *SIZE, 3) and last.crops.dtype == np.uint8
    # 16 buffered crops of frames 4..19 -> evenly spread picks, first and last included
    np.testing.assert_allclose(last.timestamps_s, np.array([4, 9, 14, 19]) / 25.0)
    for i in range(25, 32):  # the track is gone: it ends after end_after_frames
        emitted += cropper.on_tracks(_frame(index=i), _tracks([], []))
    assert emitted[-1].reason == "end" and emitted[-1].timestamps_s[-1] == pytest.approx(24 / 25.0)
    assert cropper.buffered_tracks == 0


def test_clip_sampling_is_deterministic():
    assert sample_indices(16, 4).tolist() == [0, 5, 10, 15]
    assert sample_indices(2, 4).tolist() == [0, 0, 1, 1]
    runs = []
    for _ in range(2):
        cropper = TrackletCropper(camera_id="c0", input_size=SIZE, clip_every=5)
        out = []
        for i in range(10):
            out += cropper.on_tracks(_frame(index=i, seed=3), _tracks([1], [[50, 50, 90, 150]]))
        runs.append(out)
    assert len(runs[0]) == len(runs[1]) == 2
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a.crops, b.crops)


def test_cropper_memory_is_bounded_with_many_tracks():
    cropper = TrackletCropper(camera_id="c0", input_size=SIZE, window=8, max_tracks=32, clip_every=1000, end_after_frames=10**6)
    rng = np.random.default_rng(0)
    for i in range(60):  # 20 new tracks every frame, 1200 tracks in all
        ids = np.arange(i * 20, i * 20 + 20)
        x = rng.uniform(0, 300, 20)
        boxes = np.stack([x, np.full(20, 50.0), x + 40, np.full(20, 150.0)], 1)
        cropper.on_tracks(_frame(index=i), _tracks(ids, boxes))
        assert cropper.buffered_tracks <= 32 and cropper.buffered_crops <= 32 * 8


def test_batched_result_equals_per_clip_result(encoder):
    clips = [_clip("c0", i, seed=i) for i in range(6)]
    batched_emb, batched_probs = encoder.encode(np.stack([c.crops for c in clips]))
    for i, c in enumerate(clips):
        emb, probs = encoder.encode(c.crops[None])
        np.testing.assert_allclose(emb[0], batched_emb[i], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(probs[0], batched_probs[i], rtol=1e-4, atol=1e-4)
    assert batched_emb.shape == (6, encoder.embedding_dim) and batched_probs.shape == (6, 2)


def test_routing_with_many_cameras_and_shuffled_order(encoder):
    requests = [_clip(f"cam{c}", t, seed=100 * c + t) for c in range(12) for t in range(4)]
    expected = {r.key: encoder.encode(r.crops[None])[0][0] for r in requests}
    random.Random(1).shuffle(requests)
    batcher = ReIDBatcher(encoder, max_batch=5, max_wait_ms=5).start()
    for r in requests:
        batcher.submit(r)
    results = batcher.drain(timeout=120)
    batcher.stop()
    assert len(results) == len(requests) and batcher.stats.batches >= len(requests) // 5
    appearances = {f"cam{c}": TrackAppearance(f"cam{c}") for c in range(12)}
    for res in results:
        np.testing.assert_allclose(res.embedding, expected[res.key], rtol=1e-4, atol=1e-4)
        appearances[res.camera_id].update(res)
    assert all(len(a.tracks) == 4 for a in appearances.values())


def test_back_pressure_drops_clips_of_tracks_with_an_embedding_first(encoder):
    batcher = ReIDBatcher(encoder, max_batch=4, max_queue=4)  # not started: clips pile up
    for i in range(4):
        batcher.submit(_clip("c0", i, seed=i, has_embedding=(i % 2 == 0)))
    batcher.submit(_clip("c0", 10, seed=10))
    batcher.submit(_clip("c0", 11, seed=11))
    assert batcher.stats.dropped == 2 and batcher.stats.dropped_with_embedding == 2
    batcher.start()
    kept = sorted(r.track_id for r in batcher.drain(timeout=60))
    batcher.stop()
    assert kept == [1, 3, 10, 11]


def test_appearance_is_a_quality_weighted_normalised_mean():
    from pipeline.reid import ClipResult

    app = TrackAppearance("c0")
    app.update(ClipResult("c0", 1, np.array([2.0, 0.0], np.float32), np.array([0.9]), 0, 1, quality=1.0))
    state = app.update(ClipResult("c0", 1, np.array([0.0, 5.0], np.float32), np.array([0.2]), 1, 2, quality=0.5))
    np.testing.assert_allclose(state.embedding, np.array([2, 1]) / np.sqrt(5), rtol=1e-6)
    assert state.n_clips == 2 and state.action_probs[0] == pytest.approx(0.2)
    probs = app.action_probs_for(np.array([1, 9]), 1)
    assert probs[0, 0] == pytest.approx(0.2) and np.isnan(probs[1]).all()
    with pytest.raises(ValueError):
        app.update(ClipResult("c1", 1, np.ones(2), np.ones(1), 0, 1, 1.0))


def test_pipeline_stores_an_embedding_for_every_confirmed_track(shared, yolo_weights, tmp_path):
    from pipeline.config import load_config
    from core.paths import REPO_ROOT
    from pipeline.runner import Pipeline

    cfg = load_config(REPO_ROOT / "configs" / "epfl_terrace.yaml")
    data = cfg.model_dump()
    for cam in data["cameras"]:
        cam["max_frames"] = 200  # people are in view from frame ~70 (c1) and ~120 (c0)
    data["run"]["progress"] = False
    summary = Pipeline(type(cfg).model_validate(data), tmp_path).run()
    assert summary.exit_code == 0, summary.table()
    assert summary.reid["processed"] > 0 and summary.reid["dropped"] == 0
    con = sqlite3.connect(tmp_path / "events.db")
    rows = con.execute("select camera_id, track_id, n_boxes, embedding, embedding_dim, n_clips from tracks").fetchall()
    long_tracks = [r for r in rows if r[2] > 10]  # lived longer than one clip (clip_every = 10 frames)
    assert long_tracks
    for cam, tid, n, emb, dim, n_clips in long_tracks:
        assert emb is not None and n_clips >= 1, f"track {cam}/{tid} ({n} boxes) has no embedding"
        vec = np.frombuffer(emb, np.float32)
        assert vec.shape == (dim,) and np.isfinite(vec).all() and abs(np.linalg.norm(vec) - 1) < 1e-3
    assert con.execute("select count(*) from track_clips").fetchone()[0] == summary.reid["processed"]


def test_missing_or_wrong_reid_weights_give_one_clear_line(tmp_path):
    from pipeline.reid import ReIDLoadError

    with pytest.raises(ReIDLoadError, match="not found") as err:
        ClipEncoder(None, "osnet_x0_25", str(tmp_path / "nope.pth"), SIZE, device="cpu")
    assert "\n" not in str(err.value)
    bad = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, bad)
    with pytest.raises(ReIDLoadError) as err:
        ClipEncoder(None, "osnet_x0_25", str(bad), SIZE, device="cpu")
    assert "\n" not in str(err.value) and "resnet.pth" in str(err.value)
    with pytest.raises(ReIDLoadError, match="checkpoint not found"):
        ClipEncoder(str(tmp_path / "missing.pt"), device="cpu")


def test_detection_embedder_batches_all_cameras_and_skips_weak_boxes(encoder):
    from pipeline.reid.detection_embedder import DetectionEmbedder
    from core.types import Detections

    frames = [_frame("c0", 0), _frame("c1", 0, seed=5)]
    dets = [
        Detections(np.array([[10, 10, 60, 120], [100, 50, 140, 150], [5, 5, 9, 12]], np.float32),
                   np.array([0.9, 0.2, 0.9]), np.zeros(3)),
        Detections(np.array([[200, 20, 260, 200]], np.float32), np.array([0.8]), np.zeros(1)),
    ]
    embedder = DetectionEmbedder(encoder, min_score=0.3, min_box_height=24)
    out = embedder.embed(frames, dets)
    assert [o.shape for o in out] == [(3, encoder.embedding_dim), (1, encoder.embedding_dim)]
    assert np.isfinite(out[0][0]).all() and np.isnan(out[0][1]).all() and np.isnan(out[0][2]).all()
    assert embedder.crops_embedded == 2
    from pipeline.reid.cropper import crop_resize

    single = encoder.encode(crop_resize(frames[1].image, dets[1].xyxy[0], SIZE)[None, None])[0][0]
    np.testing.assert_allclose(out[1][0], single, rtol=1e-4, atol=1e-4)


def test_appearance_cost_prevents_identity_transfer_between_swapped_people():
    """Two people vanish (occluded) and reappear at each other's place: IoU alone hands each id to the other person;
    with the appearance cost, neither id goes to the wrong person."""
    from pipeline.tracking import build_tracker_from_config
    from core.types import Detections

    a_box, b_box = [100, 100, 140, 200], [150, 100, 190, 200]
    e_a, e_b = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[1]
    image = np.zeros((288, 360, 3), np.uint8)

    def run(weight: float) -> dict[str, set[int]]:
        tracker = build_tracker_from_config("mcsa", {"appearance_weight": weight})
        ids = {"A": set(), "B": set()}
        for f in range(30):
            if 10 <= f < 14:  # both occluded
                tracks = tracker.update(Detections.empty(), image, embeddings=np.zeros((0, 8), np.float32))
                continue
            swapped = f >= 14
            boxes = [b_box, a_box] if swapped else [a_box, b_box]  # row 0 is A, row 1 is B
            dets = Detections(np.array(boxes, np.float32), np.array([0.9, 0.9]), np.zeros(2))
            tracks = tracker.update(dets, image, embeddings=np.stack([e_a, e_b]))
            for tid, box in zip(tracks.track_ids.tolist(), tracks.xyxy.tolist()):
                who = ("A" if box[0] == b_box[0] else "B") if swapped else ("A" if box[0] == a_box[0] else "B")
                ids[who].add(tid)
        return ids

    plain = run(0.0)
    assert plain["A"] & plain["B"], "IoU-only tracking should transfer ids in this scripted case"
    with_app = run(0.3)
    assert not (with_app["A"] & with_app["B"]), f"an id moved between people: {with_app}"


def test_appearance_cost_needs_the_reid_stage(shared, yolo_weights, tmp_path):
    from pipeline.config import load_config
    from core.paths import REPO_ROOT
    from pipeline.runner import Pipeline

    cfg = load_config(REPO_ROOT / "configs" / "epfl_terrace.yaml")
    data = cfg.model_dump()
    data["reid"]["enabled"] = False
    data["tracker"]["params"] = {"appearance_weight": 0.3}
    with pytest.raises(ValueError, match="reid.enabled"):
        Pipeline(type(cfg).model_validate(data), tmp_path).run()


def test_pipeline_with_appearance_cost_on_real_frames(shared, yolo_weights, tmp_path):
    from pipeline.config import load_config
    from core.paths import REPO_ROOT
    from pipeline.runner import Pipeline

    cfg = load_config(REPO_ROOT / "configs" / "epfl_terrace.yaml")
    data = cfg.model_dump()
    data["cameras"] = data["cameras"][1:]
    data["cameras"][0]["max_frames"] = 120  # people are in view of c1 from frame ~70
    data["run"]["progress"] = False
    data["tracker"]["params"] = {"appearance_weight": 0.3}
    pipe = Pipeline(type(cfg).model_validate(data), tmp_path)
    summary = pipe.run()
    assert summary.exit_code == 0, summary.table()
    assert pipe._det_embedder is not None and pipe._det_embedder.crops_embedded > 0
    assert summary.cameras[0].track_ids


def test_encoder_from_a_trained_checkpoint_brings_its_actions_and_size(tmp_path):
    from models.reid.model import save_checkpoint

    torch.manual_seed(1)
    model = ReIDAR("osnet_x0_25", num_classes=3, action_names=["walking", "running"], input_size=SIZE)
    path = save_checkpoint(tmp_path / "reid_ar.pt", model, epoch=1)
    enc = ClipEncoder(str(path), input_size=(256, 128), device="cpu")  # the checkpoint's size wins
    assert enc.action_names == ["walking", "running"] and enc.actions_trained and enc.input_size == SIZE
    clips = np.random.default_rng(0).integers(0, 255, (2, 4, *SIZE, 3), dtype=np.uint8)
    emb, probs = enc.encode(clips)
    ref = ClipEncoder.from_model(model, device="cpu").encode(clips)
    np.testing.assert_allclose(emb, ref[0], rtol=1e-4, atol=1e-4)
    assert probs.shape == (2, 2) and ((probs >= 0) & (probs <= 1)).all()


def test_openvino_cpu_backend_equals_pytorch(tmp_path, monkeypatch):
    pytest.importorskip("openvino", reason="the OpenVINO CPU backend needs the `openvino` package")
    monkeypatch.setenv("MCSA_CACHE", str(tmp_path))
    torch.manual_seed(2)
    for actions in (["walking", "running"], []):
        model = ReIDAR("osnet_x0_25", num_classes=1, action_names=actions, input_size=SIZE)
        ref = ClipEncoder.from_model(model, device="cpu", cpu_backend="torch")
        ov = ClipEncoder.from_model(model, device="cpu", cpu_backend="openvino")
        assert ov.backend == "openvino cpu fp32" and ov.embedding_dim == ref.embedding_dim
        for b, t in [(3, 4), (1, 1), (5, 2)]:  # batch and clip length are dynamic
            clips = np.random.default_rng(b).integers(0, 255, (b, t, *SIZE, 3), dtype=np.uint8)
            (e1, p1), (e2, p2) = ref.encode(clips), ov.encode(clips)
            np.testing.assert_allclose(e2, e1, rtol=1e-4, atol=1e-5)
            assert p2.shape == p1.shape == (b, len(actions))
            np.testing.assert_allclose(p2, p1, rtol=1e-4, atol=1e-5)
    cached = sorted((tmp_path / "openvino").glob("reid_*.xml"))
    assert len(cached) == 2  # one converted model per distinct network, reused by the next encoder
    stamp = cached[-1].stat().st_mtime_ns
    again = ClipEncoder.from_model(model, device="cpu", cpu_backend="openvino")
    assert cached[-1].stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again.encode(clips)[0], ref.encode(clips)[0], rtol=1e-4, atol=1e-5)
