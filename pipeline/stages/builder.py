"""Builds a run's stages from the config, in the one declared order (`STAGE_ORDER`).

| order | stage | reads | writes |
|---|---|---|---|
| 1 | `reid` (pipeline/reid/stage.py) | frame, tracks | tracks.embeddings, tracks.action_probs, step/end.appearance |
| 2 | `association` (pipeline/association/stage.py) | tracks, step.appearance | tracks.global_ids, step/end.links, end.identities |
| 3 | `events` (pipeline/events/stage.py) | tracks.action_probs, view_ids, global_ids | tracks.current_actions, step/end.action_events |
| 4 | `mot` (pipeline/outputs.py) | tracks, end.identities | files |
| 5 | `video` (pipeline/video_output.py) | frame, tracks.global_ids, current_actions | files |
| 6 | `ground_map` (pipeline/fusion/ground_map.py; fused mode) | step.ground | ground/tracks.csv, ground/map.png |
| 7 | `thumbnails` (pipeline/web/thumbnails.py) | frame, tracks | step/end.thumbnails |
| 8 | the config's `sinks:` (pipeline/sinks/), in their order | anything above | their own outputs |
| 9 | `store` (pipeline/store/stage.py) | everything above | the database |

A stage whose config turns it off is not built (`from_config` returns None).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.stages.base import STAGES, RunInfo, Stage

BUILTIN_MODULES = {
    "reid": "pipeline.reid.stage",
    "association": "pipeline.association.stage",
    "events": "pipeline.events.stage",
    "mot": "pipeline.outputs",
    "video": "pipeline.video_output",
    "ground_map": "pipeline.fusion.ground_map",
    "thumbnails": "pipeline.web.thumbnails",
    "store": "pipeline.store.stage",
}
STAGE_ORDER = ("reid", "association", "events", "mot", "video", "ground_map", "thumbnails", "sinks", "store")


class StageConfigError(ValueError):
    """A `sinks:` entry names no registered stage, or two stages would write the same field."""


def import_sinks(config) -> None:
    """Register every module of `pipeline/sinks/` and the config's out-of-tree sink modules."""
    import pipeline.sinks as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    for sink in config.sinks:
        if sink.module:
            try:
                importlib.import_module(sink.module)
            except ImportError as err:
                raise StageConfigError(f"sinks: {sink.name}: cannot import module {sink.module!r} ({err}); give an "
                                       "importable module (on PYTHONPATH) that registers the stage") from None


def stage_classes(config) -> list[tuple[type[Stage], dict]]:
    """The stage classes of a run and their params, in order (checked without building anything heavy)."""
    import_sinks(config)
    out = []
    for name in STAGE_ORDER:
        if name == "sinks":
            for sink in config.sinks:
                if sink.name not in STAGES or sink.name in BUILTIN_MODULES:
                    raise StageConfigError(
                        f"sinks: unknown sink {sink.name!r}; registered sinks: "
                        f"{', '.join(n for n in STAGES.names() if n not in BUILTIN_MODULES) or 'none'} (add one in "
                        "pipeline/sinks/ with @register_stage, or give its module)")
                out.append((STAGES.get(sink.name), dict(sink.params)))
        elif name == "association" and config.association.mode == "fused":
            importlib.import_module("pipeline.fusion.stage")  # ground-plane fusion replaces track-then-match
            out.append((STAGES.get("fused_association"), {}))
        else:
            importlib.import_module(BUILTIN_MODULES[name])
            out.append((STAGES.get(name), {}))
    return out


@dataclass
class BuiltStages:
    """The run's stages in call order, the run's facts, and the Re-ID stage (the loop's detection embedder uses its
    model when the tracker has an appearance cost)."""

    stages: list[Stage]
    run: RunInfo
    reid: Stage | None = None


def build_stages(config, output_dir: Path, all_files: bool, redacted_config: dict,
                 factories: dict | None = None) -> BuiltStages:
    """Build every enabled stage (models load here: bad weights fail now), create the run in the store, and return
    the stages with the `RunInfo` they will be opened with. `factories` {stage name: (config, params) -> Stage | None}
    replaces a stage's `from_config` (an engine that runs part of a stage elsewhere, e.g. the Ray engine's Re-ID)."""
    stages: list[Stage] = []
    writers: dict[str, str] = {}
    for cls, params in stage_classes(config):
        if cls.name == "store":
            params = {"output_dir": str(output_dir)}
        try:
            factory = (factories or {}).get(cls.name, cls.from_config)
            stage = factory(config, params)
        except TypeError as err:
            raise StageConfigError(f"sinks: {cls.name}: bad params {params} ({err})") from None
        if stage is None:
            continue
        for fact in stage.writes:
            if fact in writers:
                raise StageConfigError(f"stages {writers[fact]} and {cls.name} both write {fact}")
            writers[fact] = cls.name
        stages.append(stage)
    reid = next((s for s in stages if s.name == "reid"), None)
    if config.events.enabled:  # events.source: model needs a checkpoint with an action branch: fail before any I/O
        from pipeline.events.stage import resolve_source

        resolve_source(config.events.source, list(reid.action_names) if reid is not None else None)
    store = stages[-1]
    run_id = store.begin_run(redacted_config, str(output_dir))
    run = RunInfo(run_id=run_id, output_dir=Path(output_dir), all_files=all_files,
                  action_names=tuple(reid.action_names) if reid is not None else (),
                  embedding_dim=reid.embedding_dim if reid is not None else None)
    return BuiltStages(stages, run, reid)


__all__ = ["BUILTIN_MODULES", "STAGE_ORDER", "BuiltStages", "StageConfigError", "build_stages", "import_sinks",
           "stage_classes"]
