"""Export the whole Re-ID-AR model (backbone, temporal attention, identity and action heads) to ONNX, OpenVINO IR
or a TensorRT engine, and check the export against PyTorch.

The exported graph takes normalised clips `clips` float32 (B, T, 3, H, W) (RGB, (x/255 - mean)/std, the values in
metadata.json) and returns `embedding` (B, D) and, when the model has actions, `action_probs` (B, A). The batch B and
the clip length T are dynamic (the pipeline's clips use T = reid.clip_len, its per-detection embedder T = 1); H, W
are fixed to the checkpoint's input size.

Folder layout (`--output DIR`): model.onnx (always: the source of the other formats), model.xml + model.bin
(`openvino`, fp32), model.engine (`tensorrt`, fp16, on a CUDA machine), metadata.json (`ExportMetadata`) and
parity.json (`parity_report`).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.reid.model import InferenceHead
from models.reid.runtimes import (
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    ExportedReIDAR,
    ExportMetadata,
    RuntimeLoadError,
)

log = logging.getLogger("mcsa.reid.export")

FORMATS = ("onnx", "openvino", "tensorrt")
OPSET = 17


class ExportError(RuntimeError):
    """The export cannot be made here; the message names what is missing and the fix."""


def tensorrt_unavailable_reason() -> str | None:
    """None when a TensorRT engine can be built here, else why not (one line)."""
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt package is not installed (pip install tensorrt)"
    return None


def export_onnx(model: torch.nn.Module, path: Path, clip_len: int, opset: int = OPSET) -> list[str]:
    """Trace the eval-mode model to ONNX with dynamic batch and clip length; returns the output names."""
    model = model.eval().cpu()
    head = InferenceHead(model).eval()
    outputs = ["embedding", "action_probs"] if head.with_actions else ["embedding"]
    example = torch.zeros(2, max(int(clip_len), 2), 3, *model.input_size)
    dynamic = {"clips": {0: "batch", 1: "clip_len"}}
    dynamic.update({name: {0: "batch"} for name in outputs})
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape-dependent branches (fixed H, W) and the legacy exporter
        torch.onnx.export(head, (example,), str(path), dynamo=False, input_names=["clips"], output_names=outputs,
                          dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True)
    return outputs


def export_openvino(onnx_path: Path, xml_path: Path) -> None:
    """ONNX -> OpenVINO IR (fp32 weights), via openvino.convert_model."""
    try:
        import openvino as ov
    except ImportError:
        raise ExportError("OpenVINO is not installed (pip install openvino)") from None
    ov_model = ov.convert_model(str(onnx_path))
    ov.save_model(ov_model, str(xml_path), compress_to_fp16=False)


def export_tensorrt(onnx_path: Path, engine_path: Path, input_size: tuple[int, int], clip_len: int,
                    max_batch: int = 128, max_clip_len: int = 16, fp16: bool = True) -> None:
    """ONNX -> serialized TensorRT engine with an optimisation profile for B in 1..max_batch (opt 32) and T in
    1..max_clip_len (opt clip_len); FP16 kernels allowed when `fp16`."""
    reason = tensorrt_unavailable_reason()
    if reason:
        raise ExportError(f"TensorRT engine not built: {reason}; it is built only on a CUDA machine with tensorrt "
                          "(the ONNX export in this folder runs anywhere)")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    h, w = input_size
    profile = builder.create_optimization_profile()
    profile.set_shape("clips", (1, 1, 3, h, w), (min(32, max_batch), clip_len, 3, h, w),
                      (max_batch, max(max_clip_len, clip_len), 3, h, w))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above)")
    engine_path.write_bytes(bytes(serialized))


def normalise_clips(clips: np.ndarray, mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB) -> np.ndarray:
    """uint8 RGB clips (B, T, H, W, 3) -> float32 (B, T, 3, H, W), (x/255 - mean)/std."""
    x = clips.astype(np.float32).transpose(0, 1, 4, 2, 3)
    x -= (np.asarray(mean, np.float32) * 255.0).reshape(1, 1, 3, 1, 1)
    x /= (np.asarray(std, np.float32) * 255.0).reshape(1, 1, 3, 1, 1)
    return np.ascontiguousarray(x)


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return 1.0 - (a * b).sum(1) / np.maximum(na * nb, 1e-12)


def parity_report(model: torch.nn.Module, exported: ExportedReIDAR, clips: np.ndarray,
                  batches: tuple[int, ...] = (1, 8, 64), repeats: int = 1) -> dict[str, Any]:
    """Compare an export with the PyTorch model (eval, fp32, CPU) on the same clips at each batch size.

    clips: uint8 RGB (N, T, H, W, 3) real crops at the model's input size; batches larger than N reuse clips
    cyclically. Per batch: max |embedding difference|, max cosine distance of embeddings, max |action probability
    difference|, and both sides' clips/s (best of `repeats` timed calls after one warm-up)."""
    model = model.eval().cpu()
    meta = exported.meta
    report: dict[str, Any] = {"runtime": exported.backend, "clip_len": int(clips.shape[1]), "batches": {}}
    for b in batches:
        idx = np.arange(b) % len(clips)
        x = normalise_clips(clips[idx], meta.mean, meta.std)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x))
        ref_emb, ref_probs = ref.embedding.numpy(), ref.action_probs.numpy()
        emb, probs = exported.encode(x)
        row = {
            "max_abs_embedding": float(np.abs(emb - ref_emb).max()),
            "max_cosine_distance": float(_cosine_distance(emb, ref_emb).max()),
            "max_abs_action_probs": float(np.abs(probs - ref_probs).max()) if ref_probs.size else 0.0,
        }
        if repeats > 0:
            def best(fn) -> float:
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                return b / min(times)

            with torch.inference_mode():
                row["torch_clips_per_s"] = best(lambda: model(torch.from_numpy(x)))
            row["export_clips_per_s"] = best(lambda: exported.encode(x))
        report["batches"][str(b)] = row
    worst = report["batches"].values()
    report["max_cosine_distance"] = max(r["max_cosine_distance"] for r in worst)
    report["max_abs_action_probs"] = max(r["max_abs_action_probs"] for r in worst)
    return report


