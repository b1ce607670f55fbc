"""`run` command: process cameras from a YAML config or `--source` options into tracks, files and the store."""

from __future__ import annotations

import argparse
import logging
import sys

ORDER = 10

EPILOG = """\
examples:
  # both EPFL Terrace cameras from the shipped config
  python run_pipeline.py run --config configs/epfl_terrace.yaml --output out
  # no YAML: one camera per --source CAM_ID=URI (file, rtsp:// URL, webcam index, image folder)
  python run_pipeline.py run --source view001=../shared/data/pets09_s2l1/vtest.avi --output out2
  python run_pipeline.py run --source door=rtsp://user:pass@192.168.1.20:554/stream1 --duration 600 --output live

outputs (DIR = --output):
  DIR/mot/<camera_id>.txt   MOTChallenge tracks: frame,id,x,y,w,h,score,-1,-1,-1 (frame 1-based); with association
                            enabled the id is the GLOBAL identity (same person = same id in every camera)
  DIR/mot_local/, mot_online/  with association: per-camera local track ids / the online global ids before the
                            offline refinement (recorded files)
  DIR/events.db             SQLite store: runs, cameras, tracks, track_boxes, action_events, ... (or store.url)
  DIR/events.jsonl          one finished action event per line (events.jsonl); search with `query` (query --help)
  DIR/video/*.mp4           annotated video when output.video is per_camera or mosaic
  DIR/ground/tracks.csv     association.mode fused: each identified person's ground position per step (metres,
                            m/s, the views that saw them); ground/map.png draws their paths and the cameras' views

An output folder that already holds a run's mot*/, video/ or ground/ files is refused unless --overwrite (then those files
are replaced); the store (events.db) and events.jsonl keep every run, each with its own run id.

exit codes: 0 all cameras finished, 3 some cameras failed or ended early (a truncated file), 1 fatal error (bad
            weights, a broken store) or no camera finished, 2 bad config/arguments (also an unusable --output),
            130 interrupted (Ctrl-C / SIGTERM; everything so far is flushed)
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the pipeline on cameras (files, RTSP, webcams, image folders): detection, tracking, Re-ID-AR, "
             "cross-camera identities, action events",
        description="Run the multi-camera pipeline. Give a YAML config, or cameras with --source, or both "
        "(--source then replaces the config's cameras).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", "-c", metavar="YAML", help="pipeline config (see configs/ and the README)")
    p.add_argument(
        "--source", "-s", action="append", default=[], metavar="CAM_ID=URI",
        help="add a camera (repeatable); replaces the config's cameras",
    )
    p.add_argument("--output", "-o", metavar="DIR", help="output folder (default: output.dir of the config, 'out')")
    p.add_argument("--weights", metavar="PATH", help="override detector.weights")
    p.add_argument("--device", metavar="DEV", help="override detector.device (auto, cpu, cuda:0)")
    p.add_argument("--tracker", metavar="NAME", help="override tracker.name")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop every camera after N frames")
    p.add_argument("--duration", type=float, metavar="SEC",
                   help="stop after SEC seconds of processing (counted from the first frame, after the models have "
                        "loaded); > 0")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the mot*/ and video/ files of an earlier run in the same --output folder")
    p.add_argument("--store", metavar="URL", help="override store.url (e.g. postgresql+psycopg://host/db)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--engine", choices=("local", "ray"),
                   help="override run.engine: local (one process, default) or ray (one actor per camera, Re-ID as a "
                        "service; README 'Scale out on Ray')")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="engine ray: cluster to join (auto, HOST:6379, ray://HOST:10001); default: a new local one")
    p.set_defaults(func=main)


def build_config(args):
    """Merge the YAML config, `--source` cameras and the override flags into one validated config."""
    from pipeline.config import ConfigError, config_from_sources, load_config, parse_config

    if not args.config and not args.source:
        raise ConfigError("give --config YAML or at least one --source CAM_ID=URI (see run --help)")
    cfg = load_config(args.config) if args.config else None
    if args.source:
        cfg = config_from_sources(args.source, base=cfg)
    data = cfg.model_dump()
    if args.weights:
        data["detector"]["weights"] = args.weights
    if args.device:
        data["detector"]["device"] = args.device
    if args.tracker:
        data["tracker"] = {"name": args.tracker, "params": {}}
    if args.max_frames is not None:
        if args.max_frames < 1:
            raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
        for cam in data["cameras"]:
            cam["max_frames"] = args.max_frames
    if args.duration is not None:
        if not args.duration > 0:
            raise ConfigError(f"--duration must be > 0 seconds, got {args.duration:g} (leave it out to run until the "
                              "files end or Ctrl-C)")
        data["run"]["duration_s"] = args.duration
    if args.overwrite:
        data["output"]["overwrite"] = True
    if args.store:
        data["store"]["url"] = args.store
    if args.no_progress:
        data["run"]["progress"] = False
    if args.output:
        data["output"]["dir"] = args.output
    if getattr(args, "engine", None):
        data["run"]["engine"] = args.engine
    if getattr(args, "ray_address", None):
        data["run"]["ray_address"] = args.ray_address
        if not getattr(args, "engine", None):
            data["run"]["engine"] = "ray"
    return parse_config(data, origin="command line")


def main(args) -> int:
    from pipeline.config import ConfigError

    log = logging.getLogger("mcsa")
    try:
        cfg = build_config(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from models.detector import DetectorError  # heavy imports (torch) only once the config is valid
    from pipeline.reid.encoder import ReIDLoadError
    from pipeline.engines import build_engine
    from pipeline.runner import RunSetupError
    from pipeline.stages.builder import StageConfigError
    from pipeline.store import StoreError

    try:
        summary = build_engine(cfg, cfg.output.dir).run()
    except (RunSetupError, StageConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (DetectorError, ReIDLoadError, StoreError, KeyError, ValueError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 1
    print(summary.table())
    if summary.error:
        print(f"error: {summary.error}", file=sys.stderr)
    else:
        log.info("outputs: %s/mot/*.txt, store %s", summary.output_dir,
                 cfg.store.url or f"{summary.output_dir}/events.db")
    return summary.exit_code
