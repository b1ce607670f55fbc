"""Identities beyond one fused group (pipeline/fusion/links.py): groups of overlapping cameras and cameras outside
them linked by Re-ID appearance and the topology's transit windows."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from core.paths import REPO_ROOT
from pipeline.config import ConfigError, load_config, parse_config
from pipeline.fusion.links import GROUP_STRIDE, OUTSIDE_BASE, GroupLinks, group_topology, group_view


def _cfg(topology, groups=None, homs=("c0", "c1", "c2", "c3")):
    from pipeline.config import AssociationConfig

    # homography files are checked to exist only; any file does for these tests (no geometry is used)
    return AssociationConfig.model_validate({
        "enabled": True, "mode": "fused", "homographies": {c: __file__ for c in homs}, "min_clips": 2,
        "topology": topology, "fusion": {"groups": groups}})


def test_group_topology_carries_camera_links_onto_groups():
    cfg = _cfg([{"cameras": ["c0", "c1"], "overlap": True},  # inside group A: dropped
                {"cameras": ["c1", "door"], "min_transit_s": 5, "max_transit_s": 20},
                {"cameras": ["c0", "door"], "min_transit_s": 3, "max_transit_s": 30},
                {"cameras": ["c2", "door"], "overlap": True}],
               groups=[["c0", "c1"], ["c2", "c3"]])
    topo = group_topology(cfg, {"c0": "A", "c1": "A", "c2": "B", "c3": "B"})
    link = topo.link(group_view("A"), "door")
    assert not link.overlap and (link.min_transit_s, link.max_transit_s) == (3, 30)  # the widest window
    assert topo.link("door", group_view("B")).overlap
    assert topo.link(group_view("A"), group_view("B")) == topo.default  # not written: the default link


def test_groups_config_errors_name_the_camera_and_the_fix():
    with pytest.raises(Exception, match="'c9' has no homography"):
        _cfg([], groups=[["c0", "c9"]])
    with pytest.raises(Exception, match="'c1' is in two groups"):
        _cfg([], groups=[["c0", "c1"], ["c1", "c2"]])
    with pytest.raises(ConfigError, match="groups"):
        parse_config({"cameras": [{"id": "a", "source": "x.mp4"}],
                      "association": {"enabled": True, "mode": "fused", "homographies": {"a": __file__},
                                      "fusion": {"groups": [[]]}}})


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_two_groups_and_an_outside_camera_share_identities_by_appearance_and_transit():
    """Person P is seen by group A (0-4 s), walks to the door camera (transit 5 s, seen 9-12 s), then group B
    (20-24 s); person Q only by group B at the same time as P there. P gets one id everywhere, Q another."""
    cfg = _cfg([{"cameras": ["c1", "door"], "min_transit_s": 2, "max_transit_s": 10},
                {"cameras": ["door", "c2"], "min_transit_s": 2, "max_transit_s": 15}],
               groups=[["c0", "c1"], ["c2", "c3"]])
    links = GroupLinks(cfg, {"c0": "A", "c1": "A", "c2": "B", "c3": "B"}, embedding_dim=4)
    p, q = _unit([1, 0.1, 0, 0]), _unit([0, 0, 1, 0.2])
    events = []
    pa, pb, qb = 1, GROUP_STRIDE + 1, GROUP_STRIDE + 2  # ground ids: group A's first, group B's first and second
    for k in range(0, 250):
        t = k * 0.1
        if t <= 4:
            links.on_group_ids("A", t, [pa])
            if k in (5, 20):
                links.on_appearance("c0", 7, p, 1 if k == 5 else 2, ground_id=pa)
        if 9 <= t <= 12:
            links.on_outside_tracks("door", t, [3], np.array([[10, 10, 50, 150]]))
            if k in (95, 110):
                links.on_appearance("door", 3, _unit(p + 0.05), 1 if k == 95 else 2)
        if 20 <= t <= 24:
            links.on_group_ids("B", t, [pb, qb])
            if k in (205, 220):
                links.on_appearance("c2", 4, _unit(p + [0, 0.05, 0, 0]), 1 if k == 205 else 2, ground_id=pb)
                links.on_appearance("c3", 9, q, 1 if k == 205 else 2, ground_id=qb)
        events += links.step(t)
    events += links.finish()
    assert links.final_id("A", pa) == pa  # the identity started in group A shows A's ground id
    assert links.final_outside()[("door", 3)] == pa
    assert links.final_id("B", pb) == pa
    assert links.final_id("B", qb) != pa
    assert all(not e.camera_id.startswith("group:") for e in events)  # only real cameras' links are reported
    assert any(e.camera_id == "door" and e.global_id == pa for e in events)


def test_outside_track_outside_the_transit_window_is_a_new_identity():
    cfg = _cfg([{"cameras": ["c0", "door"], "min_transit_s": 2, "max_transit_s": 4}], groups=[["c0"]])
    links = GroupLinks(cfg, {"c0": "A"}, embedding_dim=4)
    p = _unit([1, 0, 0, 0])
    for k in range(200):
        t = k * 0.1
        if t <= 3:
            links.on_group_ids("A", t, [1])
            if k in (5, 20):
                links.on_appearance("c0", 7, p, 1 if k == 5 else 2, ground_id=1)
        if 15 <= t <= 18:  # 12 s after leaving c0: longer than the 4 s the site allows
            links.on_outside_tracks("door", t, [3], np.array([[10, 10, 50, 150]]))
            if k in (155, 170):
                links.on_appearance("door", 3, p, 1 if k == 155 else 2)
        links.step(t)
    links.finish()
    assert links.final_outside()[("door", 3)] >= OUTSIDE_BASE


def test_terrace_camera_outside_the_fused_group_gets_the_ground_identities(shared, yolo_weights, tmp_path):
    """Real video: Terrace c0 tracked on the ground (a group of one), c1 left outside every group and linked by
    Re-ID appearance (the views overlap). The people of c1 get the ids of c0's ground identities, in the live rows
    (the store's link history) and in mot/, and the cross-camera IDF1 against the ground truth stays high."""
    from pipeline.evaluation.mot import evaluate_mtmc
    from pipeline.runner import Pipeline

    cfg = load_config(REPO_ROOT / "configs" / "epfl_terrace.yaml")
    data = cfg.model_dump()
    frames = 400
    for cam in data["cameras"]:
        cam["max_frames"] = frames
    data["run"].update(progress=False)
    data["association"]["topology"] = [{"cameras": ["c0", "c1"], "overlap": True}]
    data["association"]["fusion"]["groups"] = [["c0"]]
    summary = Pipeline(type(cfg).model_validate(data), tmp_path).run()
    assert summary.exit_code == 0, summary.table()
    assert "outside camera" in summary.table()
    mot = {c: np.loadtxt(tmp_path / "mot" / f"{c}.txt", delimiter=",", ndmin=2) for c in ("c0", "c1")}
    shared_ids = set(mot["c0"][:, 1].astype(int)) & set(mot["c1"][:, 1].astype(int))
    assert shared_ids, "no identity is shared by the fused camera and the outside camera"
    share = np.isin(mot["c1"][:, 1].astype(int), list(shared_ids)).mean()
    assert share > 0.8, f"only {share:.2f} of c1's boxes carry an identity c0 also has"
    con = sqlite3.connect(tmp_path / "events.db")
    live = {r[0] for r in con.execute("select distinct global_id from identity_links where camera_id='c1' "
                                      "and mode='online'")}
    assert live & shared_ids, "the outside camera's online links name none of the shared identities"
    gt = {}
    for c in ("c0", "c1"):
        g = np.loadtxt(shared / f"data/epfl_terrace1/gt_{c}/gt.txt", delimiter=",", ndmin=2)
        path = tmp_path / f"gt_{c}.txt"
        np.savetxt(path, g[g[:, 0] <= frames], delimiter=",", fmt="%g")
        gt[c] = str(path)
    res = evaluate_mtmc(gt, {c: str(tmp_path / "mot" / f"{c}.txt") for c in ("c0", "c1")})
    assert res["IDF1"] > 0.75, res["IDF1"]


def test_ended_ground_identities_release_their_embeddings():
    """A long live run: the per-track embeddings of ground identities that ended are dropped (memory stays bounded)."""
    from pipeline.fusion import links as links_module

    cfg = _cfg([], groups=[["c0"]])
    links = GroupLinks(cfg, {"c0": "A"}, embedding_dim=4)
    p = _unit([1, 0, 0, 0])
    for k in range(2 * links_module.PRUNE_EVERY):
        t = k * 0.1
        gid = 1 + k // 50  # a new person every 5 s, each seen for 5 s
        links.on_group_ids("A", t, [gid])
        links.on_appearance("c0", gid, p, 1 + k % 50, ground_id=gid)
        links.step(t)
    assert len(links.clips) < 10, len(links.clips)  # 20 people seen; only the recent ones keep their embeddings
    assert (group_view("A"), 20) in links.clips
