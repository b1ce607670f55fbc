"""Shared fixtures. Tests that need real data or weights use `shared` and skip when the folder is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.paths import SHARED_ENV, shared_dir


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared data/models folder; skips the test when it is absent (a user's fresh clone)."""
    path = shared_dir()
    if not (path / "data").is_dir() or not (path / "models").is_dir():
        pytest.skip(f"shared data folder not found at {path} (set {SHARED_ENV} to the folder holding data/ and models/)")
    return path


@pytest.fixture(scope="session")
def yolo_weights(shared: Path) -> Path:
    """The shared YOLO11n INT8 OpenVINO detector (needs the openvino package)."""
    path = shared / "models" / "yolo11n_int8_openvino_model"
    if not path.is_dir():
        pytest.skip(f"detector weights missing: {path}")
    pytest.importorskip("openvino", reason="the OpenVINO detector needs the `openvino` package")
    return path
