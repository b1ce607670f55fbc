"""Detector wrapper on the real shipped YOLO11n OpenVINO model and real frames."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.device import resolve_device
from models.detector import DetectorError, PersonDetector


def test_missing_weights_name_the_path_and_fix(tmp_path):
    with pytest.raises(DetectorError, match="detector weights not found: .*nope.pt.*never downloaded"):
        PersonDetector(tmp_path / "nope.pt")


def test_wrong_weight_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "fake.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(DetectorError, match="cannot load detector weights .*fake.pt"):
        PersonDetector(bad)
    with pytest.raises(DetectorError, match="unsupported file type"):
        (tmp_path / "w.txt").write_text("x")
        PersonDetector(tmp_path / "w.txt")
    with pytest.raises(DetectorError, match="no OpenVINO"):
        PersonDetector(tmp_path)


def test_device_auto_is_cpu_without_cuda():
    import torch

    assert str(resolve_device("auto")) == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert str(resolve_device("cpu")) == "cpu"


def test_detects_people_on_real_frames(shared, yolo_weights):
    cap = cv2.VideoCapture(str(shared / "data/pets09_s2l1/vtest.avi"))
    frames = [cap.read()[1] for _ in range(3)]
    cap.release()
    det = PersonDetector(yolo_weights, conf=0.25)
    out = det.detect(frames)
    assert len(out) == 3
    for d in out:
        assert d.xyxy.dtype == np.float32 and d.xyxy.shape[1] == 4
        assert set(d.class_ids.tolist()) <= {0}
        assert (d.scores >= 0.25).all()
    # PETS09-S2L1 frame 1 has 4+ pedestrians in view (gt lists 4 on frame 1)
    assert len(out[0]) >= 3
    # batched and per-frame calls agree
    single = det.detect(frames[:1])[0]
    np.testing.assert_allclose(single.xyxy, out[0].xyxy, atol=1e-3)


# ------------------------------------------------------------------------- bad exports: one line, nothing installed

_HIDE_ONNXRUNTIME = """
import sys
class _NoOnnxRuntime:
    def find_spec(self, name, path=None, target=None):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ModuleNotFoundError("No module named 'onnxruntime'", name=name)
        return None
sys.meta_path.insert(0, _NoOnnxRuntime())
"""


def test_garbage_openvino_folder_is_one_line(tmp_path, yolo_weights):
    folder = tmp_path / "broken_openvino_model"
    folder.mkdir()
    (folder / "metadata.yaml").write_bytes((yolo_weights / "metadata.yaml").read_bytes())  # looks like an export
    (folder / "model.xml").write_text("<html>not a network</html>")
    (folder / "model.bin").write_bytes(os.urandom(4096))
    with pytest.raises(DetectorError) as err:
        PersonDetector(folder)
    assert str(folder / "model.xml") in str(err.value) and "not an OpenVINO IR" in str(err.value)
    (folder / "model.xml").write_text('<?xml version="1.0"?><net name="x" version="11"><layers></layers></net>')
    with pytest.raises(DetectorError) as err:  # a well-formed but empty IR: OpenVINO's own error, in one line
        PersonDetector(folder)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)
    renamed = tmp_path / "mymodel"
    folder.rename(renamed)
    with pytest.raises(DetectorError, match="named '<name>_openvino_model'.*rename it"):
        PersonDetector(renamed)


def test_garbage_and_foreign_onnx_are_one_line(tmp_path, shared):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(5000))
    with pytest.raises(DetectorError) as err:
        PersonDetector(junk)
    assert str(junk) in str(err.value) and "not an Ultralytics export" in str(err.value)
    # a real ONNX network that is not a YOLO detector (Open Model Zoo's person re-id export)
    reid = shared / "models/openvino_reid/person-reidentification-retail-0287/person-reidentification-retail-0267.onnx"
    with pytest.raises(DetectorError) as err:
        PersonDetector(reid)
    assert str(reid) in str(err.value) and "yolo export" in str(err.value) and "\n" not in str(err.value)


def test_onnx_without_onnxruntime_names_the_package_and_installs_nothing(tmp_path):
    weights = tmp_path / "yolo.onnx"
    weights.write_bytes(os.urandom(100))
    code = _HIDE_ONNXRUNTIME + (
        "from models.detector import DetectorError, PersonDetector\n"
        "try:\n    PersonDetector(sys.argv[1])\nexcept DetectorError as e:\n    print('ERR', e)\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(weights)], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.stdout.startswith("ERR ") and res.stdout.count("\n") == 1, res.stdout + res.stderr
    assert str(weights) in res.stdout and "pip install onnxruntime" in res.stdout
    assert "AutoUpdate" not in res.stdout + res.stderr and "attempting" not in res.stdout + res.stderr
