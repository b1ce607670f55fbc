"""Engines that run a `PipelineConfig`: `local` (one process, `pipeline/runner.py`) and `ray` (one actor per camera
and a Re-ID service on a Ray cluster, `ray_engine.py`). Both return the same `RunSummary` and write the same outputs.

`run.engine` (CLI `--engine`) picks one; the local engine never imports Ray.
"""

from __future__ import annotations

from pathlib import Path

ENGINES = ("local", "ray")


def build_engine(config, output_dir: str | Path | None = None):
    """The engine object for `config.run.engine` (`.run() -> RunSummary`, `.stop()`)."""
    name = config.run.engine
    if name == "local":
        from pipeline.engines.local import LocalEngine

        return LocalEngine(config, output_dir)
    if name == "ray":
        from pipeline.engines.ray_engine import RayEngine

        return RayEngine(config, output_dir)
    raise ValueError(f"run.engine: unknown engine {name!r}; choose one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "build_engine"]
