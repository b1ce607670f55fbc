#!/usr/bin/env python3
"""Re-ID-AR throughput and its cost in the pipeline, run by hand (not in tests).

    python bench/reid_throughput.py                        # model table + Terrace pipeline Re-ID on/off (CPU: ~10 min)
    python bench/reid_throughput.py --skip-pipeline --backbones resnet50_ibn_a --batches 128   # e.g. on a GPU
    python bench/reid_throughput.py --skip-model --frames 1500                                # the full Terrace run

1. Model: clips/s of `ClipEncoder.encode` (uint8 clips in, host copy + normalisation + model + results back to numpy;
   exactly what the pipeline's batcher calls) against batch size, for each backbone at its input size
   (OSNet: 256x128, ResNet50-IBN-a: the paper's 224x112), T = 4; fp32, and AMP (bf16/fp16 autocast, channels-last)
   where CUDA is present; on CPU, PyTorch eager and the OpenVINO-compiled model (the pipeline's CPU default). Random weights: speed does not depend on their values. On CUDA also the card's measured
   dense matrix rate (a large bf16/fp16 matmul) and the model's achieved fraction of it (model FLOPs counted by
   torch.utils.flop_counter).
2. Pipeline: EPFL Terrace, both cameras, `--frames` per camera, Re-ID off and on (OSNet x0.25 MSMT17 weights, the
   default config), alternated `--repeats` times in this process; the best wall time of each is kept. Goal (issue 5):
   on 2 CPU cores, Re-ID with OSNet x0.25 adds at most 25 % to the end-to-end time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.paths import REPO_ROOT  # noqa: E402

INPUT_SIZES = {"osnet_x0_25": (256, 128), "osnet_x1_0": (256, 128), "resnet50_ibn_a": (224, 112)}


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int = 8192, iters: int = 20) -> float:
    """Measured dense matrix rate of the card (TFLOP/s) for an n x n x n matmul in `dtype`."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12


