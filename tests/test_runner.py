"""The loop's set-up rules: the output folder, --duration, cameras that cannot be opened."""

from __future__ import annotations

import os

import pytest

from pipeline.config import parse_config
from pipeline.runner import Pipeline, RunSetupError, prepare_output_dir


def test_output_folder_with_an_earlier_run_is_refused_unless_overwrite(tmp_path):
    out = prepare_output_dir(tmp_path / "out")
    assert out.is_dir()
    (out / "events.db").write_bytes(b"")  # the store and events.jsonl are shared by runs: no reason to refuse
    prepare_output_dir(out)
    (out / "mot").mkdir()
    (out / "mot" / "c0.txt").write_text("1,1,0,0,1,1,1,-1,-1,-1\n")
    with pytest.raises(RunSetupError, match=r"already holds a run's mot/.*--overwrite"):
        prepare_output_dir(out)
    assert prepare_output_dir(out, overwrite=True) == out
    assert (out / "mot" / "c0.txt").read_text()  # nothing is deleted before the run writes


def test_output_folder_that_is_a_file_or_cannot_be_created(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunSetupError, match="is an existing file"):
        prepare_output_dir(tmp_path / "f")
    if os.geteuid() != 0:  # root may write anywhere; the message is checked through the file case otherwise
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(RunSetupError, match="cannot create output folder"):
            prepare_output_dir(locked / "sub")
    with pytest.raises(RunSetupError, match="cannot create output folder"):
        prepare_output_dir(tmp_path / "f" / "sub")


def test_no_camera_opens_fails_before_any_model_loads(tmp_path):
    cfg = parse_config({"cameras": [{"id": "a", "source": str(tmp_path / "missing.mp4")}],
                        "detector": {"weights": str(tmp_path / "no_weights.pt")}, "run": {"progress": False}})
    summary = Pipeline(cfg, tmp_path / "out").run()  # the missing detector weights are never reached
    assert summary.status == "failed" and summary.exit_code == 1
    assert summary.cameras[0].status == "failed" and "not found" in summary.cameras[0].error
    assert not (tmp_path / "out" / "events.db").exists()


def test_duration_counts_the_frame_loop_not_model_start_up(shared, yolo_weights, tmp_path):
    cfg = parse_config({"cameras": [{"id": "view001", "source": str(shared / "data/pets09_s2l1/vtest.avi"), "fps": 7}],
                        "detector": {"weights": str(yolo_weights)}, "reid": {"enabled": False},
                        "run": {"progress": False, "duration_s": 1.5}})
    summary = Pipeline(cfg, tmp_path).run()
    assert summary.exit_code == 0, summary.table()
    assert 0 < summary.cameras[0].frames < 795 and summary.cameras[0].status == "stopped"
