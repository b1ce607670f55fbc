#!/usr/bin/env python3
"""The GPU path measured (issue 20), run by hand on a CUDA machine; writes one JSON file with everything.

    python bench/gpu.py --out bench/results/gpu_h200.json            # on the GPU machine (about 6 min)
    python bench/gpu.py --smoke --out /tmp/gpu_smoke.json             # CPU check of the script itself (tiny sizes)
    python bench/gpu.py --skip reid,encoder,detection,compile --clip-fps 5 --out ...   # the batcher at 5 clips/s/camera

1. Re-ID-AR model throughput, clips/s of the model on device tensors (B, T, 3, H, W), T = 4, random weights (speed does
   not depend on their values): ResNet50-IBN-a at the paper's 224x112 and OSNet x0.25 at 256x128; batch 1, 8, 32, 128,
   256; fp32 (TF32 off), AMP bf16, AMP fp16; channels-last on / off; `torch.compile` (default mode) on the best
   setting at batch 128. Next to it, the pipeline's own path `ClipEncoder.encode` (uint8 host clips in: pinned copy,
   normalisation, model, results back to numpy). The card's dense bf16 / fp32 matmul rates are measured in the same
   process; each row's achieved model TFLOP/s (FLOPs counted by torch.utils.flop_counter) is given as a fraction.
2. The batcher under load: the real `ReIDBatcher` (max_batch 64, max_wait_ms 20) with the pipeline's `ClipEncoder`
   (AMP) fed by 16 and 64 simulated cameras, each submitting one T = 4 clip per frame at 25 fps for `--load-seconds`:
   mean batch, p50 / p99 latency from submit to result, dropped clips, model-busy fraction (GPU utilisation from
   nvidia-smi sampled meanwhile).
3. Detection across streams: YOLO11n built from its model YAML (random weights: speed only) at 640x640, fp16, batch 1 /
   8 / 16 / 32 on device tensors, frames/s; and the pipeline's detector call path (`models.detector.Detector` with
   ultralytics, one 640x360 BGR frame per camera, 16 cameras) where ultralytics is installed.
"""

from __future__ import annotations

import argparse
import json
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
                 max_batch: int = 64, max_wait_ms: float = 20.0) -> dict:
    from models.reid import ReIDAR
    from pipeline.reid import ClipEncoder, ReIDBatcher
    from pipeline.reid.clips import ClipRequest

    torch.backends.cudnn.benchmark = False  # as in the pipeline: batch sizes vary, each new one would be autotuned
    size = SIZES[backbone]
    model = ReIDAR(backbone, num_classes=1, action_names=ACTIONS, input_size=size)
    enc = ClipEncoder.from_model(model, source="random weights", device=str(device), amp=True, cpu_backend="torch")
    enc.encode(np.zeros((max_batch, t, *size, 3), np.uint8))  # warm-up at the largest batch
    batcher = ReIDBatcher(enc, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max(256, 8 * max_batch)).start()
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
               max_wait_ms=max_wait_ms, seconds=wall, submitted=st.submitted, processed=st.processed,
               dropped=st.dropped, batches=st.batches, mean_batch=st.mean_batch, p50_ms=float(np.percentile(lat, 50)),
               p99_ms=float(np.percentile(lat, 99)), model_busy=(st.busy_s - busy0) / wall, gpu_util=gpu.mean(),
               clips_s=st.processed / wall)
    print(f"  batcher {backbone} {cameras:>3} cameras: mean batch {row['mean_batch']:.1f}, p50 {row['p50_ms']:.1f} ms, "
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file for every row and the environment")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any device: checks the script, not the card")
    ap.add_argument("--min-seconds", type=float, default=0.5)
    ap.add_argument("--load-seconds", type=float, default=8.0)
    ap.add_argument("--clip-fps", type=float, default=25.0, help="batcher part: clips each simulated camera submits per s")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: reid,encoder,batcher,detection")
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
    if device.type == "cuda" and not args.smoke:
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
    if "batcher" not in skip:
        for backbone in SIZES:
            for cams in ([2] if args.smoke else [16, 64]):
                result["rows"].append(batcher_load(backbone, cams, 1.0 if args.smoke else args.load_seconds, device,
                                                   fps=5.0 if args.smoke else args.clip_fps, max_batch=8 if args.smoke else 64))
                save()
    if "detection" not in skip:
        result["rows"] += detection([1, 2] if args.smoke else [1, 8, 16, 32], device,
                                    0.05 if args.smoke else args.min_seconds, cameras=2 if args.smoke else 16)
        save()
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
