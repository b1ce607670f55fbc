"""Cross-camera association: constraints, scripted scenarios, re-link history, gallery, outputs, evaluate mtmc."""

from __future__ import annotations

import json
import sqlite3
from argparse import Namespace

import numpy as np
import pytest

from pipeline.association import CameraTopology, Gallery, OnlineAssociator, PairLink, VectorIndex, refine
from pipeline.association.stage import AssociationStage
from core.geometry import load_homography, to_ground
from pipeline.association.topology import Span, check_pair
from pipeline.config import AssociationConfig, ConfigError, parse_config

FPS = 10.0
DIM = 16


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def people(n, seed=0):
    """n well-separated appearance vectors (DIM,)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(DIM, DIM)))
    return [unit(q[i]) for i in range(n)]


def box_at(x, y):
    """A 20x60 box whose bottom-centre is (x, y) (identity homographies: ground = image point)."""
    return [x - 10, y - 60, x + 10, y]


def play(assoc, script, frames, clip_every=5, noise=0.05, seed=1):
    """script: list of (camera, track_id, first_frame, last_frame, appearance (DIM,), position fn frame -> (x, y)).
    Feeds boxes every frame, a fresh clip embedding every `clip_every` frames, and steps once per frame."""
    rng = np.random.default_rng(seed)
    sums = {}
    for f in range(frames):
        t = f / FPS
        for cam in sorted({s[0] for s in script}):
            rows = [(tid, box_at(*pos(f))) for c, tid, a, b, _, pos in script if c == cam and a <= f <= b]
            if rows:
                assoc.on_tracks(cam, t, [r[0] for r in rows], np.array([r[1] for r in rows], np.float32))
        for cam, tid, a, b, app, _ in script:
            if a <= f <= b and (f - a) % clip_every == clip_every - 1:
                e = unit(app + rng.normal(scale=noise, size=DIM))
                acc = sums.setdefault((cam, tid), [0, 0])
                acc[0], acc[1] = acc[0] + e, acc[1] + 1
                assoc.on_appearance(cam, tid, unit(acc[0]), acc[1])
        assoc.step(t)
    assoc.finish()
    return assoc.assignments()


def cfg(**kw):
    base = dict(enabled=True, min_clips=2, match_threshold=0.5, ground_gate=5.0, offline=True, track_end_s=1.0)
    base.update(kw)
    return AssociationConfig(**base)


def topo(overlap=True, homographies=True, **link):
    h = {c: np.eye(3) for c in ("c0", "c1")} if homographies else {}
    return CameraTopology({("c0", "c1"): PairLink(overlap=overlap, **link)}, homographies=h)


def still(x, y):
    return lambda f: (x, y)


# ---- constraints ---------------------------------------------------------------------------------------------------
def test_simultaneous_tracks_in_non_overlapping_cameras_never_merge():
    p = people(1)[0]
    script = [("c0", 1, 0, 40, p, still(0, 0)), ("c1", 1, 10, 50, p, still(0, 0))]  # same look, same time
    ids = play(OnlineAssociator(cfg(), topo(overlap=False, homographies=False)), script, 60)
    assert ids[("c0", 1)] != ids[("c1", 1)]
    # the same two tracks in overlapping cameras do merge
    ids = play(OnlineAssociator(cfg(), topo(overlap=True, homographies=False)), script, 60)
    assert ids[("c0", 1)] == ids[("c1", 1)]


def test_same_camera_simultaneous_tracks_never_share_an_identity():
    p = people(1)[0]
    script = [("c0", 1, 0, 40, p, still(0, 0)), ("c0", 2, 5, 40, p, still(50, 0))]
    ids = play(OnlineAssociator(cfg(), topo()), script, 50)
    assert ids[("c0", 1)] != ids[("c0", 2)]


@pytest.mark.parametrize("window,merged", [((1.0, 10.0), True), ((3.0, 10.0), False), ((0.0, 1.0), False)])
def test_transit_window_is_respected(window, merged):
    p = people(1)[0]
    # leaves c0 at frame 20 (2.0 s), enters c1 at frame 40 (4.0 s): a 2 s walk
    script = [("c0", 1, 0, 20, p, still(0, 0)), ("c1", 1, 40, 70, p, still(0, 0))]
    t = topo(overlap=False, homographies=False, min_transit_s=window[0], max_transit_s=window[1])
    ids = play(OnlineAssociator(cfg(), t), script, 80)
    assert (ids[("c0", 1)] == ids[("c1", 1)]) is merged
    verdict = check_pair(t, Span("c0", 0.0, 2.0), Span("c1", 4.0, 7.0), ground_gate=1, overlap_tolerance_s=0.2,
                         sync_tolerance_s=0.1)
    assert verdict.ok is merged and (merged or verdict.reason == "transit")


def test_homography_gating_and_scoring_pick_the_person_at_the_same_ground_point():
    a, b = people(2)
    look = unit(a + b)  # both look alike to the model: only the ground plane can tell them apart
    script = [
        ("c0", 1, 0, 60, look, lambda f: (f * 0.1, 0.0)),
        ("c0", 2, 0, 60, look, lambda f: (f * 0.1, 20.0)),
        ("c1", 7, 10, 60, look, lambda f: (f * 0.1 + 0.5, 20.3)),  # track 2's person, seen from c1 (small error)
        ("c1", 8, 10, 60, look, lambda f: (f * 0.1 - 0.4, 0.2)),  # track 1's person
    ]
    c = cfg(ground_gate=5.0)
    ids = play(OnlineAssociator(c, topo()), script, 70)
    assert ids[("c0", 1)] == ids[("c1", 8)] and ids[("c0", 2)] == ids[("c1", 7)]
    assert ids[("c0", 1)] != ids[("c0", 2)]
    here = Span("c0", 0, 1, np.array([0.0, 1.0]), np.array([[0.0, 0.0], [1.0, 0.0]]))
    there = Span("c1", 0, 1, np.array([0.0, 1.0]), np.array([[0.0, 20.0], [1.0, 20.0]]))
    verdict = check_pair(topo(), here, there, ground_gate=5.0, overlap_tolerance_s=0.2, sync_tolerance_s=0.1)
    assert not verdict.ok and verdict.reason == "ground"


def test_homography_file_and_bottom_centre(tmp_path):
    path = tmp_path / "Homography.txt"
    path.write_text("2 0 1\n0 2 0\n0 0 1\n")
    h = load_homography(path)
    assert np.allclose(to_ground(h, np.array([[0, 0, 10, 20]])), [[11.0, 40.0]])  # bottom-centre (5, 20)
    path.write_text("1 2 3")
    with pytest.raises(ValueError, match="9 numbers"):
        load_homography(path)


# ---- scripted scenario ---------------------------------------------------------------------------------------------
def scenario():
    """Three people on two overlapping, synchronised cameras; person 0 is lost and re-acquired (two tracks) in c0."""
    p = people(3, seed=3)
    walk = [lambda f, k=k: (f * 0.05 + 10 * k, 3.0 * k) for k in range(3)]
    truth = {("c0", 1): 0, ("c0", 2): 1, ("c0", 3): 2, ("c0", 4): 0, ("c1", 11): 1, ("c1", 12): 0, ("c1", 13): 2}
    script = [
        ("c0", 1, 0, 40, p[0], walk[0]), ("c0", 4, 55, 120, p[0], walk[0]),
        ("c0", 2, 5, 120, p[1], walk[1]), ("c0", 3, 30, 100, p[2], walk[2]),
        ("c1", 11, 0, 110, p[1], walk[1]), ("c1", 12, 10, 120, p[0], walk[0]), ("c1", 13, 35, 90, p[2], walk[2]),
    ]
    return script, truth


def same_partition(ids, truth):
    keys = sorted(truth)
    return all((ids[a] == ids[b]) == (truth[a] == truth[b]) for a in keys for b in keys)


@pytest.mark.parametrize("constraints", [True, False])
def test_scripted_two_camera_scenario_gets_identities_right(constraints):
    script, truth = scenario()
    c = cfg(constraints=constraints)
    assoc = OnlineAssociator(c, topo() if constraints else CameraTopology(default=PairLink(overlap=True)))
    ids = play(assoc, script, 130)
    assert same_partition(ids, truth), ids
    assert len(set(ids.values())) == 3
    offline = refine(assoc.all_tracks(), assoc.topology, c, ids)
    assert same_partition(offline, truth) and offline == ids  # refined ids reuse the online ones


def test_ground_plane_only_when_there_is_no_appearance():
    script, truth = scenario()
    c = cfg(use_appearance=False, min_boxes=5)
    ids = play(OnlineAssociator(c, topo()), script, 130)
    overlapping = {k: v for k, v in truth.items() if k != ("c0", 4)}  # no simultaneous partner for c0's late track
    assert same_partition({k: ids[k] for k in overlapping}, overlapping)


def test_relink_history_is_kept():
    a, b = people(2, seed=5)
    c = cfg(relink_margin=0.05, match_threshold=0.3)
    assoc = OnlineAssociator(c, CameraTopology(default=PairLink(overlap=True)))
    for t, tid in ((0.0, 1), (0.0, 2)):
        assoc.on_tracks("c0", t, [1, 2], np.array([box_at(0, 0), box_at(50, 0)], np.float32))
    assoc.on_appearance("c0", 1, a, 4)
    assoc.on_appearance("c0", 2, b, 4)
    assoc.step(0.0)
    ga, gb = assoc.tracks[("c0", 1)].global_id, assoc.tracks[("c0", 2)].global_id
    assert ga != gb
    # c1's track looks a bit like `a` at first ...
    assoc.on_tracks("c1", 0.1, [5], np.array([box_at(0, 0)], np.float32))
    assoc.on_appearance("c1", 5, unit(0.8 * a + 0.6 * b), 2)
    first = assoc.step(0.1)
    assert [(e.global_id, e.reason) for e in first] == [(ga, "match")]
    # ... then clearly turns out to be `b`: it is re-linked, and both links stay on record
    assoc.on_appearance("c1", 5, unit(0.1 * a + 0.99 * b), 4)
    second = assoc.step(0.2)
    assert [(e.global_id, e.previous_id, e.reason) for e in second] == [(gb, ga, "relink")]
    history = [(e.global_id, e.previous_id, e.reason) for e in assoc.links if e.camera_id == "c1"]
    assert history == [(ga, None, "match"), (gb, ga, "relink")]
    assert assoc.assignments()[("c1", 5)] == gb


# ---- gallery -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_vector_index_kinds_agree_on_easy_queries(kind):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = VectorIndex(32, kind, nlist=8, nprobe=8, train_size=200)
    index.add(np.arange(400) + 1000, x)
    assert index.ntotal == 400 and (kind != "ivf" or index.trained)
    sims, ids = index.search(x[:20], 1)
    assert (ids[:, 0] == np.arange(20) + 1000).all() and np.allclose(sims[:, 0], 1, atol=1e-4)
    index.remove([1000, 1001])
    _, ids = index.search(x[:2], 3)
    assert 1000 not in ids[0] and 1001 not in ids[1] and index.ntotal == 398


def test_gallery_prototypes_ageing_and_pruning():
    g = Gallery(kind="flat", max_age_s=10.0, max_identities=2)
    p = people(3)
    ids = []
    for i, t in enumerate((0.0, 5.0, 8.0)):
        ident = g.new_identity(t, "c0")
        g.set_prototype(ident.global_id, "c0", p[i])
        g.set_prototype(ident.global_id, "c1", p[i])
        ids.append(ident.global_id)
    assert g.search(p[1], 4)[ids[1]] == pytest.approx(1.0, abs=1e-5)
    assert g.index.ntotal == 6
    dropped = g.prune(now_t=12.0)  # id 0 is 12 s old (> 10 s); then 2 remain, within max_identities
    assert dropped == [ids[0]] and len(g) == 2 and g.index.ntotal == 4
    dropped = g.prune(now_t=12.0, keep={ids[1]})
    assert dropped == [] and ids[0] not in g.search(p[0], 4)


# ---- run-level stage: outputs and store ----------------------------------------------------------------------------
def test_stages_write_global_mot_files_identities_and_links(tmp_path):
    """Association -> MOT -> store stages, driven as the loop drives them, talking only through messages."""
    from core.types import Frame, Tracks
    from pipeline.outputs import MotStage
    from pipeline.reid.clips import AppearanceUpdate, ClipResult
    from pipeline.stages import CameraInfo, RunEnd, RunInfo, Step
    from pipeline.store import StoreWriter, open_engine
    from pipeline.store.schema import sqlite_url
    from pipeline.store.stage import StoreStage

    script, truth = scenario()
    assoc = AssociationStage(cfg(topology=[{"cameras": ["c0", "c1"], "overlap": True}]))
    assoc.associator.topology = topo()
    assoc.topology = assoc.associator.topology
    store = StoreStage(StoreWriter(open_engine(sqlite_url(tmp_path / "events.db")), 100, 0.05))
    run = RunInfo(store.begin_run({}, str(tmp_path)), tmp_path, all_files=True)
    stages = [assoc, MotStage(global_ids=True), store]
    for stage in stages:
        stage.open(run)
        for c in ("c0", "c1"):
            stage.open_camera(CameraInfo(c, f"{c}.mp4", FPS, (4, 4)))
    rng = np.random.default_rng(0)
    sums = {}
    image = np.zeros((4, 4, 3), np.uint8)
    seen_gids = set()
    for f in range(130):
        step = Step(f, f / FPS)
        for cam in ("c0", "c1"):
            rows = [(tid, box_at(*pos(f))) for c, tid, a, b, _, pos in script if c == cam and a <= f <= b]
            tracks = Tracks(np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.float32).reshape(-1, 4),
                            np.ones(len(rows), np.float32), np.zeros(len(rows), np.int32))
            step.frames.append((Frame(cam, f, f / FPS, image), tracks))
        for cam, tid, a, b, app, _ in script:
            if a <= f <= b and (f - a) % 5 == 4:
                acc = sums.setdefault((cam, tid), [0, 0])
                acc[0], acc[1] = acc[0] + unit(app + rng.normal(scale=0.05, size=DIM)), acc[1] + 1
                result = ClipResult(cam, tid, unit(acc[0]).astype(np.float32), np.zeros(0, np.float32), f / FPS,
                                    f / FPS, 1.0)
                step.appearance.append(AppearanceUpdate(result, unit(acc[0]).astype(np.float32),
                                                        np.zeros(0, np.float32), acc[1]))
        for stage in stages:
            for frame, tracks in step.frames:
                stage.on_frame(frame, tracks)
            stage.on_step(step)
        for _, tracks in step.frames:  # the association wrote each track's global id onto the message
            assert tracks.global_ids is not None and len(tracks.global_ids) == len(tracks)
            seen_gids.update(tracks.global_ids.tolist())
    end = RunEnd("completed")
    for stage in stages:
        stage.close(end)
    result = end.identities
    assert seen_gids - {-1}, "global ids reach the tracks while the run goes on"
    assert set(result) == {"online", "offline"} and same_partition(result["offline"], truth)
    assert end.final_identities is result["offline"]
    local = tmp_path / "mot_local"
    for cam in ("c0", "c1"):
        local_rows = np.loadtxt(local / f"{cam}.txt", delimiter=",")
        global_rows = np.loadtxt(tmp_path / "mot" / f"{cam}.txt", delimiter=",")
        assert len(local_rows) == len(global_rows) and (tmp_path / "mot_online" / f"{cam}.txt").is_file()
        for lr, gr in zip(local_rows, global_rows):
            assert gr[1] == result["offline"][(cam, int(lr[1]))] and np.allclose(lr[[0, 2, 3, 4, 5]], gr[[0, 2, 3, 4, 5]])
    db = sqlite3.connect(tmp_path / "events.db")
    idents = db.execute("SELECT mode, camera_id, track_id, global_id FROM identities").fetchall()
    assert {(c, t): g for m, c, t, g in idents if m == "online"} == result["online"]
    assert len(idents) == 2 * len(truth)
    links = db.execute("SELECT camera_id, track_id, global_id, reason, mode FROM identity_links").fetchall()
    assert {(c, t) for c, t, *_ in links} == set(truth) and all(m == "online" for *_, r, m in links if r != "offline")
    assert db.execute("SELECT count(*) FROM track_clips").fetchone()[0] == sum(n for _, n in sums.values())
    assert db.execute("SELECT status FROM runs").fetchone()[0] == "completed"


def test_association_config_checks(tmp_path):
    data = {"cameras": [{"id": "c0", "source": "a.mp4"}],
            "association": {"topology": [{"cameras": ["c0", "cX"], "overlap": True}]}}
    from pipeline.stages import CameraInfo

    stage = AssociationStage(parse_config(data).association)
    stage.open_camera(CameraInfo("c0", "a.mp4"))
    assert stage.unknown_cameras() == ["cX"]  # warned about once, at the first step
    data["association"] = {"index": "annoy"}
    with pytest.raises(ConfigError, match="association.index"):
        parse_config(data)


# ---- evaluation ----------------------------------------------------------------------------------------------------
def test_evaluate_mtmc_command_reproduces_a_hand_checked_case(tmp_path, capsys):
    from pipeline.commands.evaluate_mtmc import main

    # one person seen 4 frames in each of two cameras; the prediction tracks it perfectly in each camera but with a
    # different id per camera: per-camera IDF1 = 1; cross-camera, gt id 1 has 8 boxes, pred ids 7 and 8 have 4 each,
    # the best one-to-one match gives IDTP 4, IDFP 4, IDFN 4 -> IDP = IDR = IDF1 = 4 / 8 = 0.5.
    gt, pred = {}, {}
    for cam, pid in (("c0", 7), ("c1", 8)):
        gt[cam], pred[cam] = tmp_path / f"gt_{cam}.txt", tmp_path / f"pred_{cam}.txt"
        gt[cam].write_text("".join(f"{f},1,10,10,20,40,1,1,1\n" for f in range(1, 5)))
        pred[cam].write_text("".join(f"{f},{pid},10,10,20,40,0.9,-1,-1,-1\n" for f in range(1, 5)))
    out = tmp_path / "m.json"
    args = Namespace(gt=[f"{c}={p}" for c, p in gt.items()], pred=[f"{c}={p}" for c, p in pred.items()],
                     min_visibility=0.0, json=out)
    assert main(args) == 0
    m = json.loads(out.read_text())["metrics"]
    assert (m["IDF1"], m["IDP"], m["IDR"]) == pytest.approx((0.5, 0.5, 0.5))
    assert all(r["IDF1"] == pytest.approx(1.0) for r in m["per_camera"].values())
    assert "cross-camera IDF1 0.5000" in capsys.readouterr().out
    # the same id in both cameras: a perfect cross-camera score
    pred["c1"].write_text(pred["c1"].read_text().replace(",8,", ",7,"))
    assert main(args) == 0
    assert json.loads(out.read_text())["metrics"]["IDF1"] == pytest.approx(1.0)
    bad = Namespace(gt=["c0"], pred=[], min_visibility=0.0, json=None)
    assert main(bad) == 2


def test_evaluate_mtmc_cli_takes_repeated_and_listed_cameras():
    from pipeline.cli import build_parser

    args = build_parser().parse_args(["evaluate", "mtmc", "--gt", "c0=a.txt", "--gt", "c1=b.txt",
                                      "--pred", "c0=x.txt", "c1=y.txt"])
    assert args.gt == ["c0=a.txt", "c1=b.txt"] and args.pred == ["c0=x.txt", "c1=y.txt"]


# ---- real data -----------------------------------------------------------------------------------------------------
def test_laboratory_ground_plane_association_on_ground_truth_boxes(shared, tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_association",
                                                  Path(__file__).resolve().parents[1] / "bench" / "association.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lab = shared / "data" / "epfl_laboratory_gt"
    run, gt = bench.laboratory_run(lab)
    c = AssociationConfig(enabled=True, use_appearance=False, ground_gate=60.0, default_link={"overlap": True},
                          homographies={cam: str(lab / f"laboratory6-{cam}/Homography.txt") for cam in run.cameras})
    from pipeline.association.replay import replay, write_mot
    from pipeline.evaluation.mot import evaluate_mtmc

    ids, _ = replay(run, c)
    floor = evaluate_mtmc(gt, {k: str(v) for k, v in write_mot(run, {}, tmp_path / "floor").items()})
    res = evaluate_mtmc(gt, {k: str(v) for k, v in write_mot(run, ids, tmp_path / "online").items()})
    assert floor["IDF1"] < 0.4 and res["IDF1"] >= 0.95
