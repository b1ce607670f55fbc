"""Per-camera multi-object trackers. Importing this package registers the built-in trackers."""

from pipeline.tracking.base import TRACKERS, Tracker, build_tracker

__all__ = ["TRACKERS", "Tracker", "build_tracker"]
