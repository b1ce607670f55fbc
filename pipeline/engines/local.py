"""The local engine: everything in one process (`pipeline/runner.py`'s `Pipeline`). Never imports Ray."""

from pipeline.runner import Pipeline as LocalEngine

__all__ = ["LocalEngine"]
