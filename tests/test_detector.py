"""Detector wrapper on the real shipped YOLO11n OpenVINO model and real frames."""

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
