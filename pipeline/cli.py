"""Command-line entry point: `python run_pipeline.py <command> ...`.

Every module in `pipeline/commands/` that defines `register(subparsers)` adds one command. Heavy libraries (torch,
ultralytics) are imported inside the commands, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import pipeline.commands as commands_pkg
from pipeline import __version__

DESCRIPTION = """\
Multi-camera surveillance video analytics: person detection (Ultralytics YOLO), per-camera tracking (Kalman/SORT
family), Re-ID-AR appearance + action recognition on tracklets, cross-camera identity association, and an event store.

Typical use:
  python run_pipeline.py run --config configs/epfl_terrace.yaml --output out
  python run_pipeline.py run --source cam1=video.mp4 --source cam2=rtsp://user:pass@10.0.0.5/stream --output out
  python run_pipeline.py query events --output out --camera cam1        # what happened where, from the store
  python run_pipeline.py evaluate mot --gt gt.txt --pred out/mot/cam1.txt
  python run_pipeline.py train --config configs/reid_ar_osnet_shared.yaml --output runs/mine   # Re-ID-AR

Run `python run_pipeline.py <command> --help` for each command's options.
"""


def _command_modules():
    modules = []
    for info in pkgutil.iter_modules(commands_pkg.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands_pkg.__name__}.{info.name}")
        if hasattr(module, "register"):
            modules.append(module)
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 50), m.__name__))


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the argument and where help is (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="run_pipeline.py", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules():
        module.register(sub)
    return parser


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("ultralytics", "PIL", "matplotlib", "urllib3", "faiss", "faiss.loader"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a bug or an unforeseen input: one line, the traceback on --debug
        if args.debug:
            raise
        first = str(err).splitlines()[0] if str(err) else ""
        print(f"error: {type(err).__name__}: {first} (run again with --debug for the traceback, and please report "
              "it)", file=sys.stderr)
        return 1
