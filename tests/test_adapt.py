"""Site adaptation (issue #18): mining on a scripted two-camera scene, motion labels, and a tiny real adapt run."""

from __future__ import annotations

import shutil
from itertools import combinations

import numpy as np
import pytest
import yaml

from core.paths import REPO_ROOT, shared_dir
from pipeline.adapt.mining import CameraTracks, mine_identities
from pipeline.adapt.motion_labels import motion_state, track_speeds
from pipeline.config import AdaptMiningConfig

FPS = 25.0
# camera A: image px = ground cm (homography = identity, 100 units per metre); camera B sees the same floor shifted
H_A = np.eye(3)
H_B = np.array([[1.0, 0.0, 300.0], [0.0, 1.0, -50.0], [0.0, 0.0, 1.0]])  # image px of B -> ground cm


def _track(camera_h: np.ndarray, tid: int, frames: np.ndarray, ground_cm: np.ndarray, noise_cm: float, rng):
    """MOT rows of a person whose feet are at ground_cm (N, 2), seen by a camera with image->ground homography."""
    inv = np.linalg.inv(camera_h)
    g = ground_cm + rng.normal(0, noise_cm, ground_cm.shape)
    p = np.c_[g, np.ones(len(g))] @ inv.T
    foot = p[:, :2] / p[:, 2:3]
    w, h = 40.0, 100.0
    return np.c_[frames, np.full(len(frames), tid), foot[:, 0] - w / 2, foot[:, 1] - h, np.full(len(frames), w),
                 np.full(len(frames), h)]


def _camera(name: str, h: np.ndarray, rows: list[np.ndarray]) -> CameraTracks:
    from core.geometry import to_ground

    arr = np.concatenate(rows)
    xyxy = np.c_[arr[:, 2:4], arr[:, 2:4] + arr[:, 4:6]]
    return CameraTracks(name, arr, FPS, to_ground(h, xyxy) / 100.0)


def _walk(frames: np.ndarray, start_cm, velocity_cm_s) -> np.ndarray:
    t = (frames - frames[0]) / FPS
    return np.asarray(start_cm, float) + t[:, None] * np.asarray(velocity_cm_s, float)


@pytest.fixture()
def scene():
    """P1 and P2 walk side by side 3 m apart through both views for 8 s; camera A's tracker cuts P1 in two (a gap of
    0.3 s); P3 stands alone in camera A only; P4 and P5 walk 0.4 m apart (too close to tell apart by position)."""
    rng = np.random.default_rng(0)
    f = np.arange(1, 201)
    p1, p2 = _walk(f, (0, 0), (100, 0)), _walk(f, (0, 300), (100, 0))
    f4 = np.arange(260, 400)
    p4, p5 = _walk(f4, (0, 800), (120, 0)), _walk(f4, (0, 840), (120, 0))
    cut = (f < 90) | (f > 97)
    a = _camera("A", H_A, [
        _track(H_A, 1, f[f < 90], p1[f < 90], 10, rng), _track(H_A, 3, f[f > 97], p1[f > 97], 10, rng),
        _track(H_A, 2, f, p2, 10, rng),
        _track(H_A, 4, np.arange(210, 300), np.tile([[900.0, 900.0]], (90, 1)), 5, rng),
        _track(H_A, 5, f4, p4, 10, rng), _track(H_A, 6, f4, p5, 10, rng)])
    b = _camera("B", H_B, [
        _track(H_B, 7, f, p1, 15, rng), _track(H_B, 8, f, p2, 15, rng),
        _track(H_B, 9, f4, p4, 15, rng), _track(H_B, 10, f4, p5, 15, rng)])
    assert cut.sum() < len(f)
    truth = {("A", 1): 1, ("A", 3): 1, ("B", 7): 1, ("A", 2): 2, ("B", 8): 2, ("A", 4): 3,
             ("A", 5): 4, ("B", 9): 4, ("A", 6): 5, ("B", 10): 5}
    return [a, b], truth


