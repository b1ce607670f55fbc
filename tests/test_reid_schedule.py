"""The Re-ID clip schedule (`reid.schedule`): a track whose clip embeddings agree gets fewer clips, at growing intervals
in seconds up to the maximum; a disagreeing clip, a big box change or a contact with another track puts it back on
the full rate. Driven through the real `TrackletCropper`, on generated frames and on real PETS09 people with the real
OSNet x0.25 encoder."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.types import Frame, Tracks
from pipeline.config import ClipScheduleConfig, ReIDStageConfig
from pipeline.reid import TrackletCropper
from pipeline.reid.schedule import ClipSchedule

FPS = 25.0
SIZE = (64, 32)


def _frame(index: int) -> Frame:
    image = np.full((288, 360, 3), 90, np.uint8)
    image[:, :, index % 3] = 120 + index % 50  # something to crop
    return Frame("c0", index, index / FPS, image)


def _tracks(ids, boxes) -> Tracks:
    n = len(ids)
    return Tracks(np.array(ids), np.array(boxes, np.float32).reshape(n, 4), np.ones(n), np.zeros(n))


def _play(cropper: TrackletCropper, n_frames: int, boxes_at, embedding_at, start: int = 0) -> list:
    """Feeds frames start..start+n_frames-1; each clip's result (the embedding `embedding_at(frame)` gives) is fed
    back at once. Returns the frame indices at which a periodic clip was cut."""
    cut = []
    for i in range(start, start + n_frames):
        ids, boxes = boxes_at(i)
        for req in cropper.on_tracks(_frame(i), _tracks(ids, boxes)):
            if req.track_id == 1 and req.reason == "periodic":
                cut.append(i)
            cropper.on_result(req.track_id, embedding_at(i, req.track_id))
    return cut


STEADY = np.eye(8, dtype=np.float32)[0]


def _steady(i, tid):
    return STEADY + 0.01 * np.sin(np.arange(8) + i).astype(np.float32)  # agree: cosine ~0.9998


def _one_track(i):
    return [1], [[100, 60, 140, 180]]


def test_a_stable_track_gets_fewer_clips_at_growing_intervals_in_seconds():
    fixed = TrackletCropper(camera_id="c0", input_size=SIZE, clip_every=5)
    sched = ClipSchedule(agree_cos=0.95, first_interval_s=1.0, max_interval_s=4.0)
    adaptive = TrackletCropper(camera_id="c0", input_size=SIZE, clip_every=5, schedule=sched)
    n = int(20 * FPS)  # 20 s
    every = _play(fixed, n, _one_track, _steady)
    fewer = _play(adaptive, n, _one_track, _steady)
    assert len(every) == n // 5  # a clip every 0.2 s without the schedule
    gaps = np.diff(fewer) / FPS
    # first two clips at the full rate (the second is the first that can agree), then 1, 2, 4, 4, ... s
    assert gaps[0] == pytest.approx(0.2)
    np.testing.assert_allclose(gaps[1:4], [1.0, 2.0, 4.0])
    assert np.all(gaps[3:] == pytest.approx(4.0)) and len(fewer) < len(every) / 10
    assert sched.skipped == len(every) - len(fewer)


def test_a_disagreeing_clip_a_box_change_or_a_contact_resets_the_rate():
    cfg = ClipScheduleConfig()
    for reset in ("embedding", "size", "contact"):
        sched = ClipSchedule(agree_cos=cfg.agree_cos, first_interval_s=cfg.first_interval_s,
                             max_interval_s=cfg.max_interval_s, box_change=cfg.box_change,
                             contact_overlap=cfg.contact_overlap)
        cropper = TrackletCropper(camera_id="c0", input_size=SIZE, clip_every=5, schedule=sched)
        cut = _play(cropper, 250, _one_track, _steady)  # 10 s: the track is stable, on long intervals
        assert sched.interval_s(1) >= 4.0 and np.diff(cut)[-1] / FPS >= 4.0
        other = np.eye(8, dtype=np.float32)[3]

        def boxes(i):
            if reset == "size":  # the box grows by half (a person walking closer, or a swap)
                return [1], [[100, 60, 160, 240]]
            if reset == "contact":  # another track covers a third of it
                return [1, 2], [[100, 60, 140, 180], [127, 60, 167, 180]]
            return _one_track(i)

        def embedding(i, tid):
            return other if reset == "embedding" and tid == 1 else _steady(i, tid)

        if reset == "embedding":  # the next clip (after the long interval) disagrees: the full rate comes back
            after = _play(cropper, 300, boxes, embedding, start=250)
            assert np.isclose(np.diff(after) / FPS, 0.2).any(), after
            assert sched.resets >= 1
        elif reset == "size":  # a clip at the next periodic chance; it agrees: the new size is the reference
            after = _play(cropper, 30, boxes, embedding, start=250)
            assert after and after[0] - 250 <= 5, after
            assert sched.resets == 1 and sched.interval_s(1) == cfg.first_interval_s and len(after) == 1
        else:  # every periodic chance while the contact lasts
            after = _play(cropper, 30, boxes, embedding, start=250)
            assert len(after) == 6 and np.isclose(np.diff(after) / FPS, 0.2).all(), after


def test_schedule_config_defaults_and_order():
    cfg = ReIDStageConfig()
    assert cfg.schedule.max_interval_s >= cfg.schedule.first_interval_s
    with pytest.raises(ValueError, match="max_interval_s"):
        ClipScheduleConfig(first_interval_s=5.0, max_interval_s=2.0)


def test_real_people_stable_track_gets_fewer_clips_and_a_contact_with_a_swap_resets(shared):
    """PETS09-S2L1 (7 fps), ground-truth boxes, the shipped OSNet x0.25: track 1 follows person 15 walking alone for
    6.4 s (frames 63-107) beside track 2 (person 19): fewer clips with the schedule. Then persons 15 and 19 meet
    (frames 108-112) and the tracks swap people there, as trackers do: the contact puts track 1 back on the full
    rate at once, and the swapped appearance keeps it there."""
    from pipeline.reid import ClipEncoder

    gt = np.loadtxt(shared / "data" / "pets09_s2l1" / "gt" / "gt.txt", delimiter=",")
    cap = cv2.VideoCapture(str(shared / "data" / "pets09_s2l1" / "vtest.avi"))
    frames = []
    while len(frames) < 131:
        ok, image = cap.read()
        assert ok, "cannot read PETS09"
        frames.append(image)
    cap.release()
    cfg = ReIDStageConfig()
    encoder = ClipEncoder(None, cfg.backbone, cfg.backbone_weights, cfg.input_size, device="cpu",
                          cpu_backend="torch", cpu_threads=1)

    def box(pid, index):
        row = gt[(gt[:, 0] == index + 1) & (gt[:, 1] == pid)][0]
        return [row[2], row[3], row[2] + row[4], row[3] + row[5]]

    def play(cropper, start, stop, people):
        cut = []
        for i in range(start, stop):
            frame = Frame("view001", i, i / 7.0, frames[i])
            for req in cropper.on_tracks(frame, _tracks([1, 2], [box(pid, i) for pid in people])):
                if req.track_id == 1:
                    cut.append(i)
                emb, _ = encoder.encode(req.crops[None])
                cropper.on_result(req.track_id, emb[0])
        return cut

    s = cfg.schedule
    sched = ClipSchedule(agree_cos=s.agree_cos, first_interval_s=s.first_interval_s, max_interval_s=s.max_interval_s,
                         box_change=s.box_change, contact_overlap=s.contact_overlap)
    kw = dict(camera_id="view001", input_size=tuple(cfg.input_size), clip_len=cfg.clip_len, clip_every=3,
              window=cfg.window, min_box_height=cfg.min_box_height)
    every = play(TrackletCropper(**kw), 62, 107, (15, 19))
    adaptive = TrackletCropper(**kw, schedule=sched)
    fewer = play(adaptive, 62, 107, (15, 19))
    assert len(every) == 15 and len(fewer) <= len(every) / 2, (every, fewer)
    assert sched.interval_s(1) >= s.first_interval_s and sched.resets == 0
    swap = play(adaptive, 107, 131, (19, 15))  # 0-based frame 107 = ground-truth frame 108
    assert swap and swap[0] - 107 < 3 and sched.resets >= 1, swap  # the next periodic chance
    assert len(swap) >= 3, swap  # not back on long intervals: the swapped appearance disagrees


def test_a_result_steers_the_schedule_only_after_the_result_lag():
    """A clip result counts from `result_lag_s` seconds and `result_lag_frames` frames after its clip was cut (what
    lets a Ray camera actor run ahead of the model and still cut the local engine's clips), never sooner."""
    sched = ClipSchedule(agree_cos=0.9, first_interval_s=2.0, max_interval_s=8.0, result_lag_s=1.0,
                         result_lag_frames=4)
    box = np.array([100, 60, 140, 180], np.float32)
    for frame, t in ((0, 0.0), (10, 0.4)):  # two clips of track 1 that agree, results back at once
        sched.emitted(1, t, box)
        assert sched.on_result(1, STEADY, cut_frame=frame, cut_t_s=t) is None  # waits
    sched.advance(5, 0.2)
    assert sched.interval_s(1) == 0.0  # nothing visible yet: the full rate
    sched.advance(3, 5.0)
    assert sched.interval_s(1) == 0.0  # time has passed, but not 4 frames since the first clip
    sched.advance(25, 1.0)  # the first result is visible (a single clip: still the full rate)
    assert sched.interval_s(1) == 0.0 and len(sched._pending) == 1
    sched.advance(35, 1.4)  # the second one too: the pair agrees
    assert sched.interval_s(1) == 2.0 and not sched._pending
    now = ClipSchedule(agree_cos=0.9, first_interval_s=2.0)  # no lag: at once (and without the cut)
    now.emitted(1, 0.0, box)
    now.on_result(1, STEADY)
    now.emitted(1, 0.4, box)
    assert now.on_result(1, STEADY, cut_frame=10, cut_t_s=0.4) == pytest.approx(1.0)
    assert now.interval_s(1) == 2.0
