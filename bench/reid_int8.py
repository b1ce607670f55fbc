#!/usr/bin/env python3
"""INT8 (NNCF post-training quantisation) of the default OSNet x0.25 Re-ID model vs its fp32 OpenVINO export.

    python bench/reid_int8.py [--fp32 DIR] [--out DIR] [--calib 300] [--repeats 5]

Needs `pip install nncf` (not in requirements.txt: only this bench uses it).

1. The fp32 OpenVINO export of `osnet_x0_25_msmt17.pth` (`run_pipeline.py export --format openvino`; --fp32 reuses
   one) is quantised to INT8 with NNCF (`nncf.quantize`, mixed preset) on --calib real clips of PETS09-S2L1 people
   (ground-truth boxes, T = 4): never on the Terrace data that the checks below use. The INT8 folder is an export
   folder (`reid.checkpoint: DIR` runs it).
2. Parity on 256 real EPFL Terrace clips (c0 and c1, T = 4): cosine distance of the INT8 embeddings to the fp32 ones.
3. Retrieval on the Terrace ground-truth tracklets (bench/reid_models.py protocol: c0 query, c1 gallery, tracklet
   level, cosine): rank-1 and mAP of both.
4. Cost: clips/s at batch 1, 8 and 32 (T = 4) of both, alternating in this process (best of --repeats calls).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from core.paths import shared_dir  # noqa: E402


def quantize(fp32: Path, out: Path, calib: np.ndarray) -> None:
    """NNCF INT8 of fp32/model.xml on normalised calibration clips -> out/model.xml (+ metadata.json)."""
    try:
        import nncf
    except ImportError:
        sys.exit("bench/reid_int8.py needs NNCF: pip install nncf")
    import openvino as ov

    from models.reid.export import normalise_clips

    meta = json.loads((fp32 / "metadata.json").read_text())
    core = ov.Core()
    model = core.read_model(str(fp32 / "model.xml"))
    items = [normalise_clips(calib[i:i + 1], meta["mean"], meta["std"]) for i in range(len(calib))]
    q = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items), preset=nncf.QuantizationPreset.MIXED)
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(q, str(out / "model.xml"), compress_to_fp16=False)
    meta["files"] = {"openvino": "model.xml"}
    meta["quantization"] = f"nncf {nncf.__version__} int8, mixed preset, {len(items)} PETS09-S2L1 clips"
    (out / "metadata.json").write_text(json.dumps(meta, indent=2))


def clips_per_s(encoder, clips: np.ndarray, batch: int, repeats: int) -> float:
    x = clips[np.arange(batch) % len(clips)]
    encoder.encode(x)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        encoder.encode(x)
        best = min(best, time.perf_counter() - t)
    return batch / best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", default=None, help="an fp32 OpenVINO export folder of the model (default: export now)")
    ap.add_argument("--out", default="/tmp/mcsa_reid_int8", help="where the fp32 and INT8 folders are written")
    ap.add_argument("--calib", type=int, default=300, help="calibration clips (PETS09)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="inference threads (default: the runtime's)")
    args = ap.parse_args()
    shared = shared_dir()
    out = Path(args.out)
    fp32 = Path(args.fp32) if args.fp32 else out / "fp32"
    if not args.fp32:
        import torch

        from models.reid.export import export_reid_ar
        from pipeline.commands.evaluate_reid import load_model_for_eval

        model, _ = load_model_for_eval(str(shared / "models" / "osnet_x0_25_msmt17.pth"), None, None,
                                       torch.device("cpu"))
        export_reid_ar(model, fp32, "openvino", 4, source="osnet_x0_25_msmt17.pth")
    from pipeline.reid import ClipEncoder
    from pipeline.reid_data.sample_clips import clips_from_mot, terrace_clips

    size = tuple(json.loads((fp32 / "metadata.json").read_text())["input_size"])
    pets = shared / "data" / "pets09_s2l1"
    calib = clips_from_mot(pets / "vtest.avi", pets / "gt" / "gt.txt", args.calib, 4, size)
    int8 = out / "int8"
    shutil.rmtree(int8, ignore_errors=True)
    t = time.perf_counter()
    quantize(fp32, int8, calib)
    print(f"quantised in {time.perf_counter() - t:.1f} s on {len(calib)} PETS09 clips -> {int8}")

    enc = {name: ClipEncoder(str(folder), device="cpu", cpu_threads=args.threads)
           for name, folder in (("fp32", fp32), ("int8", int8))}
    test = np.concatenate([terrace_clips(shared, 128, 4, size, camera=c) for c in ("c0", "c1")])
    e32, e8 = enc["fp32"].encode(test)[0], enc["int8"].encode(test)[0]
    cos = (e32 * e8).sum(1) / np.linalg.norm(e32, axis=1) / np.linalg.norm(e8, axis=1)
    dist = 1.0 - cos
    print(f"parity on {len(test)} Terrace clips: cosine distance INT8 vs fp32 mean {dist.mean():.2e}, "
          f"p95 {np.percentile(dist, 95):.2e}, max {dist.max():.2e}")

    from reid_ar_shared import export_specs, terrace_dataset
    from reid_models import rank

    root = out / "tracklets"
    if not (root / "terrace" / "tracklets.csv").is_file():
        from pipeline.reid_data.export import ExportOptions, export_tracklets

        for folder, video, boxes, _, kw in export_specs(shared):
            if folder == "terrace":
                export_tracklets(video, boxes, root / folder, ExportOptions(**kw), None)
    ds = terrace_dataset(root)
    ranks = {name: rank(e, ds, 4, dense=False) for name, e in enc.items()}
    speed = {name: {} for name in enc}
    for b in (1, 8, 32):
        for _ in range(2):  # alternate so both see the same machine load
            for name, e in enc.items():
                speed[name][b] = max(speed[name].get(b, 0.0), clips_per_s(e, test, b, args.repeats))
    print(f"\n{'model':<8} {'backend':<44} {'rank-1':>7} {'mAP':>7} " +
          " ".join(f"{'clips/s b' + str(b):>13}" for b in (1, 8, 32)) + f" {'ratio b32':>10}")
    for name, e in enc.items():
        r = ranks[name]
        print(f"{name:<8} {e.backend:<44} {r['rank1'] * 100:>7.2f} {r['mAP'] * 100:>7.2f} " +
              " ".join(f"{speed[name][b]:>13.1f}" for b in (1, 8, 32)) +
              f" {speed[name][32] / speed['fp32'][32]:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