def test_mining_links_the_same_person_and_never_co_visible_people(scene):
    cams, truth = scene
    mined = mine_identities(cams, {frozenset(("A", "B"))}, AdaptMiningConfig(min_cameras=1))
    ident = mined.identity
    # the right pairs: P1's two tracks of A and its track of B are one identity, P2's are another
    assert ident[("A", 1)] == ident[("A", 3)] == ident[("B", 7)]
    assert ident[("A", 2)] == ident[("B", 8)]
    assert ident[("A", 1)] != ident[("A", 2)]
    kinds = {(frozenset((a, b)), kind) for a, b, kind, _ in mined.must_links}
    assert (frozenset((("A", 1), ("A", 3))), "continuation") in kinds
    assert (frozenset((("A", 1), ("B", 7))), "together") in kinds
    # no pair of co-visible people in one identity, and every mined pair is one real person
    for a, b in combinations(ident, 2):
        if ident[a] == ident[b]:
            assert truth[a] == truth[b], (a, b)
    for pair in mined.cannot_links:
        a, b = tuple(pair)
        assert truth[a] != truth[b]
        if a in ident and b in ident:
            assert ident[a] != ident[b]
    # P4 and P5, 0.4 m apart, are never linked across the views (ambiguous), nor merged with each other
    assert ident[("A", 5)] != ident[("A", 6)]
    for a, b, _kind, _s in mined.must_links:
        assert {a, b} & {("A", 5), ("A", 6), ("B", 9), ("B", 10)} == set()


def test_no_continuation_through_a_track_that_came_near_another_person():
    """Camera A's tracker ends P6's track 11 and starts track 12 on P6 right after; P7 then walks 0.5 m beside P6 and
    the tracker swaps them (12 goes on with P7). Track 12 holds two people, so no continuation may go through it;
    the same hand-over with nobody near is a continuation (P1's tracks 1 -> 3 in the `scene` fixture)."""
    rng = np.random.default_rng(1)
    f6 = np.arange(500, 701)
    p6 = _walk(f6, (0, 1500), (100, 0))
    f7 = np.arange(630, 701)  # P7 appears 2 s after track 11 ended: too late to be its continuation
    p7 = _walk(f7, (520, 1550), (100, 0))
    on6 = {int(f): xy for f, xy in zip(f6, p6)}
    on7 = {int(f): xy for f, xy in zip(f7, p7)}
    t11 = np.arange(500, 581)
    t12 = np.arange(584, 701)
    t13 = np.arange(630, 701)
    path12 = np.array([on6[f] if f <= 640 else on7[f] for f in t12])
    path13 = np.array([on7[f] if f <= 640 else on6[f] for f in t13])
    a = _camera("A", H_A, [_track(H_A, 11, t11, np.array([on6[f] for f in t11]), 5, rng),
                           _track(H_A, 12, t12, path12, 5, rng), _track(H_A, 13, t13, path13, 5, rng)])
    mined = mine_identities([a], set(), AdaptMiningConfig(min_cameras=1))
    assert not mined.must_links, mined.must_links
    assert frozenset((("A", 12), ("A", 13))) in mined.cannot_links
    assert mined.identity[("A", 11)] != mined.identity[("A", 12)]


def _marked(rows: np.ndarray, person: int) -> np.ndarray:
    """The same boxes with the person's number written into the box width (40 + person px, foot point unchanged), so
    every row still says whose it is after the tracks are cut."""
    out = rows.copy()
    w = 40.0 + person
    out[:, 2] += 20.0 - w / 2
    out[:, 4] = w
    return out


