"""The direct detector path (models/detector_direct.py) against Ultralytics' predictor on the same weights and frames:
real YOLO11n weights (rebuilt from the shipped INT8 model by bench/yolo_from_openvino.py), real Terrace and PETS09
frames, on the CPU (the path is the same code on CUDA)."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from core.paths import REPO_ROOT
from pipeline.tracking.utils import iou_matrix

sys.path.insert(0, str(REPO_ROOT / "bench"))


def _frames(path, indices):
    cap = cv2.VideoCapture(str(path))
    out = []
    for i in indices:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, img = cap.read()
        assert ok, f"{path}: frame {i}"
        out.append(img)
    cap.release()
    return out


@pytest.fixture(scope="module")
def yolo_pt(shared, tmp_path_factory):
    ir = shared / "models" / "yolo11n_int8_openvino_model"
    if not ir.is_dir():
        pytest.skip(f"{ir} missing")
    from yolo_from_openvino import build_from_ir, save_checkpoint

    path = tmp_path_factory.mktemp("yolo") / "yolo11n_from_int8.pt"
    save_checkpoint(build_from_ir(ir), path)
    return path


def test_direct_path_matches_ultralytics_on_real_frames(shared, yolo_pt):
    from models.detector import PersonDetector

    terrace = _frames(shared / "data" / "epfl_terrace1" / "terrace1-c0.mp4", [400, 600, 800, 1000])
    pets = _frames(shared / "data" / "pets09_s2l1" / "vtest.avi", [10, 200, 400])
    frames = [terrace[0], pets[0], terrace[1], pets[1], terrace[2], pets[2], terrace[3]]  # sizes interleaved
    ultra = PersonDetector(yolo_pt, conf=0.1, device="cpu", direct="off")
    direct = PersonDetector(yolo_pt, conf=0.1, device="cpu", direct="on")
    assert ultra._direct is None and direct._direct is not None
    got = direct.detect(frames)
    assert len(got) == len(frames)
    # Ultralytics letterboxes a batch of one size to its own rectangle: compare per size
    want = {}
    for group in (terrace, pets):
        for img, det in zip(group, ultra.detect(group)):
            want[id(img)] = det
    total = matched = 0
    for img, det in zip(frames, got):
        ref = want[id(img)]
        assert abs(len(det) - len(ref)) <= max(1, len(ref) // 10), (len(det), len(ref))
        assert (det.class_ids == 0).all() and det.xyxy.dtype == np.float32
        assert (det.xyxy[:, [0, 2]] <= img.shape[1]).all() and (det.xyxy[:, [1, 3]] <= img.shape[0]).all()
        strong = ref.scores >= 0.3  # boxes near the threshold may flip either way with resampling
        total += int(strong.sum())
        if len(det) and strong.any():
            iou = iou_matrix(ref.xyxy[strong], det.xyxy)
            best = iou.argmax(1)
            ok = (iou.max(1) >= 0.9) & (np.abs(det.scores[best] - ref.scores[strong]) < 0.05)
            matched += int(ok.sum())
    assert total >= 20, total  # people in view: the comparison means something
    assert matched >= 0.95 * total, (matched, total)
    empty = direct.detect([np.zeros((288, 360, 3), np.uint8)])[0]
    assert len(empty) == 0