def model_flops(model: torch.nn.Module, size: tuple[int, int], t: int) -> float:
    """Forward FLOPs of one clip (1, T, 3, H, W)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, t, 3, *size)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model.cpu().eval()(x)
    return float(counter.get_total_flops())


def bench_model(backbone: str, batches: list[int], t: int, device: str, amp: bool, min_s: float,
                cpu_backend: str = "torch") -> list[dict]:
    from models.reid import ReIDAR
    from pipeline.reid import ClipEncoder

    size = INPUT_SIZES[backbone]
    torch.manual_seed(0)
    model = ReIDAR(backbone, num_classes=1, action_names=["walking", "standing", "running"], input_size=size)
    flops = model_flops(model, size, t)
    encoder = ClipEncoder.from_model(model, source=f"{backbone} (random weights)", device=device, amp=amp,
                                     cpu_backend=cpu_backend)
    rows = []
    for b in batches:
        clips = np.random.default_rng(0).integers(0, 255, (b, t, *size, 3), dtype=np.uint8)
        encoder.encode(clips)  # warm-up (cuDNN autotune, allocator)
        n, t0 = 0, time.perf_counter()
        while True:
            encoder.encode(clips)
            n += b
            elapsed = time.perf_counter() - t0
            if elapsed >= min_s and n >= 2 * b or elapsed >= 10 * min_s:
                break
        if encoder.device.type == "cpu":
            precision = "ov fp32" if encoder.backend.startswith("openvino") else "torch fp32"
        else:
            precision = "amp " + str(encoder.amp_dtype).split(".")[-1] if encoder.amp else "fp32"
        rows.append(dict(backbone=backbone, size=size, batch=b, precision=precision,
                         clips_s=n / elapsed, ms_batch=1000 * elapsed * b / n,
                         tflops=flops * n / elapsed / 1e12, gflops_clip=flops / 1e9))
        print(f"  {backbone:<15} batch {b:>4} {rows[-1]['precision']:<10} {rows[-1]['clips_s']:9.1f} clips/s",
              flush=True)
    return rows


def bench_pipeline(frames: int, repeats: int) -> dict[str, float]:
    from pipeline.config import load_config
    from pipeline.runner import Pipeline

    cfg = load_config(REPO_ROOT / "configs" / "epfl_terrace_tracks.yaml")
    best: dict[str, float] = {}
    counters: dict[str, dict] = {}
    for _ in range(repeats):
        for mode in ("off", "on"):
            data = cfg.model_dump()
            for cam in data["cameras"]:
                cam["max_frames"] = frames
            data["run"]["progress"] = False
            data["reid"]["enabled"] = mode == "on"
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                summary = Pipeline(type(cfg).model_validate(data), tmp).run()
                wall = time.perf_counter() - t0
            if summary.exit_code != 0:
                raise SystemExit(f"pipeline run failed:\n{summary.table()}")
            print(f"  pipeline Re-ID {mode}: {wall:.1f} s", flush=True)
            if wall < best.get(mode, float("inf")):
                best[mode] = wall
                counters[mode] = summary.reid or {}
    best["frames"] = 2 * frames
    best["reid"] = counters.get("on", {})
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", default="osnet_x0_25,osnet_x1_0,resnet50_ibn_a")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default: 1,8,32,128 on CUDA; "
                                                    "1,8,32 on CPU, where 128 takes minutes per backbone)")
    ap.add_argument("--seq-len", type=int, default=4, help="T frames per clip")
    ap.add_argument("--min-seconds", type=float, default=2.0, help="time each measurement at least this long")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--frames", type=int, default=400, help="frames per Terrace camera in the pipeline part")
    ap.add_argument("--repeats", type=int, default=2, help="off/on pipeline runs alternated this many times")
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--skip-pipeline", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cuda = torch.cuda.is_available() and args.device != "cpu"
    device = "cuda:0" if cuda and args.device == "auto" else ("cpu" if args.device == "auto" else args.device)
    batches = [int(b) for b in args.batches.split(",")] if args.batches else ([1, 8, 32, 128] if cuda else [1, 8, 32])
    print(f"device: {torch.cuda.get_device_name(0) if cuda else 'CPU'} ({torch.get_num_threads()} torch threads), "
          f"torch {torch.__version__}", flush=True)

    if not args.skip_model:
        rows = []
        for backbone in args.backbones.split(","):
            rows += bench_model(backbone, batches, args.seq_len, device, amp=False, min_s=args.min_seconds)
            if cuda:
                rows += bench_model(backbone, batches, args.seq_len, device, amp=True, min_s=args.min_seconds)
            else:  # the pipeline's default CPU path: the same model compiled by OpenVINO
                rows += bench_model(backbone, batches, args.seq_len, device, amp=False, min_s=args.min_seconds,
                                    cpu_backend="openvino")
        peak = {}
        if cuda:
            dt = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            peak["amp"] = matmul_tflops(torch.device(device), dt)
            peak["fp32"] = matmul_tflops(torch.device(device), torch.float32)
            print(f"measured matmul rate: {peak['amp']:.0f} TFLOP/s ({str(dt).split('.')[-1]}), "
                  f"{peak['fp32']:.0f} TFLOP/s (fp32, TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'})")
        print()
        head = (f"{'backbone':<15} {'HxW':>7} {'T':>2} {'batch':>5} {'precision':<10} {'clips/s':>9} {'ms/batch':>9}"
                f" {'GFLOP/clip':>10} {'TFLOP/s':>8} {'vs b=1':>7}" + (f" {'of peak':>8}" if cuda else ""))
        print(head)
        print("-" * len(head))
        base = {}
        for r in rows:
            key = (r["backbone"], r["precision"])
            base.setdefault(key, r["clips_s"])
            line = (f"{r['backbone']:<15} {r['size'][0]:>3}x{r['size'][1]:<3} {args.seq_len:>2} {r['batch']:>5} "
                    f"{r['precision']:<10} {r['clips_s']:9.1f} {r['ms_batch']:9.1f} {r['gflops_clip']:10.2f} "
                    f"{r['tflops']:8.3f} {r['clips_s'] / base[key]:7.2f}")
            if cuda:
                p = peak["amp"] if r["precision"].startswith("amp") else peak["fp32"]
                line += f" {r['tflops'] / p:8.1%}"
            print(line)
        if not cuda:
            torch_rows = {(r["backbone"], r["batch"]): r["clips_s"] for r in rows if r["precision"] == "torch fp32"}
            ratios = [f"{r['backbone']} b={r['batch']}: {r['clips_s'] / torch_rows[(r['backbone'], r['batch'])]:.2f}x"
                      for r in rows if r["precision"] == "ov fp32" and (r["backbone"], r["batch"]) in torch_rows]
            print("OpenVINO over PyTorch eager (same weights, same process): " + ", ".join(ratios))
        print("vs b=1: throughput over batch 1 of the same backbone and precision" +
              ("; of peak: achieved model TFLOP/s over the measured matmul rate" if cuda else ""))
        print()

    if not args.skip_pipeline:
        res = bench_pipeline(args.frames, args.repeats)
        off, on = res["off"], res["on"]
        r = res["reid"]
        print(f"{'EPFL Terrace, 2 cameras':<26} {'frames':>6} {'wall s':>7} {'fps':>6} {'time vs off':>11}")
        print(f"{'Re-ID off':<26} {res['frames']:>6} {off:7.1f} {res['frames'] / off:6.1f} {1.0:11.2f}")
        print(f"{'Re-ID on (OSNet x0.25)':<26} {res['frames']:>6} {on:7.1f} {res['frames'] / on:6.1f} {on / off:11.2f}")
        print(f"Re-ID added {100 * (on / off - 1):.1f} % to the end-to-end time (goal <= 25 %); "
              f"{r.get('processed', 0)} clips in {r.get('batches', 0)} batches (mean {r.get('mean_batch', 0):.1f}), "
              f"{r.get('dropped', 0)} dropped, model busy {r.get('busy_s', 0):.1f} s, "
              f"{r.get('tracks_with_embedding', 0)} tracks with an embedding")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