def test_tracks_are_cut_where_a_tracker_can_swap_people():
    """Camera A's tracker makes both kinds of mistake: track 1 follows P1, loses them and takes up P2 5 m away (a jump
    no walker makes), and tracks 5 / 6 swap P3 and P4 where the two meet (0.3 m apart). Without cutting, identity
    mining trains on P1 and P2 as one person; cut into stretches, every mined identity holds one person only, and
    the same-place-same-moment links are still found on the stretches."""
    from pipeline.adapt.mining import cut_into_stretches

    rng = np.random.default_rng(2)
    f = np.arange(1, 201)
    p1, p2 = _walk(f, (0, 0), (100, 0)), _walk(f, (0, 500), (100, 0))
    on1 = f <= 120
    on2 = f >= 131
    g = np.arange(300, 451)  # P3 and P4 walk towards each other along one line, pass at frame ~375
    p3, p4 = _walk(g, (0, 1500), (100, 2)), _walk(g, (600, 1530), (-100, -2))
    before = g < 375
    a_rows = [_marked(_track(H_A, 1, f[on1], p1[on1], 5, rng), 1), _marked(_track(H_A, 1, f[on2], p2[on2], 5, rng), 2),
              _marked(_track(H_A, 2, f[f <= 125], p2[f <= 125], 5, rng), 2),
              _marked(_track(H_A, 5, g[before], p3[before], 5, rng), 3),
              _marked(_track(H_A, 5, g[~before], p4[~before], 5, rng), 4),
              _marked(_track(H_A, 6, g[before], p4[before], 5, rng), 4),
              _marked(_track(H_A, 6, g[~before], p3[~before], 5, rng), 3)]
    b_rows = [_marked(_track(H_B, 7, f, p1, 5, rng), 1), _marked(_track(H_B, 8, f, p2, 5, rng), 2),
              _marked(_track(H_B, 9, g, p3, 5, rng), 3), _marked(_track(H_B, 10, g, p4, 5, rng), 4)]
    cams = [_camera("A", H_A, a_rows), _camera("B", H_B, b_rows)]
    cfg = AdaptMiningConfig()
    pair = {frozenset(("A", "B"))}

    def people(cam: CameraTracks, tid: int) -> set[int]:
        return {int(round(w)) - 40 for w in cam.rows[cam.rows[:, 1] == tid, 4]}

    def impure(cams_mined, mined) -> list:
        bad = []
        for pid, keys in mined.members().items():
            who = set().union(*(people(next(c for c in cams_mined if c.camera == cam), tid) for cam, tid in keys))
            if len(who) > 1:
                bad.append((pid, keys, who))
        return bad

    whole = mine_identities(cams, pair, cfg)
    assert people(cams[0], 1) == {1, 2} and impure(cams, whole), "the scene must fool mining without the cut"
    cut = [cut_into_stretches(c, cfg) for c in cams]
    a = cut[0]
    for tid in np.unique(a.rows[:, 1]):
        assert len(people(a, int(tid))) == 1, (tid, people(a, int(tid)))  # every stretch is one person
    assert len(np.unique(a.rows[:, 1])) >= 6  # 1 -> two stretches, 5 and 6 -> two each, 2 whole
    # the boxes where P3 and P4 are within 1 m of each other are left out, none elsewhere
    assert len(cut[1].rows) < len(cams[1].rows) and len(a.rows) < len(cams[0].rows)
    mined = mine_identities(cut, pair, cfg)
    assert not impure(cut, mined)
    linked = {frozenset(p) for p in (set().union(*(people(next(c for c in cut if c.camera == cam), tid)
                                                   for cam, tid in keys)) for keys in mined.members().values())}
    assert {frozenset({1}), frozenset({2}), frozenset({3}), frozenset({4})} <= linked, linked


def test_a_track_linked_to_two_unjoined_tracks_of_another_camera_keeps_neither_link():
    """Camera A's track 1 slides from P1 to P2 without a meeting or a jump (P1 leaves, P2 appears 1.5 m away 1.2 s
    later, A has no box in between). Camera B sees P1 as track 7 and P2 as track 8, too far apart in time for a
    continuation. Track 1 has same-place-same-moment links to both 7 and 8: with `exclusive_partners` it keeps neither
    (no identity holds P1 and P2), while P3, whom B tracks in two pieces that a continuation joins (10 -> 11), keeps
    one identity over A's track 3 and both pieces."""
    from pipeline.adapt.mining import cut_into_stretches

    rng = np.random.default_rng(3)
    f1, f2 = np.arange(1, 101), np.arange(131, 231)
    p1 = _walk(f1, (0, 0), (80, 0))
    p2 = _walk(f2, (p1[-1][0] + 150, 0), (80, 0))
    f3 = np.arange(1, 231)
    p3 = _walk(f3, (0, 600), (60, 0))
    a = _camera("A", H_A, [_marked(_track(H_A, 1, f1, p1, 5, rng), 1), _marked(_track(H_A, 1, f2, p2, 5, rng), 2),
                           _marked(_track(H_A, 3, f3, p3, 5, rng), 3)])
    piece = f3 <= 110
    b = _camera("B", H_B, [_marked(_track(H_B, 7, f1, p1, 5, rng), 1), _marked(_track(H_B, 8, f2, p2, 5, rng), 2),
                           _marked(_track(H_B, 10, f3[piece], p3[piece], 5, rng), 3),
                           _marked(_track(H_B, 11, f3[f3 >= 115], p3[f3 >= 115], 5, rng), 3)])
    pair = {frozenset(("A", "B"))}

    def people_of(mined, cams):
        out = []
        for keys in mined.members().values():
            who = set()
            for cam, tid in keys:
                c = next(x for x in cams if x.camera == cam)
                who |= {int(round(w)) - 40 for w in c.rows[c.rows[:, 1] == tid, 4]}
            out.append(who)
        return out

    for exclusive in (False, True):
        cfg = AdaptMiningConfig(exclusive_partners=exclusive)
        cams = [cut_into_stretches(c, cfg) for c in (a, b)]
        assert len(np.unique(cams[0].rows[:, 1])) == 2, "neither a meeting nor a jump cuts track 1"
        mined = mine_identities(cams, pair, cfg)
        groups = people_of(mined, cams)
        assert {3} in groups and mined.identity[("B", 10)] == mined.identity[("B", 11)] == mined.identity[("A", 3)]
        assert ({1, 2} in groups) == (not exclusive), groups


