"""Stages after the tracker: the protocol (`base`), and the builder that makes the run's stages from a config."""

from pipeline.stages.base import STAGES, CameraEnd, CameraInfo, RunEnd, RunInfo, Stage, Step, register_stage

__all__ = ["CameraEnd", "CameraInfo", "RunEnd", "RunInfo", "STAGES", "Stage", "Step", "register_stage"]
