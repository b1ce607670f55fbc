"""Per-camera multi-object trackers. Importing this package registers every tracker module in this folder (a new
tracker is one module here with `@TRACKERS.register("name")` on its `Tracker` subclass)."""

import importlib
import pkgutil

from pipeline.tracking.base import TRACKERS, Tracker, build_tracker
from pipeline.tracking.config import build_tracker_from_config, load_tracker_params

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("base", "config", "utils", "tracklets"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["TRACKERS", "Tracker", "build_tracker", "build_tracker_from_config", "load_tracker_params"]
