"""MOT evaluation: published expected values (motmetrics' TUD fixtures), hand-checked HOTA, formats, MTMC, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.evaluation.mot import evaluate_mot, evaluate_mtmc

# motmetrics 1.4.0 tests/test_metrics.py::test_motchallenge_files publishes these for its TUD fixtures
# (IDF1, IDP, IDR, FP, FN, IDSW, Frag, MOTA, MOTP as IoU *distance*; TrackEval's MOTP is 1 - that).
PUBLISHED = {
    "TUD-Campus": dict(IDF1=0.557659, IDP=0.729730, IDR=0.451253, FP=13, FN=150, IDSW=7, Frag=7, MT=1, PT=6, ML=1,
                       MOTA=0.526462, MOTP_dist=0.277201),
    "TUD-Stadtmitte": dict(IDF1=0.644619, IDP=0.819760, IDR=0.531142, FP=45, FN=452, IDSW=7, Frag=6, MT=5, PT=4,
                           ML=1, MOTA=0.564014, MOTP_dist=0.345904),
}


def _fixture_dir(name: str) -> Path:
    mm = pytest.importorskip("motmetrics")
    path = Path(mm.__file__).parent / "data" / name
    if not (path / "gt.txt").is_file():
        pytest.skip(f"motmetrics wheel without its {name} fixture")
    return path


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_matches_published_tud_values(name):
    d = _fixture_dir(name)
    r = evaluate_mot(d / "gt.txt", d / "test.txt")
    exp = PUBLISHED[name]
    for key in ("IDF1", "IDP", "IDR", "MOTA"):
        assert r[key] == pytest.approx(exp[key], abs=1e-5), key
    for key in ("FP", "FN", "IDSW", "Frag", "MT", "PT", "ML"):
        assert r[key] == exp[key], key
    assert r["MOTP"] == pytest.approx(1 - exp["MOTP_dist"], abs=1e-5)
    assert 0 < r["HOTA"] < 1 and r["HOTA"] == pytest.approx((r["DetA"] * r["AssA"]) ** 0.5, abs=0.02)


def _write(path: Path, rows) -> Path:
    path.write_text("".join(",".join(str(v) for v in row) + "\n" for row in rows))
    return path


def test_hand_checked_hota_and_identity(tmp_path):
    # one person, 2 frames; prediction identical boxes but the id changes in frame 2.
    gt = _write(tmp_path / "gt.txt", [(1, 1, 10, 10, 20, 40, 1, 1, 1), (2, 1, 12, 10, 20, 40, 1, 1, 1)])
    perfect = _write(tmp_path / "p.txt", [(1, 5, 10, 10, 20, 40, 1), (2, 5, 12, 10, 20, 40, 1)])
    switch = _write(tmp_path / "s.txt", [(1, 5, 10, 10, 20, 40, 1), (2, 6, 12, 10, 20, 40, 1)])
    r = evaluate_mot(gt, perfect)
    assert r["HOTA"] == pytest.approx(1.0) and r["IDF1"] == 1.0 and r["MOTA"] == 1.0 and r["IDSW"] == 0
    r = evaluate_mot(gt, switch)
    # DetA = 1; each TP pairs gt 1 with a tracker id seen once: TPA 1, FNA 1 (the other frame), FPA 0 -> A = 1/2,
    # AssA = 1/2, HOTA = sqrt(DetA * AssA) = sqrt(1/2). IDF1: IDTP 1 of 2 gt + 2 pred -> 0.5; one switch.
    assert r["DetA"] == pytest.approx(1.0) and r["AssA"] == pytest.approx(0.5)
    assert r["HOTA"] == pytest.approx(0.5**0.5)
    assert r["IDF1"] == pytest.approx(0.5) and r["IDSW"] == 1 and r["MOTA"] == pytest.approx(0.5)


def test_terrace_visibility_and_zero_marked(tmp_path):
    # Terrace format: frame,id,x,y,w,h,1,1,visibility. Person 2 is occluded (visibility 0) in frame 2.
    gt = _write(tmp_path / "gt.txt", [(1, 1, 0, 0, 10, 30, 1, 1, 1), (1, 2, 50, 0, 10, 30, 1, 1, 1),
                                      (2, 1, 0, 0, 10, 30, 1, 1, 1), (2, 2, 50, 0, 10, 30, 1, 1, 0)])
    pred = _write(tmp_path / "p.txt", [(1, 1, 0, 0, 10, 30), (1, 2, 50, 0, 10, 30), (2, 1, 0, 0, 10, 30),
                                       (2, 2, 50, 0, 10, 30)])
    missing = _write(tmp_path / "m.txt", [(1, 1, 0, 0, 10, 30), (1, 2, 50, 0, 10, 30), (2, 1, 0, 0, 10, 30)])
    assert evaluate_mot(gt, pred)["MOTA"] == 1.0  # occluded boxes count by default
    assert evaluate_mot(gt, missing)["FN"] == 1
    r = evaluate_mot(gt, missing, min_visibility=0.5)  # occluded box is don't-care
    assert r["FN"] == 0 and r["num_gt_dets"] == 3
    r = evaluate_mot(gt, pred, min_visibility=0.5)  # ... and a prediction on it is not a false positive
    assert r["FP"] == 0 and r["MOTA"] == 1.0
    # MOTChallenge/PETS09 rows with conf 0 are ignored
    pets = _write(tmp_path / "pets.txt", [(1, 1, 0, 0, 10, 30, 1, -1, -1, 0), (1, 2, 50, 0, 10, 30, 0, -1, -1, 0)])
    assert evaluate_mot(pets, _write(tmp_path / "q.txt", [(1, 7, 0, 0, 10, 30)]))["num_gt_dets"] == 1


def test_mtmc_penalises_cross_camera_id_mixups(tmp_path):
    g0 = _write(tmp_path / "g0.txt", [(f, 1, 0, 0, 10, 30, 1, 1, 1) for f in (1, 2)])
    g1 = _write(tmp_path / "g1.txt", [(f, 1, 5, 5, 10, 30, 1, 1, 1) for f in (1, 2)])
    same = _write(tmp_path / "p1.txt", [(f, 9, 5, 5, 10, 30) for f in (1, 2)])
    other = _write(tmp_path / "p2.txt", [(f, 4, 5, 5, 10, 30) for f in (1, 2)])
    p0 = _write(tmp_path / "p0.txt", [(f, 9, 0, 0, 10, 30) for f in (1, 2)])
    good = evaluate_mtmc({"c0": g0, "c1": g1}, {"c0": p0, "c1": same})
    bad = evaluate_mtmc({"c0": g0, "c1": g1}, {"c0": p0, "c1": other})
    assert good["IDF1"] == 1.0 and bad["IDF1"] == pytest.approx(0.5)
    assert bad["per_camera"]["c1"]["IDF1"] == 1.0 and bad["num_frames"] == 4
    with pytest.raises(ValueError):
        evaluate_mtmc({"c0": g0}, {"cX": p0})


def test_cli_writes_json(tmp_path, capsys):
    from pipeline.cli import main

    gt = _write(tmp_path / "gt.txt", [(1, 1, 10, 10, 20, 40, 1, 1, 1), (2, 1, 12, 10, 20, 40, 1, 1, 1)])
    pred = _write(tmp_path / "p.txt", [(1, 5, 10, 10, 20, 40, 1), (2, 5, 12, 10, 20, 40, 1)])
    out = tmp_path / "res" / "m.json"
    assert main(["evaluate", "mot", "--gt", str(gt), "--pred", str(pred), "--json", str(out)]) == 0
    assert "HOTA" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["metrics"]["IDF1"] == 1.0 and data["metrics"]["HOTA"] == pytest.approx(1.0)
    assert main(["evaluate", "mot", "--gt", str(tmp_path / "nope.txt"), "--pred", str(pred)]) == 2


def test_duplicate_ids_rejected(tmp_path):
    gt = _write(tmp_path / "gt.txt", [(1, 1, 10, 10, 20, 40, 1)])
    pred = _write(tmp_path / "p.txt", [(1, 5, 10, 10, 20, 40), (1, 5, 30, 10, 20, 40)])
    with pytest.raises(ValueError, match="twice"):
        evaluate_mot(gt, pred)
