"""Tracker parameters: one YAML of documented defaults per tracker in configs/trackers/<name>.yaml."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import yaml

from core.paths import REPO_ROOT
from pipeline.tracking.base import TRACKERS, Tracker

TRACKER_CONFIG_DIR = REPO_ROOT / "configs" / "trackers"


def tracker_config_path(name: str) -> Path:
    return TRACKER_CONFIG_DIR / f"{name}.yaml"


def load_tracker_params(name: str) -> dict[str, Any]:
    """The default parameters of tracker `name` from configs/trackers/<name>.yaml (KeyError for unknown trackers)."""
    import pipeline.tracking  # noqa: F401  (registers the built-in trackers)

    TRACKERS.get(name)  # raises KeyError naming the known trackers
    path = tracker_config_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"tracker {name!r} has no parameter file {path}")
    with path.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of parameter names to values")
    return dict(data)


def build_tracker_from_config(
    name: str, overrides: dict[str, Any] | None = None, frame_rate: float | None = None
) -> Tracker:
    """Build tracker `name` with its YAML defaults, `overrides` merged on top.

    `frame_rate` (frames/s, the camera's own rate) is passed to trackers that take one (time-based parameters), unless
    `overrides` sets it. Unknown override keys raise ValueError naming the key and the valid keys.
    """
    params = load_tracker_params(name)
    cls = TRACKERS.get(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    valid = sorted(set(params) | accepted)
    for key in params:
        if key not in accepted:
            raise ValueError(f"{tracker_config_path(name)}: unknown parameter {key!r} for tracker {name!r}; "
                             f"valid: {', '.join(sorted(accepted))}")
    for key, value in (overrides or {}).items():
        if key not in accepted:
            raise ValueError(f"unknown parameter {key!r} for tracker {name!r}; valid: {', '.join(valid)}")
        params[key] = value
    if frame_rate is not None and "frame_rate" in accepted and "frame_rate" not in (overrides or {}):
        params["frame_rate"] = float(frame_rate)
    return cls(**params)