def test_purity_scores_count_wrong_pairs_and_identities_split_in_two(scene):
    """pair_scores against known truth: a mined identity holding two people lowers the pair precision; one person
    mined as two identities lowers the precision of the distinct-identity pairs (training treats them as two)."""
    from pipeline.adapt.mining import MinedIdentities
    from pipeline.adapt.purity import pair_scores

    _cams, truth = scene
    # identity 1: P1 in A and B (right) + P2's track of B (wrong); identity 2: P2 in A; identity 3: P1's later track
    mined = MinedIdentities(identity={("A", 1): 1, ("B", 7): 1, ("B", 8): 1, ("A", 2): 2, ("A", 3): 3},
                            must_links=[(("A", 1), ("B", 7), "together", 2.0), (("A", 1), ("B", 8), "together", 1.0)],
                            cannot_links={frozenset((("A", 1), ("A", 2))), frozenset((("B", 7), ("B", 8)))})
    s = pair_scores(mined, truth)
    # cross-camera pairs in one identity: (A1, B7) right, (A1, B8) wrong
    assert s["cross-camera"]["mined_pairs"] == 2 and s["cross-camera"]["precision"] == 0.5
    # same-camera: (B7, B8) in identity 1, wrong
    assert s["same-camera"]["mined_pairs"] == 1 and s["same-camera"]["precision"] == 0.0
    assert s["must-links"]["precision"] == 0.5 and s["cannot-links"]["precision"] == 1.0
    # identities 1 and 3 are both P1 (majority), identity 2 is P2: one of three distinct-identity pairs is one person
    assert s["distinct ids"]["mined_pairs"] == 3
    assert s["distinct ids"]["precision"] == pytest.approx(2 / 3)
    # recall over every real cross-camera pair of the scene: P1 (A1,B7), (A3,B7); P2, P4, P5 one each; one mined
    assert s["cross-camera"]["recall"] == pytest.approx(1 / 5)


def test_mining_keeps_only_multi_camera_identities_by_default(scene):
    cams, _ = scene
    mined = mine_identities(cams, {frozenset(("A", "B"))}, AdaptMiningConfig())
    assert ("A", 4) not in mined.identity  # P3 was seen by camera A only
    assert {c for c, _ in mined.identity} == {"A", "B"}


def test_without_overlap_no_cross_camera_identity(scene):
    cams, _ = scene
    mined = mine_identities(cams, set(), AdaptMiningConfig(min_cameras=1))
    assert all(kind == "continuation" for *_, kind, _s in mined.must_links)
    assert mined.identity[("A", 1)] == mined.identity[("A", 3)]
    assert mined.identity[("A", 1)] != mined.identity[("B", 7)]


def test_motion_labels_from_ground_speed():
    t = np.arange(0, 4, 1 / FPS)
    rng = np.random.default_rng(1)
    still = np.zeros((len(t), 2)) + rng.normal(0, 0.03, (len(t), 2))
    walk = np.c_[1.3 * t, np.zeros_like(t)]
    run = np.c_[3.5 * t, 0.2 * t]
    for pos, want in ((still, "standing"), (walk, "walking"), (run, "running")):
        states = motion_state(track_speeds(t, pos, 1.0), 0.3, 2.5)
        assert states.count(want) == len(states), (want, set(states))
    speeds = track_speeds(t, walk, 1.0)
    assert np.allclose(speeds, 1.3, atol=1e-6)


