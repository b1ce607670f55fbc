"""Per-camera multi-object trackers. Importing this package registers the built-in trackers."""

from pipeline.tracking.base import TRACKERS, Tracker, build_tracker
from pipeline.tracking import mcsa as _mcsa  # noqa: F401  (registers "mcsa")
from pipeline.tracking import sort as _sort  # noqa: F401  (registers "sort")
from pipeline.tracking.config import build_tracker_from_config, load_tracker_params

__all__ = ["TRACKERS", "Tracker", "build_tracker", "build_tracker_from_config", "load_tracker_params"]