def export_reid_ar(model: torch.nn.Module, output: str | Path, fmt: str = "onnx", clip_len: int = 4,
                   source: str = "", opset: int = OPSET, max_batch: int = 128) -> ExportMetadata:
    """Write `fmt` (onnx | openvino | tensorrt) of the eval-mode Re-ID-AR `model` into the folder `output`.

    model.onnx is always written (the other formats are built from it); metadata.json describes the input and
    outputs. Raises `ExportError` with one line when the format cannot be built here (TensorRT without CUDA)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "tensorrt" and tensorrt_unavailable_reason():
        raise ExportError(f"TensorRT engine not built: {tensorrt_unavailable_reason()}; run the export with "
                          "--format tensorrt on a CUDA machine with tensorrt (onnx / openvino work here)")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    onnx_path = out / "model.onnx"
    outputs = export_onnx(model, onnx_path, clip_len, opset)
    files = {"onnx": onnx_path.name}
    if fmt == "openvino":
        export_openvino(onnx_path, out / "model.xml")
        files["openvino"] = "model.xml"
    elif fmt == "tensorrt":
        export_tensorrt(onnx_path, out / "model.engine", model.input_size, clip_len, max_batch=max_batch)
        files["tensorrt"] = "model.engine"
    with torch.inference_mode():
        dim = int(model(torch.zeros(1, 1, 3, *model.input_size)).embedding.shape[1])
    meta = ExportMetadata(
        input_size=tuple(model.input_size), clip_len=int(clip_len), dynamic_clip_len=True, embedding_dim=dim,
        action_names=list(model.action_names), backbone=model.backbone_name, files=files,
        embedding=model.embedding_kind, normalize_embedding=bool(model.normalize_embedding),
        output_names=outputs, source=source, opset=opset,
    )
    meta.write(out)
    return meta


def check_export(model: torch.nn.Module, output: str | Path, fmt: str, clips: np.ndarray,
                 batches: tuple[int, ...] = (1, 8, 64), threads: int | None = None, repeats: int = 1) -> dict[str, Any]:
    """Load the export folder with the runtime of `fmt` and write parity.json (see `parity_report`)."""
    out = Path(output)
    backend = {"onnx": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}[fmt]
    device = "cuda:0" if fmt == "tensorrt" else "cpu"
    try:
        exported = ExportedReIDAR(out, device=device, backend=backend, threads=threads)
    except RuntimeLoadError as err:
        raise ExportError(str(err)) from None
    report = parity_report(model, exported, clips, batches, repeats)
    (out / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