needs_shared = pytest.mark.skipif(not (shared_dir() / "data/epfl_terrace1/terrace1-c0.mp4").is_file()
                                  or not (shared_dir() / "models/yolo11n_int8_openvino_model").is_dir(),
                                  reason=f"needs the shared data and models at {shared_dir()} (set MCSA_SHARED)")


@needs_shared
def test_tiny_adapt_run_writes_a_loadable_checkpoint(tmp_path):
    """`adapt` end to end on 8 s of both Terrace cameras (the first person walks in at 5 s): tracking, mining,
    export, 2 training iterations."""
    import subprocess
    import sys

    recipe = yaml.safe_load((REPO_ROOT / "configs/adapt/osnet.yaml").read_text())
    recipe["train"].update(epochs=1, iters_per_epoch=2)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    site = yaml.safe_load((REPO_ROOT / "configs/epfl_terrace.yaml").read_text())
    site["adapt"].update(recipe=str(tmp_path / "recipe.yaml"), val_fraction=0.0)
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "run_pipeline.py"), "adapt", "--config",
                           str(tmp_path / "site.yaml"), "--output", str(out), "--max-frames", "200", "--no-progress"],
                          capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "identities" in proc.stdout and "model_adapted.pth" in proc.stdout
    from models.reid.model import load_checkpoint
    from pipeline.reid import ClipEncoder

    model, payload = load_checkpoint(out / "model_adapted.pth")
    assert model.action_names == ["standing", "walking", "running"]
    enc = ClipEncoder(checkpoint=str(out / "model_adapted.pth"), device="cpu", cpu_backend="torch")
    clips = np.random.default_rng(0).integers(0, 255, (2, 4, *enc.input_size, 3), dtype=np.uint8)
    emb, actions = enc.encode(clips)[:2]
    assert emb.shape[0] == 2 and np.isfinite(emb).all()
    report = (out / "adapt_report.json").read_text()
    assert "must-links" in report or "identities" in report
    shutil.rmtree(out / "tracklets", ignore_errors=True)


def test_adapt_refuses_bad_input_in_one_line(tmp_path):
    """A missing recipe, a missing --run folder and a --gt for an unknown camera: exit 2 with one line naming it."""
    import subprocess
    import sys

    site = yaml.safe_load((REPO_ROOT / "configs/epfl_terrace.yaml").read_text())
    site["adapt"]["recipe"] = str(tmp_path / "missing.yaml")
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site))
    base = [sys.executable, str(REPO_ROOT / "run_pipeline.py"), "adapt", "--output", str(tmp_path / "o")]
    cases = [
        (["--config", str(tmp_path / "site.yaml"), "--run", str(tmp_path)], "missing.yaml not found"),
        (["--config", str(REPO_ROOT / "configs/epfl_terrace.yaml"), "--run", str(tmp_path / "nope")], "no such folder"),
        (["--config", str(REPO_ROOT / "configs/epfl_terrace.yaml"), "--gt", "c9=x.txt"], "camera id of the config"),
    ]
    for extra, expected in cases:
        proc = subprocess.run(base + extra, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and expected in lines[0], proc.stderr


def test_predicted_boxes_are_not_mined(tmp_path):
    """The fused mode's predicted boxes (score 0 in mot_local/) are no observation: mining and cropping skip them."""
    from pipeline.adapt.mining import read_camera_tracks

    path = tmp_path / "c0.txt"
    path.write_text("1,5,10,20,40,100,0.91,-1,-1,-1\n2,5,11,20,40,100,0.00,-1,-1,-1\n3,5,12,20,40,100,0.88,-1,-1,-1\n")
    cam = read_camera_tracks(path, "c0", 25.0)
    assert cam.rows[:, 0].tolist() == [1, 3]
    bare = tmp_path / "bare.txt"  # six columns only (no score): every row is kept
    bare.write_text("1,5,10,20,40,100\n2,5,11,20,40,100\n")
    assert len(read_camera_tracks(bare, "c0", 25.0).rows) == 2
