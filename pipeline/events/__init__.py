"""Per-view action events: hysteresis over per-track action scores (Re-ID-AR action branch or box motion)."""

from pipeline.events.hysteresis import ActionEvent, ActionStateMachine, HysteresisParams
from pipeline.events.motion import MOTION_ACTIONS, MotionParams, MotionSource

__all__ = ["MOTION_ACTIONS", "ActionEvent", "ActionStateMachine", "HysteresisParams", "MotionParams", "MotionSource"]
