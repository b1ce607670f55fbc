"""The Ray engine: the same pipeline over a Ray cluster (one machine or many).

    camera actor (one per camera, placed by cameras[].resources)        ReIDService actor (reid.num_gpus), or
      reader -> detector -> tracker -> TrackletCropper                    Serve replicas (reid.ray_service serve)
               (or detector.service: each frame -> the detector Serve deployment, @serve.batch across cameras)
        | CameraFrame(tracks, clip crops[, image]) batches                  ClipEncoder.encode((B, T, H, W, 3))
        v                                                                       ^ one call per batch / request
    driver (this process): ordering by step (files) or watermark (live) -> stages in the local order:
      reid (PrecroppedReIDStage: ReIDBatcher, groups, result lag; or ServedReIDStage: one request per camera and
      step, batched by @serve.batch) -> association -> events -> mot -> video -> sinks -> store

Ordering. Recorded files: step k holds frame k of every running camera, exactly as the local engine's loop, so the
outputs are the same as `--engine local` (tests/test_ray_engine.py compares them). Live cameras: a frame is handed to
the stages once every camera that has sent something within `run.ray_watermark_wait_s` has sent a frame at least as
new (the watermark = the oldest of the live cameras' newest timestamps), one frame per camera per step; this adds at
most one frame interval of the slowest camera, or `ray_watermark_wait_s` when a camera goes silent. Recorded files in
a live run keep their own clock (from 0) and go on one frame per step, outside the watermark.

Faults. A camera actor that dies: a recorded file's camera is reported `failed` in one line (the frames it sent are
kept), the others finish; a live camera's actor is restarted by Ray (`run.ray_max_restarts`), reopened and its
track ids continue from restart x 1,000,000 (never reused). The Re-ID service is restarted by Ray; the batch in
flight is retried once, then its clips are dropped and counted (`lost_in_service`); a dead Serve replica is replaced
by Serve, and its requests are retried the same way. A detector replica (detector.service) is replaced by Serve; a
frame whose request failed twice gets no detections and is counted (`dropped_frames`), the camera goes on. The
association, events and store stages run in the driver (or, with `run.ray_stages: actor`, in one named actor fed
with the ordered steps: `stages_actor.py`; if it dies the run stops with one line): if the driver dies the run ends,
and what the store committed stays committed.
Ctrl-C / SIGTERM: as in the local engine.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import time
from collections import deque
from contextlib import ExitStack

import numpy as np

from core.paths import REPO_ROOT, shared_dir
from core.types import Frame
from pipeline.engines.messages import CameraDone, CameraFrame
from pipeline.engines.stages_actor import StagesActorDied
from pipeline.runner import (Pipeline, RunSetupError, _graceful_signals, close_stages, prepare_output_dir, run_error,
                             update_bars)
from pipeline.stages.base import CameraEnd, CameraInfo, Step, drive_step, open_stages
from pipeline.summary import CameraSummary, RunSummary

log = logging.getLogger("mcsa.engine.ray")

RESTART_ID_STRIDE = 1_000_000  # track ids of a restarted live camera start at restarts x this
TAKE_MAX = 64  # messages per driver call to a camera actor
PUSH_EVERY = 8  # recorded files: steps between two pushes of clip results to an actor the driver is not waiting for


def ray_init_kwargs() -> dict:
    """`ray.init` arguments every driver of this project uses: workers import the project from its folder (the same
    path on every node) and find the shared data through `MCSA_SHARED`."""
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
           "MCSA_SHARED": str(shared_dir())}
    return dict(runtime_env={"env_vars": env}, namespace="mcsa", log_to_driver=True, logging_level=logging.WARNING,
                configure_logging=False)


class RayEngine(Pipeline):
    """Runs a `PipelineConfig` on Ray (`run.engine: ray`); same outputs, summary and exit codes as `Pipeline`."""

    def __init__(self, config, output_dir=None) -> None:
        super().__init__(config, output_dir)
        self.actors: dict = {}  # camera id -> actor handle
        self.reid_actor = None
        self.reid_service = "actor"  # or "serve" (`reid.ray_service`, resolved by `_reid_service_kind`)
        self.serve_apps: dict[str, str] = {}  # "reid" / "detector" -> this run's Serve application (deleted at its end)
        self.detector_counters: dict | None = None  # the detector deployment's (detector.service), after the run
        self._started_serve = False  # this run started Serve on the cluster (and shuts it down)
        self.handoff = {"calls": 0, "messages": 0, "wait_s": 0.0}
        self.stages_proxy = None  # run.ray_stages actor: the driver's handle on the stages actor (stages_actor.py)

    # ---- cluster ------------------------------------------------------------------------------------------------
    def _init_ray(self) -> bool:
        """Join `run.ray_address` or start a local cluster; True when this call started Ray (and shuts it down)."""
        try:
            import ray
        except ImportError:
            raise RunSetupError("run.engine ray needs the `ray` package: pip install -r requirements.txt (or use "
                                "--engine local)") from None
        if ray.is_initialized():
            return False
        kwargs = ray_init_kwargs()
        address = self.config.run.ray_address
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(include_dashboard=self.config.run.ray_dashboard, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise RunSetupError(f"cannot reach the Ray cluster at {address or 'a new local cluster'} "
                                f"({str(err).splitlines()[0][:200]}): start it with `ray start --head`, or check "
                                "--ray-address") from None
        return True

    @staticmethod
    def _camera_options(cam, max_restarts: int) -> dict:
        res = dict(cam.resources)
        opts = dict(num_cpus=res.pop("CPU", 0), num_gpus=res.pop("GPU", 0), max_restarts=max_restarts,
                    max_concurrency=4)
        if res:
            opts["resources"] = res
        return opts

    def _reid_service_kind(self) -> str:
        """`reid.ray_service` resolved: auto is serve when a camera's source is live (URL or webcam) or
        `reid.replicas` > 1, else actor (recorded files: deterministic, the local engine's outputs)."""
        cfg = self.config.reid
        if cfg.ray_service != "auto":
            return cfg.ray_service
        return "serve" if cfg.replicas > 1 or any(_is_live_source(c.source) for c in self.config.cameras) else "actor"

    def _start_reid_service(self, ray):
        self.reid_service = self._reid_service_kind()
        gpus = ray.cluster_resources().get("GPU", 0.0)
        if self.config.reid.num_gpus > gpus:  # the service would wait forever for a GPU
            raise RunSetupError(f"reid.num_gpus {self.config.reid.num_gpus:g} exceeds the GPUs of the Ray cluster "
                                f"({gpus:g}): start a GPU node, or set reid.num_gpus: 0")
        if self.reid_service == "serve":
            return self._start_reid_serve(ray)
        from pipeline.engines.reid_service import RemoteEncoder, ReIDService
        from ray.exceptions import RayTaskError

        cfg = self.config.reid
        self.reid_actor = ray.remote(ReIDService).options(
            num_cpus=0, num_gpus=cfg.num_gpus, max_restarts=3, max_concurrency=1).remote(cfg)
        try:
            info = ray.get(self.reid_actor.describe.remote())
        except RayTaskError as err:
            raise _cause(err) from None
        log.info("Re-ID service on %s: %s, %s", info["host"], info["source"], info["backend"])
        return RemoteEncoder(self.reid_actor, info)

    def _start_reid_serve(self, ray):
        """The Re-ID-AR deployment (`reid_serve.py`) on Ray Serve without HTTP ingress (the driver calls it through
        its handle): `reid.replicas` replicas, `reid.num_gpus` each."""
        from pipeline.engines.reid_serve import ReIDDeployment, ServeClient

        cfg = self.config.reid
        handle = self._deploy(ray, "reid", ReIDDeployment, (cfg,), cfg.replicas, cfg.num_gpus,
                              max(64, 2 * cfg.max_batch),
                              "check reid.* (weights, checkpoint), or use reid.ray_service: actor")
        info = handle.describe.remote().result(timeout_s=300)
        log.info("Re-ID on Ray Serve (%s, %d replica(s), batches of up to %d clips within %g ms): %s, %s",
                 self.serve_apps["reid"], cfg.replicas, cfg.max_batch, cfg.max_wait_ms, info["source"],
                 info["backend"])
        return ServeClient(handle, info, self.serve_apps["reid"], cfg.replicas)

    def _start_detector_serve(self, ray):
        """The detector deployment (`detector_serve.py`, `detector.service: true`): `detector.replicas` replicas,
        `detector.num_gpus` each; its handle goes to every camera actor (they load no detector)."""
        from pipeline.engines.detector_serve import DetectorDeployment

        cfg = self.config.detector
        gpus = ray.cluster_resources().get("GPU", 0.0)
        if cfg.num_gpus > gpus:  # the replicas would wait forever for a GPU
            raise RunSetupError(f"detector.num_gpus {cfg.num_gpus:g} exceeds the GPUs of the Ray cluster ({gpus:g}): "
                                "start a GPU node, or set detector.num_gpus: 0")
        cameras = len(self.config.cameras)
        handle = self._deploy(ray, "detector", DetectorDeployment, (cfg, -(-cameras // cfg.replicas)), cfg.replicas,
                              cfg.num_gpus, max(64, 2 * cameras, 2 * cfg.max_batch),
                              "check detector.weights, or set detector.service: false")
        info = handle.describe.remote().result(timeout_s=300)
        log.info("detector on Ray Serve (%s, %d replica(s), batches of up to %d frames within %g ms): %s (%s, %s) "
                 "on %s", self.serve_apps["detector"], cfg.replicas, cfg.max_batch, cfg.max_wait_ms, info["weights"],
                 info["format"], info["device"], info["host"])
        return handle

    def _deploy(self, ray, name: str, body, args: tuple, replicas: int, num_gpus: float, max_ongoing: int, fix: str):
        """Run `body(*args)` as this run's Serve application `mcsa-<name>-<pid>-<ms>` (no HTTP proxy; `replicas`
        replicas with `num_gpus` and 0 CPUs each; Serve started if needed) and return its handle once every replica
        is up. A replica that cannot start (bad weights) raises `RunSetupError` with its own error and `fix`."""
        from ray import serve

        if not self.serve_apps:
            self._started_serve = not _serve_running(ray)
        app_name = f"mcsa-{name}-{os.getpid()}-{int(time.time() * 1000) % 10**9}"
        self.serve_apps[name] = app_name
        quiet = {"log_level": "WARNING", "enable_access_log": False}
        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # the driver's Serve client: no per-app INFO lines
        try:
            serve.start(proxy_location="Disabled", logging_config=quiet)
            app = serve.deployment(body).options(
                name=name, num_replicas=replicas, max_ongoing_requests=max_ongoing, logging_config=quiet,
                ray_actor_options={"num_cpus": 0, "num_gpus": num_gpus,
                                   "runtime_env": ray_init_kwargs()["runtime_env"]}).bind(*args)
            return serve.run(app, name=app_name, route_prefix=None)
        except Exception as err:  # noqa: BLE001 - the replica's model load failed, or Serve could not start
            why = _root_error(err)
            try:  # the replica's own error (bad weights: ReIDLoadError, DetectorError) is in the deployment's status
                why = _root_error(RuntimeError(serve.status().applications[app_name].deployments[name].message))
            except Exception:  # noqa: BLE001 - no status: keep Serve's message
                pass
            raise RunSetupError(f"the {name} Serve deployment did not start ({why}); {fix}") from None

    def _stop_serve(self) -> None:
        """Delete this run's applications; shut Serve down when this run started it."""
        if not self.serve_apps:
            return
        from ray import serve

        try:
            for app_name in self.serve_apps.values():
                serve.delete(app_name)
            if self._started_serve:
                serve.shutdown()
                stop_serve_router_loop()
        except Exception as err:  # noqa: BLE001 - the cluster is going away anyway
            log.warning("could not stop the Serve deployments (%s)", str(err).splitlines()[0][:160])
        self.serve_apps = {}

    def _start_cameras(self, ray, reid_input_size, reid_resize: str = "bilinear",
                       detector_handle=None) -> tuple[list[CameraInfo], dict]:
        from pipeline.engines.camera_worker import CameraWorker
        from ray.exceptions import RayTaskError
        from streams import redact_uri

        cfg = self.config
        # the frame's pixels travel only for stages that draw or crop them on the driver
        send_images = cfg.output.video != "off" or bool(cfg.sinks) or cfg.store.thumbnails
        total = ray.cluster_resources()
        for cam in cfg.cameras:  # an actor asking for what no node has would wait forever
            missing = {k: v for k, v in cam.resources.items() if total.get(k, 0.0) < v}
            if missing:
                offered = ", ".join(f"{k} {v:g}" for k, v in sorted(total.items())
                                    if not k.startswith(("node:", "memory", "object_store")))
                raise RunSetupError(
                    f"camera {cam.id}: cameras[].resources {missing} exceed what the Ray cluster offers ({offered}); "
                    "start a node with `ray start --resources='{...}'` or change the camera's resources")
        remote = ray.remote(CameraWorker)
        for cam in cfg.cameras:
            self.summaries[cam.id] = CameraSummary(cam.id, redact_uri(str(cam.source)))
            self.actors[cam.id] = remote.options(**self._camera_options(cam, cfg.run.ray_max_restarts)).remote(
                cfg, cam.id, send_images, reid_input_size, reid_resize=reid_resize, detector_handle=detector_handle)
        refs = {cam_id: a.open.remote() for cam_id, a in self.actors.items()}
        infos, totals = [], {}
        for cam_id, ref in refs.items():
            try:
                info = ray.get(ref)
            except RayTaskError as err:
                raise _cause(err) from None
            infos.append(info)
            summary = self.summaries[cam_id]
            if info.error is not None:
                summary.status, summary.error = "failed", info.error
                ray.kill(self.actors.pop(cam_id))
                continue
            where = ray.get(self.actors[cam_id].where.remote())
            summary.node = "/".join(str(where[k]) for k in ("host", "node_ip", "node_id") if where.get(k))
            summary.is_live = info.is_live
            totals[cam_id] = ray.get(self.actors[cam_id].total_frames.remote())
            log.info("camera %s runs on node %s (pid %d)", cam_id, summary.node, where["pid"])
        return infos, totals

    # ---- the run ------------------------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        from pipeline.stages.builder import build_stages, stage_classes

        cfg = self.config
        started = time.monotonic()
        prepare_output_dir(self.output_dir, cfg.output.overwrite)
        stage_classes(cfg)
        started_ray = self._init_ray()
        import ray

        try:
            return self._run(ray, started, build_stages)
        finally:
            extra = [a for a in (self.reid_actor, getattr(self.stages_proxy, "handle", None)) if a is not None]
            for actor in list(self.actors.values()) + extra:
                try:
                    ray.kill(actor)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            self._stop_serve()
            # drop this run's Ray handles now, while this process still has its Ray worker: handles freed after
            # `ray.shutdown()` (the caller's, or ours below) by a later garbage collection can crash the process
            self.actors, self.reid_actor = {}, None
            if self.stages_proxy is not None:
                self.stages_proxy.handle = self.stages_proxy.created = None
            gc.collect()
            if started_ray:
                ray.shutdown()

    def _run(self, ray, started: float, build_stages) -> RunSummary:
        cfg = self.config
        encoder = self._start_reid_service(ray) if cfg.reid.enabled else None
        detector = self._start_detector_serve(ray) if cfg.detector.service else None
        infos, totals = self._start_cameras(ray, encoder.input_size if encoder is not None else None,
                                            encoder.resize if encoder is not None else "bilinear", detector)
        if not self.actors:
            return RunSummary(None, "failed", list(self.summaries.values()), time.monotonic() - started,
                              self.output_dir, error="no camera could be opened")
        all_files = all(not i.is_live for i in infos if i.error is None)

        def reid_factory(config, params):
            if encoder is None:
                return None
            if self.reid_service == "serve":
                from pipeline.engines.reid_serve import ServedReIDStage

                return ServedReIDStage(config.reid, encoder)
            from pipeline.engines.reid_service import PrecroppedReIDStage

            return PrecroppedReIDStage(config.reid, encoder)

        if cfg.run.ray_stages == "actor":  # Re-ID here; association .. store in one named actor (stages_actor.py)
            from pipeline.engines.stages_actor import start_stages_actor
            from pipeline.stages.builder import BuiltStages

            reid = reid_factory(cfg, {})
            self.stages_proxy, run = start_stages_actor(ray, cfg, self.output_dir, all_files,
                                                        self._redacted_config(), reid)
            built = BuiltStages([s for s in (reid, self.stages_proxy) if s is not None], run, reid)
            log.info("stages %s run in the Ray actor %s", ", ".join(self.stages_proxy.stage_names),
                     self.stages_proxy.actor_name)
        else:
            built = build_stages(cfg, self.output_dir, all_files, self._redacted_config(), {"reid": reid_factory})
        stages = built.stages
        log.info("run %s on Ray: %d camera(s), output in %s", built.run.run_id, len(cfg.cameras), self.output_dir)
        status = "failed"
        state = _LoopState(all_files)
        end_holder: dict = {}  # status and the first error, for the stages' close
        with ExitStack() as stack:
            stack.callback(self._close_ray, ray, state, stages, built.reid, end_holder)
            try:
                open_stages(stages, built.run, infos)
                for info in infos:
                    if info.error is None:
                        self.summaries[info.camera_id].status = "running"
                self.loop_started = time.monotonic()  # cameras start decoding now (benchmarks time the loop from here)
                ray.get([a.start.remote(all_files) for a in self.actors.values()])
                bars = self._bars(totals, stack)
                with _graceful_signals(self):
                    self._ray_loop(ray, state, stages, built.reid, bars)
                status = "interrupted" if self._interrupted else "completed"
            except KeyboardInterrupt:
                status = "interrupted"
            except StagesActorDied as err:  # the association/store actor is gone: stop, one line
                log.error("%s", err)
                status = "failed"
                end_holder["error"] = str(err)
                self._mark_run_failed(built.run.run_id)
            except Exception as err:
                if run_error(err) is None:
                    raise
                status = "failed"  # the store or an output broke: close the rest, print the summary
                end_holder["error"] = run_error(err, self.output_dir)
            if status == "interrupted":
                log.warning("interrupted: stopping cameras and flushing what was recorded")
            if status == "completed" and not any(s.status != "failed" for s in self.summaries.values()):
                status = "failed"
            end_holder["status"] = status
        counters, lines = {}, []
        for s in stages:
            if s is self.stages_proxy:  # the actor's stages, as returned by its close
                counters.update(s.counters_by_stage)
                lines.extend(s.lines)
            else:
                counters[s.name] = s.counters()
                lines.extend(line for line in [s.summary_line()] if line)
        counters["ray"] = dict(self.handoff)
        if self.detector_counters is not None:
            from pipeline.engines.detector_serve import summary_line

            counters["detector_service"] = self.detector_counters
            lines.append(summary_line(self.detector_counters))
        lines.append(f"Ray: {self.handoff['messages']} frame messages in {self.handoff['calls']} calls, driver waited "
                     f"{self.handoff['wait_s']:.1f} s for cameras")
        lines += self._detection_embedding_line()
        return RunSummary(built.run.run_id, status, list(self.summaries.values()), time.monotonic() - started,
                          self.output_dir, counters, lines, error=end_holder.get("error"))

    def _mark_run_failed(self, run_id: int | None) -> None:
        """The stages actor died with the store's writer in it: the run's row (still `running`) says `failed`, so
        the store shows the run did not finish; every row it committed stays. Best effort: a SQLite store on another
        node is out of reach (a warning says so)."""
        if run_id is None or self.stages_proxy is None or "store" not in self.stages_proxy.stage_names:
            return
        from sqlalchemy import update

        from pipeline.store import open_engine, schema
        from pipeline.store.stage import store_url

        try:
            engine = open_engine(store_url(self.config, self.output_dir))
            try:
                with engine.begin() as conn:
                    conn.execute(update(schema.runs).where(schema.runs.c.id == run_id)
                                 .values(ended_at=time.time(), status="failed"))
            finally:
                engine.dispose()
        except Exception as err:  # noqa: BLE001 - the store is elsewhere or gone: say so, the run still stops
            log.warning("run %s stays 'running' in the store: %s", run_id, _root_error(err))

    def _bars(self, totals: dict, stack: ExitStack) -> dict:
        if not self.config.run.progress:
            return {}
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        stack.enter_context(logging_redirect_tqdm())
        return {cam_id: stack.enter_context(tqdm(total=total, desc=cam_id, unit="fr", position=pos,
                                                 dynamic_ncols=True, leave=True))
                for pos, (cam_id, total) in enumerate(totals.items())}

    # ---- the driver's loop --------------------------------------------------------------------------------------
    def _ray_loop(self, ray, state: "_LoopState", stages, reid, bars) -> None:
        state.active = list(self.actors)
        state.pending = {c: deque() for c in state.active}
        state.inflight = {}
        state.live = {c for c in state.active if self.summaries[c].is_live}
        duration = self.config.run.duration_s
        loop_started = time.monotonic()
        while state.active and not self._stop.is_set():
            if duration is not None and time.monotonic() - loop_started >= duration:
                self._stop.set()
                break
            self._collect(ray, state)
            if state.all_files:
                self._file_steps(state, stages, reid, bars)
            else:
                self._live_steps(state, stages, reid, bars)

    def _collect(self, ray, state: "_LoopState") -> None:
        """Fetch whatever the camera actors have ready (waiting at most 0.5 s for the first)."""
        from ray.exceptions import RayActorError

        if self.config.reid.enabled and self.config.reid.schedule.enabled:
            self._push_results(state)
        for cam in state.active:  # ask again where little is queued (bounds the driver's memory)
            if (cam not in state.inflight and cam not in state.done and cam not in state.dead
                    and len(state.pending[cam]) < TAKE_MAX):
                state.inflight[cam] = self.actors[cam].take.remote(TAKE_MAX, 0.5)
        if not state.inflight:
            return
        refs = {ref: cam for cam, ref in state.inflight.items()}
        t0 = time.monotonic()
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
        if ready:
            more, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
            ready = list(dict.fromkeys(ready + more))
        self.handoff["wait_s"] += time.monotonic() - t0
        for ref in ready:
            cam = refs[ref]
            del state.inflight[cam]
            try:
                messages = ray.get(ref)
            except RayActorError as err:
                self._actor_died(ray, state, cam, err)
                continue
            self.handoff["calls"] += 1
            for m in messages:
                if isinstance(m, CameraDone):
                    state.done[cam] = m
                else:
                    self.handoff["messages"] += 1
                    state.pending[cam].append(m)
                    state.newest[cam] = m.timestamp_s
                    state.heard[cam] = time.monotonic()

    def _push_results(self, state: "_LoopState") -> None:
        """Hand the applied clip results back to their camera actors, whose clip schedule (`reid.schedule`) needs
        them. Recorded files: batched every `PUSH_EVERY` steps, and at once to a camera the driver waits for (its
        actor may be waiting for them: `CameraWorker._fold_results`)."""
        for cam in state.active:
            if cam in state.done or cam in state.dead:
                continue
            results = state.results.get(cam) or []
            seq, sent = state.pushed.get(cam, (0, -1))
            if state.all_files:
                if state.through <= sent or (state.pending[cam] and state.through - sent < PUSH_EVERY):
                    continue
            elif not results:
                continue
            self.actors[cam].push_results.remote(seq, results, state.through)
            state.results[cam] = []
            state.pushed[cam] = (seq + 1, state.through)

    def _actor_died(self, ray, state: "_LoopState", cam: str, err) -> None:
        summary = self.summaries[cam]
        reason = str(err).splitlines()[0][:160]
        if summary.is_live and state.restarts.get(cam, 0) < self.config.run.ray_max_restarts:
            state.restarts[cam] = state.restarts.get(cam, 0) + 1
            n = state.restarts[cam]
            log.warning("camera %s: its Ray actor died (%s); restarted by Ray (%d/%d), reconnecting", cam, reason, n,
                        self.config.run.ray_max_restarts)
            actor = self.actors[cam]
            try:
                deadline = time.monotonic() + 180
                while True:  # calls fail while Ray restarts the actor's process
                    try:
                        ray.get(actor.set_id_offset.remote(n * RESTART_ID_STRIDE), timeout=30)
                        break
                    except Exception:  # noqa: BLE001 - still restarting
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.5)
                info = ray.get(actor.open.remote(), timeout=180)
                if info.error is None:
                    ray.get(actor.start.remote(False), timeout=60)
                    summary.reconnects += 1
                    state.inflight[cam] = actor.take.remote(TAKE_MAX, 0.5)
                    return
                reason = info.error
            except Exception as again:  # noqa: BLE001 - give the camera up below
                reason = f"restart failed: {str(again).splitlines()[0][:160]}"
        msg = f"camera {cam}: its Ray actor died ({reason}); the camera is reported failed, the others go on"
        log.error("%s", msg)
        self._reported.add(cam)
        state.done[cam] = CameraDone(cam, "failed", summary.frames + len(state.pending[cam]), msg)
        state.dead.add(cam)

    def _file_steps(self, state: "_LoopState", stages, reid, bars) -> None:
        """Recorded files: step k = frame k of every running camera, as the local loop (same outputs)."""
        while state.active and all(state.pending[c] or c in state.done for c in state.active):
            batch = []
            for cam in list(state.active):
                if state.pending[cam]:
                    batch.append(state.pending[cam].popleft())
                else:
                    state.active.remove(cam)
                    self._ended(state.done[cam], stages, reid)
            if batch:
                self._step(state, batch, stages, reid, bars)
            if self._stop.is_set():
                return

    def _live_steps(self, state: "_LoopState", stages, reid, bars) -> None:
        """Live: hand frames on in time order, one per camera per step, up to the watermark."""
        wait = self.config.run.ray_watermark_wait_s
        while state.active:
            for cam in list(state.active):
                if not state.pending[cam] and cam in state.done:
                    state.active.remove(cam)
                    self._ended(state.done[cam], stages, reid)
            now = time.monotonic()
            heard = [c for c in state.active
                     if c in state.live and (state.pending[c] or now - state.heard.get(c, -1e9) < wait)]
            watermark = min((state.newest.get(c, -1e18) for c in heard), default=float("inf"))
            # live cameras: up to the watermark; file cameras in a live run (their own clock from 0): next frame
            batch = [state.pending[c].popleft() for c in state.active if state.pending[c]
                     and (c not in state.live or state.pending[c][0].timestamp_s <= watermark)]
            if not batch:
                return
            self._step(state, batch, stages, reid, bars)
            if self._stop.is_set():
                return

    def _ended(self, done: CameraDone, stages, reid) -> None:
        summary = self.summaries[done.camera_id]
        summary.status, summary.error = done.status, done.error
        summary.dropped, summary.reconnects = done.dropped, summary.reconnects + done.reconnects
        if done.status == "failed":
            if done.camera_id not in self._reported:
                log.error("%s", done.error)
        elif done.status == "completed":
            log.info("camera %s: finished after %d frames", done.camera_id, summary.frames)
        self._reported.add(done.camera_id)
        if reid is not None and done.clips:
            reid.queue_clips(done.camera_id, done.clips)
        if reid is not None:
            reid.skipped_on_cameras[done.camera_id] = done.clips_skipped
        end = CameraEnd(done.camera_id, summary.status, summary.frames, summary.error)
        for stage in stages:
            stage.on_camera_end(end)

    def _embed_detections(self, batch: list[CameraFrame], reid) -> None:
        """The crops the cameras cut of their detections (`CameraFrame.det_crops`), embedded in one Re-ID batch for
        the step, attached as `Detections.embeddings` (ground-plane fusion, `fusion.appearance: detections`)."""
        with_crops = [m for m in batch if m.det_crops is not None and m.tracks.detections is not None]
        if reid is None or not with_crops:
            return
        if self._det_embedder is None:  # the cameras chose the crops; the score is for the summary's line
            from pipeline.reid.detection_embedder import DetectionEmbedder, detection_embedding_min_score

            self._det_embedder = DetectionEmbedder(reid.encoder, detection_embedding_min_score(self.config, None),
                                                   max_batch=self.config.reid.max_batch)
        try:
            embs = self._det_embedder.embed_crops([(len(m.tracks.detections), *m.det_crops) for m in with_crops])
        except Exception as err:  # noqa: BLE001 - a lost Re-ID service costs this step its looks, not the run
            self._det_embed_failures += 1
            if self._det_embed_failures == 1:
                log.warning("Re-ID of single detections failed (%s: %s): the fusion uses geometry only at such steps",
                            type(err).__name__, err)
            return
        for m, e in zip(with_crops, embs):
            m.tracks.detections.embeddings = e

    def _step(self, state: "_LoopState", batch: list[CameraFrame], stages, reid, bars) -> None:
        step = Step(state.index, max(m.timestamp_s for m in batch))
        now = time.monotonic()
        self._embed_detections(batch, reid)
        for m in batch:
            image = m.image if m.image is not None else _placeholder(m.size)
            frame = Frame(m.camera_id, m.index, m.timestamp_s, image)
            if reid is not None and m.clips:
                reid.queue_clips(m.camera_id, m.clips)
            step.frames.append((frame, m.tracks))
            self.summaries[m.camera_id].count_frame(m.n_detections, m.tracks.track_ids.tolist(), now, m.timestamp_s)
        drive_step(stages, step)
        for update in step.appearance:  # for the camera actors' clip schedule
            r = update.result
            if r.cut_frame >= 0:
                state.results.setdefault(r.camera_id, []).append((r.track_id, r.embedding, r.cut_frame, r.cut_t_s))
        if state.all_files:  # the Re-ID stage applies step k's clips at step k + lag (frame k of every camera)
            state.through = state.index - self.config.reid.file_result_lag_steps
        state.index += 1
        update_bars(bars, self.summaries, step)

    @property
    def _reported(self) -> set:
        if not hasattr(self, "_reported_set"):
            self._reported_set = set()
        return self._reported_set

    def _close_ray(self, ray, state: "_LoopState", stages, reid, end_holder: dict) -> None:
        """Stop every camera actor still running (completed runs flush their Re-ID buffers), then close the stages
        in order with the run's end, as the local engine."""
        status = end_holder.get("status", "failed")
        flush = status == "completed"
        detector_counters = []
        for cam in list(self.actors):
            if cam in state.dead:
                continue
            actor = self.actors[cam]
            try:
                clips = ray.get(actor.finish.remote(flush), timeout=60)
                if self.config.detector.service:
                    detector_counters.append(ray.get(actor.detector_counters.remote(), timeout=10))
                if cam in state.done:  # its CameraDone already carried its counters and final clips
                    continue
                c = ray.get(actor.counters.remote(), timeout=10)
                summary = self.summaries[cam]
                summary.dropped, summary.reconnects = c["dropped"], summary.reconnects + c["reconnects"]
                if reid is not None and clips:
                    reid.submit_final(clips)
            except Exception as err:  # noqa: BLE001 - a dead actor: nothing more to collect
                log.warning("camera %s: could not stop its actor (%s)", cam, str(err).splitlines()[0][:120])
        if self.config.detector.service:
            from pipeline.engines.detector_serve import merge_counters

            self.detector_counters = merge_counters([c for c in detector_counters if c])
        close_stages(stages, self.summaries, status, self._stop.is_set(), end_holder)
        proxy = self.stages_proxy
        if proxy is not None and proxy.error and "error" not in end_holder:
            end_holder["error"] = proxy.error


class _LoopState:
    """The driver's per-run ordering state (camera ids in config order)."""

    def __init__(self, all_files: bool) -> None:
        self.all_files = all_files
        self.active: list[str] = []
        self.pending: dict[str, deque] = {}
        self.inflight: dict = {}
        self.done: dict[str, CameraDone] = {}
        self.dead: set[str] = set()
        self.newest: dict[str, float] = {}
        self.heard: dict[str, float] = {}
        self.restarts: dict[str, int] = {}
        self.live: set[str] = set()
        self.index = 0
        # Re-ID clip schedule on the camera actors: results to push back, and how far they are complete
        self.results: dict[str, list] = {}  # camera -> (track_id, embedding, cut_frame, cut_t_s) not yet pushed
        self.through = -1  # recorded files: every result of clips cut at frames <= this has been applied
        self.pushed: dict[str, tuple[int, int]] = {}  # camera -> (next push sequence number, `through` last pushed)


_ZERO_PIXEL = np.zeros((1, 1, 3), np.uint8)


def _placeholder(size: tuple[int, int]) -> np.ndarray:
    """A read-only (H, W, 3) view of one black pixel: frames whose pixels stayed on the camera actor."""
    w, h = size
    return np.broadcast_to(_ZERO_PIXEL, (h, w, 3))


def stop_serve_router_loop(timeout_s: float = 5.0) -> bool:
    """Stop the asyncio loop that Ray Serve's handles run in a daemon thread of this process, once Serve is shut down.

    Serve never stops that loop, and its event-loop monitor records Ray metrics on it every few seconds: after
    `ray.shutdown()` such a call crashes the whole process (SIGSEGV, at a random later moment; seen in this project's
    test suite). Uses Serve's private `SingletonThreadRouter` (best effort: False when it is not there). Only for a
    process whose Serve handles are all finished."""
    import asyncio
    import threading

    try:
        from ray.serve._private.router import SingletonThreadRouter
    except ImportError:
        return False
    lock = getattr(SingletonThreadRouter, "_asyncio_loop_creation_lock", None)
    if lock is None or not hasattr(SingletonThreadRouter, "_asyncio_loop"):
        return False
    with lock:
        loop, SingletonThreadRouter._asyncio_loop = SingletonThreadRouter._asyncio_loop, None
    if loop is None or loop.is_closed():
        return True

    async def cancel_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(timeout_s)
    except Exception:  # noqa: BLE001 - stop it anyway
        pass
    loop.call_soon_threadsafe(loop.stop)
    for thread in threading.enumerate():
        if "_run_router_event_loop" in thread.name:
            thread.join(timeout_s)
    return True


def _is_live_source(source) -> bool:
    """A camera source that is a live stream: a webcam index or a URL of a live scheme (rtsp://, http://, ...)."""
    from streams.rtsp_source import LIVE_SCHEMES

    if isinstance(source, int) or str(source).strip().isdigit():
        return True
    scheme, sep, _ = str(source).strip().partition("://")
    return bool(sep) and scheme.lower() in LIVE_SCHEMES


def _root_error(err: Exception) -> str:
    """The innermost `SomeError: message` line of an error whose text carries a remote traceback (Serve's deploy
    failures), else its last line; at most 300 characters."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    found = [line for line in lines if re.match(r"^[\w.]*(Error|Exception): ", line)]
    line = (found or lines or [type(err).__name__])[-1]
    return re.sub(r"^(\w+\.)+(?=\w+: )", "", line)[:300]


def _serve_running(ray) -> bool:
    """A Serve controller already runs on the cluster (someone else's Serve: leave it running at the end)."""
    try:
        from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
    except ImportError:  # the constants moved: Ray 2.60's names
        SERVE_CONTROLLER_NAME, SERVE_NAMESPACE = "SERVE_CONTROLLER_ACTOR", "serve"
    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        return True
    except ValueError:  # no controller
        return False


def _cause(err) -> Exception:
    """The original exception behind a `RayTaskError` (bad weights raise `DetectorError` / `ReIDLoadError`)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, Exception) else RuntimeError(str(err).splitlines()[0])


__all__ = ["RayEngine"]
