#!/usr/bin/env python3
"""The GPU path measured (issue 20), run by hand on a CUDA machine; writes one JSON file with everything.

    python bench/gpu.py --out bench/results/gpu_h200.json            # on the GPU machine (about 6 min)
    python bench/gpu.py --smoke --out /tmp/gpu_smoke.json             # CPU check of the script itself (tiny sizes)
    python bench/gpu.py --skip reid,encoder,detection,compile --clip-fps 5 --out ...   # the batcher at 5 clips/s/camera
    sh bench/gpu_carry.sh      # then, on the lent machine (what it lacks travels in .gpu_carry/; see that script):
    python3 bench/gpu.py --skip reid,encoder,detection,compile --e2e-data .gpu_carry/data
        --e2e-detector .gpu_carry/models/yolo11n_from_int8.pt --e2e-reid .gpu_carry/models/osnet_x0_25_msmt17.pth
        --e2e-cameras 16,32 --e2e-profile --out bench/results/gpu_h200_e2e.json     (one command, wrapped here)

1. Re-ID-AR model throughput, clips/s of the model on device tensors (B, T, 3, H, W), T = 4, random weights (speed does
   not depend on their values): ResNet50-IBN-a at the paper's 224x112 and OSNet x0.25 at 256x128; batch 1, 8, 32, 128,
   256; fp32 (TF32 off), AMP bf16, AMP fp16; channels-last on / off; `torch.compile` (default mode) on the best
   setting at batch 128. Next to it, the pipeline's own path `ClipEncoder.encode` (uint8 host clips in: pinned copy,
   normalisation, model, results back to numpy). The card's dense bf16 / fp32 matmul rates are measured in the same
   process; each row's achieved model TFLOP/s (FLOPs counted by torch.utils.flop_counter) is given as a fraction.
2. The batcher under load: the real `ReIDBatcher` (max_batch 64, max_wait_ms 20) with the pipeline's `ClipEncoder`
   (AMP) fed by 16 and 64 simulated cameras, each submitting one T = 4 clip per frame at 25 fps for `--load-seconds`:
   mean batch, p50 / p99 latency from submit to result, dropped clips, model-busy fraction (GPU utilisation from
   nvidia-smi sampled meanwhile); each twice, side by side: batches padded to the encoder's fixed sizes with cuDNN
   autotuning and a warm-up of every size (the pipeline now), and any batch size with autotuning off (before);
   plus the padded embeddings' parity with the unpadded ones.
3. Detection across streams: YOLO11n built from its model YAML (random weights: speed only) at 640x640, fp16, batch 1 /
   8 / 16 / 32 on device tensors, frames/s; and the pipeline's detector call path (`models.detector.Detector` with
   ultralytics, one 640x360 BGR frame per camera, 16 cameras) where ultralytics is installed.
4. Streams per GPU, end to end: the pipeline (`Pipeline.run`: decode, detection, tracking, Re-ID, association, events,
   store, MOT files) on 16 and 32 file cameras cycling over EPFL Terrace c0 / c1 and PETS09, each `--e2e-frames`
   frames, detection (fp16) and Re-ID (AMP) on the GPU, with the real YOLO11n weights rebuilt from the shipped INT8
   model (bench/yolo_from_openvino.py; `--e2e-detector`): frames/s over the frame loop and the 25 fps cameras that
   sustains, the time inside the detector and the Re-ID model, the main thread's and the host's CPU busy fractions
   and the GPU's utilisation over the same window; beside it, the detector alone on the same number of cameras.
   Where the machine has no ffmpeg, the cameras decode through bench/cv2_ffmpeg.py (OpenCV's FFmpeg).
5. Training: steps/s of the paper's Re-ID-AR recipe (`--training-config`, default the MARS 8-action run:
   ResNet50-IBN-a 224x112, T = 4, P x K = 16 x 4 clips, all its losses) through the training loop's own step, with fp16
   AMP (what `train` uses on CUDA), bf16 AMP and float32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SIZES = {"resnet50_ibn_a": (224, 112), "osnet_x0_25": (256, 128)}
ACTIONS = ["walking", "standing", "running"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn, device: torch.device, min_s: float, warmup: int = 3) -> tuple[float, int]:
    """Calls per second of fn() (timed at least min_s, at least 3 calls), and the number of calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        if n >= 3 and time.perf_counter() - t0 >= min_s:
            break
    sync(device)
    return n / (time.perf_counter() - t0), n


