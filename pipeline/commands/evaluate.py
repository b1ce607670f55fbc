"""`evaluate` command group: every `pipeline/commands/evaluate_<what>.py` module adds `evaluate <what>`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import pipeline.commands as commands_pkg

ORDER = 20


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score outputs against ground truth (tracking, re-id, cross-camera)",
        description="Score the pipeline's outputs against ground truth. Pick what to evaluate:",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("evaluate_"):
            importlib.import_module(f"{commands_pkg.__name__}.{info.name}").register_evaluate(sub)
