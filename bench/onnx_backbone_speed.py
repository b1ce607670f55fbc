#!/usr/bin/env python3
"""Cost of the `onnx_frame` backbone (a frame-level ONNX re-id model converted to PyTorch), run by hand (not in tests).

    python bench/onnx_backbone_speed.py      # Intel person-reidentification-retail-0267, batch 32, T=4, 1 thread

Prints the conversion time (ONNX file -> trainable Re-ID-AR model; and a checkpoint load, which converts the embedded
ONNX bytes again) and clips/s of, side by side in this process on the same random normalised clips (B, T, 3, H, W):
  * the original ONNX file on OpenVINO (the baseline: frames (B*T) through the file's own graph, mean over T);
  * the converted Re-ID-AR model in PyTorch eager (fp32; what training and `reid.cpu_backend: torch` run);
  * the converted Re-ID-AR model compiled by OpenVINO (through its ONNX export; the pipeline's CPU default).
Best of `--repeats` timed calls (alternated) after one warm-up call each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.paths import shared_dir  # noqa: E402

DEFAULT_ONNX = "models/openvino_reid/person-reidentification-retail-0287/person-reidentification-retail-0267.onnx"


def best_times(fns: list, repeats: int) -> list[float]:
    """Best wall time of each function, calls alternated (round robin) so machine load hits all alike."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", default=None, help=f"frame-level ONNX re-id model (default ../shared/{DEFAULT_ONNX})")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--clip-len", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    path = Path(args.onnx) if args.onnx else shared_dir() / DEFAULT_ONNX
    if not path.is_file():
        print(f"{path}: not found (pass --onnx PATH)")
        return 1
    torch.set_num_threads(args.threads)
    b, t = args.batch, args.clip_len
    import openvino as ov

    from models.reid.model import ReIDAR, load_checkpoint, save_checkpoint
    from pipeline.reid.encoder import compile_openvino

    t0 = time.perf_counter()
    model = ReIDAR("onnx_frame", num_classes=1, action_names=[], input_size=(256, 128), pretrained=str(path)).eval()
    convert_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(Path(tmp) / "m.pth", model)
        t0 = time.perf_counter()
        load_checkpoint(ckpt)
        load_s = time.perf_counter() - t0
    h, w = model.input_size
    clips = torch.randn(b, t, 3, h, w)
    frames = clips.flatten(0, 1).numpy()

    core = ov.Core()
    original = core.read_model(str(path))
    original.reshape({original.inputs[0].get_any_name(): [b * t, 3, h, w]})  # static: its best case
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": args.threads}
    ov_original = core.compile_model(original, "CPU", config).create_infer_request()
    t0 = time.perf_counter()
    ov_converted = compile_openvino(model, (h, w), args.threads, cache=False).create_infer_request()
    compile_s = time.perf_counter() - t0

    def run_original():
        return np.asarray(ov_original.infer(frames)[0]).reshape(b, t, -1).mean(1)

    def run_torch():
        with torch.inference_mode():
            return model(clips).embedding

    def run_converted_ov():
        return ov_converted.infer(clips.numpy())[0]

    names = ["original ONNX on OpenVINO (baseline)", "converted, PyTorch eager",
             "converted, OpenVINO (via ONNX export)"]
    rows = list(zip(names, best_times([run_original, run_torch, run_converted_ov], args.repeats)))
    base = rows[0][1]
    print(f"{path.name}: convert {convert_s:.1f} s, checkpoint load {load_s:.1f} s, OpenVINO compile of the "
          f"converted model {compile_s:.1f} s")
    print(f"batch {b} clips x T={t} at {h}x{w}, {args.threads} thread(s), best of {args.repeats}")
    print(f"{'model':40s} {'clips/s':>8s} {'vs baseline':>12s}")
    for name, sec in rows:
        print(f"{name:40s} {b / sec:8.1f} {base / sec:11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