def environment(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "command": " ".join([Path(sys.executable).name] + sys.argv), "host_cpus": __import__("os").cpu_count(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if device.type == "cuda":
        info["card"] = torch.cuda.get_device_name(device)
        info["sm_count"] = torch.cuda.get_device_properties(device).multi_processor_count
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
            info["nvidia_smi"] = out
        except (OSError, subprocess.SubprocessError) as err:
            info["nvidia_smi"] = f"unavailable: {err}"
    return info


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    per_s, _ = rate(lambda: a @ b, device, 1.0)
    return 2 * n ** 3 * per_s / 1e12


def model_flops(model: torch.nn.Module, size: tuple[int, int], t: int) -> float:
    """Forward FLOPs of one clip (1, T, 3, H, W), counted on the CPU."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model.cpu().eval()(torch.zeros(1, t, 3, *size))
    return float(counter.get_total_flops())


def forward(fwd, x: torch.Tensor, dtype: torch.dtype | None):
    """A no-argument call running fwd(x) without autograd, under autocast to dtype (None: fp32)."""
    def call():
        with torch.inference_mode():
            if dtype is None:
                return fwd(x)
            with torch.autocast(x.device.type, dtype=dtype):
                return fwd(x)
    return call


# -- 1. Re-ID-AR --------------------------------------------------------------------------------------------------
def reid_model(backbone: str, batches: list[int], t: int, device: torch.device, min_s: float,
               peak: dict) -> list[dict]:
    from models.reid import ReIDAR

    size = SIZES[backbone]
    torch.manual_seed(0)
    model = ReIDAR(backbone, num_classes=1, action_names=ACTIONS, input_size=size)
    flops = model_flops(model, size, t)
    model = model.eval().to(device)
    precisions = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16} if device.type == "cuda" else {"fp32": None}
    rows = []

    def one(fwd, b, prec, cl, compiled):
        call = forward(fwd, torch.randn(b, t, 3, *size, device=device), precisions[prec])
        try:
            per_s, _ = rate(call, device, min_s)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            print(f"  {backbone} batch {b} {prec}: out of memory", flush=True)
            return
        row = dict(part="reid_model", backbone=backbone, size=list(size), t=t, batch=b, precision=prec,
                   channels_last=cl, compiled=compiled, clips_s=per_s * b, ms_batch=1000 / per_s,
                   gflop_clip=flops / 1e9, tflops=flops * per_s * b / 1e12)
        p = peak.get("bf16" if prec in ("bf16", "fp16") else "fp32")
        row["of_peak"] = row["tflops"] / p if p else None
        rows.append(row)
        print(f"  {backbone:<15} b={b:<4} {prec:<5} cl={int(cl)} compile={int(compiled)} {row['clips_s']:10.1f} clips/s"
              + (f"  {row['of_peak']:6.1%} of peak" if row["of_peak"] else ""), flush=True)

    for cl in (True, False):
        model = model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        for prec in precisions:
            for b in batches:
                one(model, b, prec, cl, False)
    return rows


def reid_compiled(backbone: str, best: dict, device: torch.device, min_s: float, peak: dict) -> list[dict]:
    """`torch.compile` (default mode) of the model at the best eager setting of batch 128 (same dtype, layout)."""
    from models.reid import ReIDAR

    size, b, t = SIZES[backbone], best["batch"], best["t"]
    torch.manual_seed(0)
    model = ReIDAR(backbone, num_classes=1, action_names=ACTIONS, input_size=size).eval().to(device)
    model = model.to(memory_format=torch.channels_last if best["channels_last"] else torch.contiguous_format)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[best["precision"]]
    x = torch.randn(b, t, 3, *size, device=device)
    t0 = time.perf_counter()
    try:
        call = forward(torch.compile(model), x, dtype)
        call()
        sync(device)
        compile_s = time.perf_counter() - t0
        per_s, _ = rate(call, device, min_s)
    except Exception as err:  # noqa: BLE001 - report, keep the rest of the run
        print(f"  torch.compile {backbone} failed: {str(err).splitlines()[0]}", flush=True)
        return [dict(part="reid_model", backbone=backbone, compiled=True, error=str(err).splitlines()[0])]
    row = dict(best, compiled=True, clips_s=per_s * b, ms_batch=1000 / per_s, tflops=best["gflop_clip"] * per_s * b / 1e3,
               compile_s=compile_s, eager_clips_s=best["clips_s"])
    p = peak.get("bf16" if best["precision"] in ("bf16", "fp16") else "fp32")
    row["of_peak"] = row["tflops"] / p if p else None
    print(f"  {backbone:<15} b={b:<4} {best['precision']:<5} compiled: {row['clips_s']:10.1f} clips/s "
          f"(eager {best['clips_s']:.1f}; compile {compile_s:.0f} s)", flush=True)
    return [row]


def reid_encoder(backbone: str, batches: list[int], t: int, device: torch.device, min_s: float) -> list[dict]:
    """The pipeline's own call: ClipEncoder.encode(uint8 (B, T, H, W, 3)) with its defaults (AMP, channels-last)."""
    from models.reid import ReIDAR
    from pipeline.reid import ClipEncoder

    size = SIZES[backbone]
    torch.manual_seed(0)
    model = ReIDAR(backbone, num_classes=1, action_names=ACTIONS, input_size=size)
    enc = ClipEncoder.from_model(model, source="random weights", device=str(device), amp=True, cpu_backend="torch")
    rows = []
    for b in batches:
        clips = np.random.default_rng(0).integers(0, 255, (b, t, *size, 3), dtype=np.uint8)
        per_s, _ = rate(lambda: enc.encode(clips), device, min_s)
        rows.append(dict(part="reid_encoder", backbone=backbone, size=list(size), t=t, batch=b, backend=enc.backend,
                         precision=str(enc.amp_dtype).split(".")[-1] if enc.amp else "fp32", clips_s=per_s * b,
                         ms_batch=1000 / per_s))
        print(f"  encoder {backbone:<15} b={b:<4} {rows[-1]['clips_s']:10.1f} clips/s", flush=True)
    return rows


# -- 2. the batcher under load ------------------------------------------------------------------------------------
class GpuSampler:
    """nvidia-smi utilisation.gpu sampled every 0.2 s in a thread (None where nvidia-smi is missing)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._proc = None

    def __enter__(self):
        try:
            self._proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                           "-lms", "200"], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        except OSError:
            self._proc = None
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()

    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def batcher_load(backbone: str, cameras: int, seconds: float, device: torch.device, t: int = 4, fps: float = 25.0,
                 max_batch: int = 64, max_wait_ms: float = 20.0, fixed_shapes: bool = True) -> dict:
    """fixed_shapes: the pipeline's way since 2026-11-30 (batches padded to `padded_batch` sizes, cuDNN autotuning
    on, every size warmed up on the batcher's thread before the load); False: the earlier way (any batch size as it
    comes, autotuning off, one warm-up at the largest batch on the calling thread), measured side by side."""
    from models.reid import ReIDAR
    from pipeline.reid import ClipEncoder, ReIDBatcher
    from pipeline.reid.clips import ClipRequest

    size = SIZES[backbone]
    model = ReIDAR(backbone, num_classes=1, action_names=ACTIONS, input_size=size)
    enc = ClipEncoder.from_model(model, source="random weights", device=str(device), amp=True, cpu_backend="torch")
    enc.pad_batches = fixed_shapes
    torch.backends.cudnn.benchmark = fixed_shapes
    warm0 = time.perf_counter()
    if not fixed_shapes:
        enc.encode(np.zeros((max_batch, t, *size, 3), np.uint8))  # warm-up at the largest batch (on this thread)
    batcher = ReIDBatcher(enc, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max(256, 8 * max_batch)).start(
        warm_up=(lambda: enc.warm_up(max_batch, t)) if fixed_shapes else None)  # as the Re-ID stage: on its thread
    warm_s = time.perf_counter() - warm0
    crops = np.random.default_rng(0).integers(0, 255, (t, *size, 3), dtype=np.uint8)
    sent: dict[tuple[str, int], float] = {}
    latencies: list[float] = []
    stop = threading.Event()

    def camera(k: int) -> None:
        period, n = 1.0 / fps, 0
        start = time.perf_counter() + k * period / cameras  # cameras out of phase, like real streams
        while not stop.is_set():
            due = start + n * period
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            key = (f"cam{k}", n)
            sent[key] = time.perf_counter()
            batcher.submit(ClipRequest(f"cam{k}", n, crops, np.arange(t) / fps, np.zeros((t, 4), np.float32), 1.0))
            n += 1

    def collect() -> None:
        while not stop.is_set() or batcher.pending:
            for r in batcher.poll():
                t_sent = sent.pop((r.camera_id, r.track_id), None)
                if t_sent is not None:
                    latencies.append(time.perf_counter() - t_sent)
            time.sleep(0.001)

    parity = None
    if fixed_shapes:  # the padded call gives the unpadded call's embeddings (5 clips: padded to 8)
        clips = np.random.default_rng(1).integers(0, 255, (5, t, *size, 3), dtype=np.uint8)
        a, _ = enc.encode(clips)
        enc.pad_batches = False
        b, _ = enc.encode(clips)
        enc.pad_batches = True
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        parity = float(1.0 - cos.min())
    with GpuSampler() as gpu:
        threads = [threading.Thread(target=camera, args=(k,), daemon=True) for k in range(cameras)]
        collector = threading.Thread(target=collect, daemon=True)
        t0 = time.perf_counter()
        busy0 = batcher.stats.busy_s
        for th in threads:
            th.start()
        collector.start()
        time.sleep(seconds)
        stop.set()
        for th in threads:
            th.join()
        collector.join(timeout=30)
        wall = time.perf_counter() - t0  # until the last clip's result came back
    batcher.stop()
    st = batcher.stats
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    row = dict(part="batcher", backbone=backbone, cameras=cameras, fps=fps, t=t, max_batch=max_batch,
               fixed_shapes=fixed_shapes, warm_up_s=warm_s, padding_max_cosine_distance=parity,
               max_wait_ms=max_wait_ms, seconds=wall, submitted=st.submitted, processed=st.processed,
               dropped=st.dropped, batches=st.batches, mean_batch=st.mean_batch, p50_ms=float(np.percentile(lat, 50)),
               p99_ms=float(np.percentile(lat, 99)), model_busy=(st.busy_s - busy0) / wall, gpu_util=gpu.mean(),
               clips_s=st.processed / wall)
    print(f"  batcher {backbone} {cameras:>3} cameras, {'fixed shapes' if fixed_shapes else 'any batch size'}: mean batch {row['mean_batch']:.1f}, p50 {row['p50_ms']:.1f} ms, "
          f"p99 {row['p99_ms']:.1f} ms, dropped {row['dropped']}, model busy {row['model_busy']:.0%}, "
          f"GPU util {row['gpu_util']}", flush=True)
    return row


# -- 3. detection -------------------------------------------------------------------------------------------------
def detection(batches: list[int], device: torch.device, min_s: float, cameras: int = 16) -> list[dict]:
    rows = []
    try:
        from ultralytics import YOLO
    except ImportError as err:
        return [dict(part="detection", error=f"ultralytics not importable: {err}")]
    net = YOLO("yolo11n.yaml").model.eval().to(device)  # built from the model YAML: random weights, speed only
    half = device.type == "cuda"
    if half:
        net = net.half()
    for b in batches:
        x = torch.rand(b, 3, 640, 640, device=device, dtype=torch.float16 if half else torch.float32)

        def call():
            with torch.inference_mode():
                return net(x)
        per_s, _ = rate(call, device, min_s)
        rows.append(dict(part="detection", model="yolo11n (random weights, from yolo11n.yaml)", imgsz=640,
                         precision="fp16" if half else "fp32", batch=b, frames_s=per_s * b, ms_batch=1000 / per_s))
        print(f"  yolo11n b={b:<3} {rows[-1]['frames_s']:9.1f} frames/s", flush=True)
    # the pipeline's detector call path (pre/post-processing included) on one frame per camera, cameras in turn
    try:
        from models.detector import PersonDetector
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            w = Path(tmp) / "yolo11n_random.pt"
            YOLO("yolo11n.yaml").save(str(w))
            det = PersonDetector(str(w), device=str(device), conf=0.25, half=half)
            frame = np.random.default_rng(0).integers(0, 255, (360, 640, 3), dtype=np.uint8)
            per_s, _ = rate(lambda: det.detect([frame] * cameras), device, min_s)
            rows.append(dict(part="detector_call", cameras=cameras, frame="640x360 BGR", frames_s=per_s * cameras,
                             precision="fp16" if half else "fp32", batched=det._batched))
            print(f"  pipeline detector call, {cameras} cameras in turn: {per_s * cameras:.1f} frames/s", flush=True)
    except Exception as err:  # noqa: BLE001 - the model-only rows above still stand
        rows.append(dict(part="detector_call", error=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"))
        print(f"  pipeline detector call not measured: {rows[-1]['error']}", flush=True)
    return rows


# -- 4. streams per GPU, end to end -------------------------------------------------------------------------------
E2E_SOURCES = ("terrace1-c0.mp4", "terrace1-c1.mp4", "vtest.avi")  # cycled over the cameras; EPFL Terrace, PETS09


class LoadSampler:
    """Every 0.25 s in a thread: the host's busy CPU seconds (/proc/stat), this process's CPU seconds, the main
    thread's CPU seconds, and the GPU's utilisation (nvidia-smi, when present); `window(t0, t1)` averages them."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float, float]] = []  # (monotonic s, host busy s, process s, main s)
        self.gpu = GpuSampler()
        self.gpu_times: list[float] = []
        self._stop = threading.Event()
        self._main = time.pthread_getcpuclockid(threading.main_thread().ident)

    @staticmethod
    def _host_busy() -> float:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        ticks = os.sysconf("SC_CLK_TCK")
        return (sum(fields) - fields[3] - fields[4]) / ticks  # everything but idle and iowait

    def _run(self) -> None:
        while not self._stop.is_set():
            t = os.times()
            self.rows.append((time.monotonic(), self._host_busy(), t.user + t.system,
                              time.clock_gettime(self._main)))
            self.gpu_times.append((time.monotonic(), len(self.gpu.samples)))
            self._stop.wait(0.25)

    def __enter__(self):
        self.gpu.__enter__()
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.gpu.__exit__(*exc)

    def window(self, t0: float, t1: float) -> dict:
        rows = [r for r in self.rows if t0 <= r[0] <= t1]
        if len(rows) < 2:
            return {}
        dt = rows[-1][0] - rows[0][0]
        out = {"host_cores_busy": (rows[-1][1] - rows[0][1]) / dt, "process_cores": (rows[-1][2] - rows[0][2]) / dt,
               "main_thread_busy": (rows[-1][3] - rows[0][3]) / dt}
        marks = [n for t, n in self.gpu_times if t0 <= t <= t1]
        if marks and self.gpu.samples:
            util = self.gpu.samples[marks[0]:marks[-1]] or self.gpu.samples[-1:]
            out["gpu_util"] = float(np.mean(util))
        return out


def e2e_config(folder: Path, cameras: int, frames: int, data: Path, detector: Path, reid_weights: Path,
               device: torch.device, direct: str = "auto") -> Path:
    """A run config: `cameras` file cameras cycling over E2E_SOURCES, the shipped defaults otherwise."""
    import yaml

    half = device.type == "cuda"
    cfg = {
        "cameras": [{"id": f"cam{k:02d}", "source": str(data / E2E_SOURCES[k % len(E2E_SOURCES)]),
                     "max_frames": frames} for k in range(cameras)],
        "detector": {"weights": str(detector), "conf": 0.1, "device": str(device), "half": half, "direct": direct},
        "tracker": {"name": "mcsa"},
        "reid": {"backbone": "osnet_x0_25", "backbone_weights": str(reid_weights), "device": str(device)},
        "output": {"dir": str(folder / "out")},
        "run": {"progress": False},
    }
    path = folder / f"e2e_{cameras}_{direct}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def profile_table(prof, top: int = 25) -> dict:
    """The main thread's profile: own time by code area (package folder) and the top functions by own time."""
    import pstats

    stats = pstats.Stats(prof).stats  # (file, line, name) -> (calls, primitive, tottime, cumtime, callers)
    total = sum(v[2] for v in stats.values()) or 1.0
    areas: dict[str, float] = {}
    for (file, _, name), v in stats.items():
        parts = Path(file).parts
        if "site-packages" in parts or "dist-packages" in parts:
            i = max(i for i, p in enumerate(parts) if p in ("site-packages", "dist-packages"))
            area = parts[i + 1] if i + 1 < len(parts) else file
        elif str(ROOT) in file:
            rel = Path(file).resolve().relative_to(ROOT).parts
            area = "/".join(rel[:2]) if len(rel) > 2 else rel[0]
        elif file == "~":  # a built-in: C code of the library that owns it
            text = name if isinstance(name, str) else ""
            area = next((lib for lib in ("torch", "cv2", "numpy", "faiss", "openvino", "sqlite3", "select", "_thread")
                         if lib in text), "python built-ins")
        else:
            area = "python" if file.startswith("<") or "/lib/python" in file else file
        areas[area] = areas.get(area, 0.0) + v[2]
    funcs = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    return {"areas": {k: round(v / total, 4) for k, v in sorted(areas.items(), key=lambda kv: -kv[1])[:20]},
            "top": [{"function": f"{Path(f).name}:{ln} {name}", "own_s": round(v[2], 3), "cum_s": round(v[3], 3),
                     "calls": v[0]} for (f, ln, name), v in funcs],
            "profiled_s": total}


def end_to_end(cameras: int, frames: int, data: Path, detector: Path, reid_weights: Path, device: torch.device,
               work: Path, profile: bool = False, direct: str = "auto") -> dict:
    """The whole pipeline (decode, detect, track, Re-ID, association, events, store, MOT files) on `cameras` file
    cameras for `frames` frames each; frames/s over the frame loop, the time inside the detector and the Re-ID
    model, and the CPU / GPU busy fractions over the same window. profile: the main thread under cProfile (slower;
    its frames/s are not comparable): where its time goes."""
    import cProfile

    from models.detector import PersonDetector
    from pipeline.config import load_config
    from pipeline.reid import ClipEncoder
    from pipeline.runner import Pipeline

    cfg = load_config(e2e_config(work, cameras, frames, data, detector, reid_weights, device, direct))
    spans: dict[str, list[tuple[float, float]]] = {"detect": [], "encode": []}
    real = {"detect": PersonDetector.detect, "encode": ClipEncoder.encode}

    def timed(name):
        def call(self, *a, **kw):
            t0 = time.monotonic()
            try:
                return real[name](self, *a, **kw)
            finally:
                spans[name].append((t0, time.monotonic() - t0))
        return call

    PersonDetector.detect, ClipEncoder.encode = timed("detect"), timed("encode")
    try:
        prof = cProfile.Profile() if profile else None
        with LoadSampler() as load:
            pipe = Pipeline(cfg, str(work / f"out_{cameras}_{direct}{'_profiled' if profile else ''}"))
            if prof is not None:  # the frame loop only (not model loading, nor the offline pass at the end)
                loop = pipe._loop

                def profiled_loop(*a, **kw):
                    prof.enable()
                    try:
                        return loop(*a, **kw)
                    finally:
                        prof.disable()
                pipe._loop = profiled_loop
            summary = pipe.run()
            t_end = time.monotonic()
    finally:
        PersonDetector.detect, ClipEncoder.encode = real["detect"], real["encode"]
    t0 = pipe.loop_started
    loop = t_end - t0
    n = sum(c.frames for c in summary.cameras)
    inside = {k: sum(d for s, d in v if s >= t0) for k, v in spans.items()}
    reid = summary.reid or {}
    row = dict(part="end_to_end", cameras=cameras, detector_direct=direct,
               overlap_detection=cfg.run.overlap_detection != "off", frames_per_camera=frames, frames=n, loop_s=loop,
               frames_s=n / loop, realtime_25fps_cameras=n / loop / 25.0,
               statuses=sorted({c.status for c in summary.cameras}), detector=str(detector.name),
               detect_calls=sum(1 for s, _ in spans["detect"] if s >= t0), detect_s=inside["detect"],
               reid_encode_s=inside["encode"], clips=reid.get("processed"), reid_mean_batch=reid.get("mean_batch"),
               detections=sum(c.detections for c in summary.cameras), profiled=profile, **load.window(t0, t_end))
    if prof is not None:
        row["profile"] = profile_table(prof)
        print("  main thread's own time by area (profiled run): " + ", ".join(
            f"{k} {v:.0%}" for k, v in list(row["profile"]["areas"].items())[:8]), flush=True)
    print(f"  end to end {cameras:>3} cameras x {frames} frames, detector.direct {direct}"
          f"{' (profiled)' if profile else ''}: "
          f"{row['frames_s']:7.1f} frames/s "
          f"({row['realtime_25fps_cameras']:.1f} cameras at 25 fps), detector {inside['detect'] / loop:.0%} of the "
          f"loop, Re-ID model {inside['encode'] / loop:.0%}, main thread busy {row.get('main_thread_busy', 0):.0%}, "
          f"host {row.get('host_cores_busy', 0):.1f} cores, GPU util {row.get('gpu_util')}", flush=True)
    return row


def detector_only(cameras: int, data: Path, detector: Path, device: torch.device, min_s: float,
                  direct: str = "auto") -> dict:
    """The peer of the end-to-end rows: the pipeline's detector alone on frames decoded into memory beforehand,
    one call per step with one frame of each of `cameras` cameras (as the run loop calls it)."""
    import cv2

    from models.detector import PersonDetector

    frames = []
    for k in range(cameras):
        cap = cv2.VideoCapture(str(data / E2E_SOURCES[k % len(E2E_SOURCES)]))
        cap.set(cv2.CAP_PROP_POS_FRAMES, 10 * k)
        ok, img = cap.read()
        cap.release()
        frames.append(img)
    det = PersonDetector(str(detector), conf=0.1, device=str(device), half=device.type == "cuda", direct=direct)
    per_s, _ = rate(lambda: det.detect(frames), device, min_s)
    row = dict(part="detector_only", cameras=cameras, detector_direct=direct, direct_used=det._direct is not None,
               frames_s=per_s * cameras, detector=str(detector.name))
    print(f"  detector only, {cameras} cameras per call, detector.direct {direct}: {row['frames_s']:.1f} frames/s",
          flush=True)
    return row


# -- 5. training throughput ---------------------------------------------------------------------------------------
def training(config: Path, device: torch.device, min_s: float, smoke: bool = False) -> list[dict]:
    """Training steps/s of the paper's Re-ID-AR (the config's backbone, input, T, P x K batch, losses and optimisers,
    through the training loop's own `optimisation_step`) on random clips already on the device, 625 identities (MARS);
    no pretrained file (speed does not depend on the weights). fp16 AMP with a GradScaler is what `train` uses on
    CUDA; bf16 AMP (no scaler) and float32 (TF32 convolutions, torch's default) beside it."""
    from models.reid.config import load_reid_config
    from models.reid.model import build_reid_ar
    from pipeline.reid_data.training import build_objective, optimisation_step

    cfg = load_reid_config(config)
    cfg.model.pretrained = None
    num_classes = 625
    b = 4 if smoke else cfg.data.p * cfg.data.k
    k = 2 if smoke else cfg.data.k
    if smoke:
        cfg.data.input_size = [cfg.data.input_size[0] // 4, cfg.data.input_size[1] // 4]
    t, (h, w) = cfg.data.seq_len, cfg.data.input_size
    gen = torch.Generator().manual_seed(0)
    clips = torch.randn(b, t, 3, h, w, generator=gen).to(device)
    pids = torch.arange(b // k).repeat_interleave(k).to(device)
    acts = torch.randint(0, max(len(cfg.actions), 1), (b,), generator=gen).to(device)
    erased = (torch.rand(b, t, generator=gen) < 0.25).to(device)

    def one(label: str, amp: bool, dtype) -> dict:
        torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(0)
        model = build_reid_ar(cfg, num_classes=num_classes).to(device).train()
        criterion, optimizer, center_opt = build_objective(cfg, model, num_classes, device)
        scaler = torch.amp.GradScaler("cuda", enabled=amp and dtype == torch.float16)
        losses = []

        def step():
            loss, _, _ = optimisation_step(model, criterion, optimizer, center_opt, scaler, clips, pids, acts,
                                           erased, cfg.loss.w_center, cfg.loss.w_action_center, amp,
                                           dtype or torch.float16)
            losses.append(loss.detach())
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        per_s, n = rate(step, device, min_s)
        finite = bool(torch.isfinite(torch.stack(losses)).all())
        row = dict(part="training", config=config.name, backbone=cfg.model.backbone, input=[h, w], t=t, batch=b,
                   precision=label, steps_s=per_s, clips_s=per_s * b, steps=n, loss_finite=finite,
                   peak_mem_gb=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)
        print(f"  training {cfg.model.backbone} {h}x{w} T={t} batch {b} {label:<17} {per_s:7.2f} steps/s = "
              f"{per_s * b:8.1f} clips/s{'' if finite else ' (loss NOT finite)'}", flush=True)
        return row

    variants = [("amp fp16", True, torch.float16), ("amp bf16", True, torch.bfloat16),
                ("fp32 (tf32 conv)", False, None)]
    rows = [one(*v) for v in (variants if device.type == "cuda" else variants[2:])]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch.backends.cudnn.allow_tf32 = False
    return rows


def e2e_part(args, device: torch.device, emit) -> list[dict]:
    """Part 4; each row goes to `emit` as soon as it is measured (a run cut short keeps the rows before)."""
    import shutil
    import tempfile

    if args.e2e_detector is None or not args.e2e_detector.is_file():
        return [dict(part="end_to_end", error=f"no detector .pt: {args.e2e_detector} (give --e2e-detector)")]
    data = args.e2e_data
    found = {name: next(iter(sorted(data.rglob(name))), None) for name in E2E_SOURCES}
    if not all(found.values()):
        return [dict(part="end_to_end", error=f"{data} lacks {[n for n, p in found.items() if p is None]}")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, path in found.items():  # one folder: the config cycles over these names
            (work / "data").mkdir(exist_ok=True)
            (work / "data" / name).symlink_to(path.resolve())
        if shutil.which("ffmpeg") is None:
            shim = work / "bin"
            shim.mkdir()
            script = ROOT / "bench" / "cv2_ffmpeg.py"
            (shim / "ffmpeg").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
            (shim / "ffmpeg").chmod(0o755)
            os.environ["PATH"] = f"{shim}:{os.environ['PATH']}"
            print("  no ffmpeg on PATH: file cameras decode through bench/cv2_ffmpeg.py (OpenCV's FFmpeg, one "
                  "process per camera)", flush=True)
            emit(dict(part="end_to_end_decoder", decoder="bench/cv2_ffmpeg.py (OpenCV's bundled FFmpeg)"))
        else:
            emit(dict(part="end_to_end_decoder", decoder=shutil.which("ffmpeg")))
        counts = [int(c) for c in str(args.e2e_cameras).split(",") if c]
        modes = [m for m in str(args.e2e_modes).split(",") if m]
        for cams in counts:
            for mode in modes:
                emit(detector_only(cams, work / "data", args.e2e_detector, device,
                                   0.05 if args.smoke else args.min_seconds, mode))
        for cams in counts:
            for mode in modes:
                emit(end_to_end(cams, args.e2e_frames, work / "data", args.e2e_detector, args.e2e_reid, device,
                                work, direct=mode))
        if args.e2e_profile and counts:
            emit(end_to_end(counts[0], args.e2e_frames, work / "data", args.e2e_detector, args.e2e_reid,
                            device, work, profile=True))
    return []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file for every row and the environment")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any device: checks the script, not the card")
    ap.add_argument("--min-seconds", type=float, default=0.5)
    ap.add_argument("--load-seconds", type=float, default=8.0)
    ap.add_argument("--clip-fps", type=float, default=25.0, help="batcher part: clips each simulated camera submits per s")
    ap.add_argument("--skip", default="",
                    help="comma list of parts to skip: matmul,reid,encoder,batcher,detection,compile,e2e,training")
    ap.add_argument("--e2e-data", type=Path, default=ROOT.parent / "shared" / "data",
                    help="folder holding " + ", ".join(E2E_SOURCES) + " (searched recursively)")
    ap.add_argument("--e2e-detector", type=Path, help="YOLO .pt for the end-to-end part (bench/yolo_from_openvino.py)")
    ap.add_argument("--e2e-reid", type=Path, default=ROOT.parent / "shared" / "models" / "osnet_x0_25_msmt17.pth")
    ap.add_argument("--e2e-cameras", default="16,32", help="comma list of camera counts for the end-to-end part")
    ap.add_argument("--e2e-frames", type=int, default=300, help="frames per camera in the end-to-end part")
    ap.add_argument("--e2e-modes", default="on,off",
                    help="detector.direct values run side by side in the end-to-end part (on: letterbox, model and "
                    "NMS on the GPU, models/detector_direct.py; off: Ultralytics' predictor)")
    ap.add_argument("--training-config", type=Path, default=ROOT / "configs" / "reid_ar_mars_8actions.yaml",
                    help="training part: the Re-ID-AR recipe whose step is timed (the paper's MARS run)")
    ap.add_argument("--e2e-profile", action="store_true",
                    help="one more end-to-end run (the first camera count) with the main thread under cProfile")
    args = ap.parse_args()
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are true fp32
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    skip = set(filter(None, args.skip.split(",")))
    batches = [1, 2] if args.smoke else [1, 8, 32, 128, 256]
    result = {"environment": environment(device), "rows": []}
    print(json.dumps(result["environment"]), flush=True)
    peak = {}
    if device.type == "cuda" and not args.smoke and "matmul" not in skip:
        peak = {"bf16": matmul_tflops(device, torch.bfloat16, 8192), "fp32": matmul_tflops(device, torch.float32, 8192)}
        print(f"matmul: bf16 {peak['bf16']:.0f} TFLOP/s, fp32 (TF32 off) {peak['fp32']:.0f} TFLOP/s", flush=True)
    result["matmul_tflops"] = peak

    def save():
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))

    for backbone in SIZES:
        if "reid" not in skip:
            result["rows"] += reid_model(backbone, batches, 4, device, 0.05 if args.smoke else args.min_seconds,
                                         peak)
            save()
        if "encoder" not in skip:
            result["rows"] += reid_encoder(backbone, batches if args.smoke else [8, 32, 128], 4, device,
                                           0.05 if args.smoke else args.min_seconds)
            save()
    def guarded(part: str, fn) -> None:  # one part failing (a missing package there, say) leaves the others
        try:
            out = fn()
            result["rows"] += out if isinstance(out, list) else [out]
        except Exception as err:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            result["rows"].append(dict(part=part, error=f"{type(err).__name__}: {err}"))
        save()

    if "e2e" not in skip:  # first: the one part not measured before (2026-11-28)
        def emit(row: dict) -> None:
            result["rows"].append(row)
            save()
        guarded("end_to_end", lambda: e2e_part(args, device, emit))
    if "training" not in skip:
        guarded("training", lambda: training(args.training_config, device, 0.05 if args.smoke else 3.0, args.smoke))
    if "batcher" not in skip:
        for backbone in SIZES:
            for cams in ([2] if args.smoke else [16, 64]):
                for fixed in (False, True):
                    guarded("batcher", lambda: batcher_load(
                        backbone, cams, 1.0 if args.smoke else args.load_seconds, device,
                        fps=5.0 if args.smoke else args.clip_fps, max_batch=8 if args.smoke else 64,
                        fixed_shapes=fixed))
    if "detection" not in skip:
        guarded("detection", lambda: detection([1, 2] if args.smoke else [1, 8, 16, 32], device,
                                               0.05 if args.smoke else args.min_seconds,
                                               cameras=2 if args.smoke else 16))
    if "compile" not in skip and device.type == "cuda" and not args.smoke:  # last: compiling takes minutes
        for backbone in SIZES:
            rows = [r for r in result["rows"] if r.get("part") == "reid_model" and r.get("backbone") == backbone]
            best = max((r for r in rows if r.get("batch") == 128), key=lambda r: r["clips_s"], default=None)
            if best is not None:
                result["rows"] += reid_compiled(backbone, best, device, args.min_seconds, peak)
                save()
    save()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
