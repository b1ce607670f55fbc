"""Scoring against ground truth. `mot`: single- and multi-camera tracking metrics (HOTA, CLEAR, Identity) via TrackEval."""

from pipeline.evaluation.mot import evaluate_mot, evaluate_mtmc, load_mot_file

__all__ = ["evaluate_mot", "evaluate_mtmc", "load_mot_file"]
