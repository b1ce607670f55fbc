"""Inference runtimes for exported and foreign re-id models: ONNX Runtime, OpenVINO, TensorRT (where present).

One small interface, `InferenceRuntime.run(x float32 (N, ...)) -> [outputs]`, with three backends in `RUNTIMES`:

  * `onnxruntime`: `.onnx` files; CPUExecutionProvider, or CUDAExecutionProvider on `cuda` when that wheel is
    installed;
  * `openvino`: `.xml` IR (or `.onnx`) compiled for the CPU; a static batch of 1 is reshaped to a dynamic one;
  * `tensorrt`: a serialized `.engine` built by `models.reid.export` on a CUDA machine (needs `tensorrt` + CUDA).

On top of them:

  * `ExportedReIDAR`: a folder written by `run_pipeline.py export` (metadata.json + model.onnx / model.xml /
    model.engine): normalised clips (B, T, 3, H, W) -> embedding (B, D), action_probs (B, A);
  * `FrameReIDModel`: a foreign frame-level re-id model (`onnx:PATH`, `openvino:PATH.xml`; torchreid / BoxMOT ONNX
    exports of OSNet, Open Model Zoo `person-reidentification-retail-*`): uint8 RGB crops (N, H, W, 3) ->
    embeddings (N, D), with the model's own input size, channel order and normalisation (`InputSpec`).

Every loading problem raises `RuntimeLoadError` with one line naming the file and the fix.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.registry import Registry

log = logging.getLogger("mcsa.reid")

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
EXPORT_FORMAT = "mcsa-reid-ar-export/1"
METADATA_FILE = "metadata.json"


class RuntimeLoadError(RuntimeError):
    """An exported / foreign model cannot be used; the message names the file and the fix."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


# ----------------------------------------------------------------------------------------------------------------------
# backends
# ----------------------------------------------------------------------------------------------------------------------


class InferenceRuntime:
    """A compiled model with one input: `run(x)` -> list of outputs (numpy float32), first dim = batch.

    input_shape: the model's input shape with None for dynamic dims; static_batch: the fixed batch size when the
    model's batch dim is not dynamic (inputs are then fed in chunks of that size), else None.
    """

    name = "?"
    input_name: str
    input_shape: list[int | None]
    output_names: list[str]
    static_batch: int | None = None

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = self.static_batch
        if not n or len(x) == n:
            return [np.asarray(o, np.float32) for o in self._run(x)]
        chunks = []
        for start in range(0, len(x), n):  # static-batch model (e.g. OMZ batch 1): run it chunk by chunk
            part = x[start:start + n]
            if len(part) < n:
                part = np.concatenate([part, np.zeros((n - len(part), *part.shape[1:]), np.float32)])
            chunks.append([np.asarray(o, np.float32) for o in self._run(part)])
        return [np.concatenate([c[i] for c in chunks])[: len(x)] for i in range(len(chunks[0]))]


RUNTIMES: Registry[InferenceRuntime] = Registry("inference runtime")


def _dims(shape) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


@RUNTIMES.register("onnxruntime")
class OnnxRuntimeBackend(InferenceRuntime):
    """ONNX Runtime on the CPU, or CUDA when `device` is cuda and the CUDA provider is installed."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeLoadError(f"{path}: ONNX Runtime is not installed (pip install onnxruntime, or "
                                   "onnxruntime-gpu on CUDA machines)") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeLoadError(f"{path}: device {device} asked for, but this ONNX Runtime has no CUDA provider "
                                       "(pip install onnxruntime-gpu, or set reid.device: cpu)")
            index = int(str(device).split(":")[1]) if ":" in str(device) else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # noqa: BLE001 - protobuf / graph errors: one line
            raise RuntimeLoadError(f"{path}: not a loadable ONNX model ({_first_line(err)}); pass an .onnx file "
                                   "exported from PyTorch (e.g. by `run_pipeline.py export`)") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise RuntimeLoadError(f"{path}: the model has {len(inputs)} inputs; a re-id model takes one image tensor")
        self.input_name = inputs[0].name
        self.input_shape = _dims(inputs[0].shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.static_batch = self.input_shape[0] if self.input_shape else None
        self.device = "cuda" if providers[0] != "CPUExecutionProvider" else "cpu"
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map or {})

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: x})


@RUNTIMES.register("openvino")
class OpenVINOBackend(InferenceRuntime):
    """OpenVINO on the CPU (fp32 precision hint): IR `.xml` (+ `.bin`) or `.onnx`; one infer request per thread."""

    name = "openvino"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        if str(device).startswith("cuda"):
            raise RuntimeLoadError(f"{path}: OpenVINO runs on the CPU here; set reid.device: cpu, or use the ONNX "
                                   "Runtime / TensorRT export on CUDA")
        try:
            import openvino as ov
        except ImportError:
            raise RuntimeLoadError(f"{path}: OpenVINO is not installed (pip install openvino)") from None
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as err:  # noqa: BLE001
            raise RuntimeLoadError(f"{path}: not a readable OpenVINO model ({_first_line(err)}); pass an IR .xml "
                                   "with its .bin beside it, or an .onnx file") from None
        if len(model.inputs) != 1:
            raise RuntimeLoadError(f"{path}: the model has {len(model.inputs)} inputs; a re-id model takes one image "
                                   "tensor")
        port = model.inputs[0]
        shape = port.get_partial_shape()
        if shape.rank.is_static and shape.rank.get_length() >= 1 and shape[0].is_static:
            try:  # batch 1 models (Open Model Zoo): make the batch dynamic, so one call serves a whole batch
                new = [ov.Dimension(-1)] + [shape[i] for i in range(1, shape.rank.get_length())]
                model.reshape({port.any_name: ov.PartialShape(new)})
            except Exception as err:  # noqa: BLE001 - a graph with a hard-coded batch: keep it, run in chunks
                log.debug("Re-ID: %s keeps its static batch (%s)", path, _first_line(err))
        shape = model.inputs[0].get_partial_shape()
        self.input_name = port.any_name
        self.input_shape = ([d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else [])
        self.static_batch = self.input_shape[0] if self.input_shape else None
        self.output_names = [o.any_name for o in model.outputs]
        self.rt_info = model.get_rt_info() if hasattr(model, "get_rt_info") else None
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as err:  # noqa: BLE001
            raise RuntimeLoadError(f"{path}: OpenVINO cannot compile it for the CPU ({_first_line(err)})") from None
        self.device = "cpu"
        self._local = threading.local()

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:  # one request per thread: the batcher and the DetectionEmbedder may overlap
            request = self._local.request = self.compiled.create_infer_request()
        out = request.infer(x)
        return [np.array(out[o], np.float32) for o in self.compiled.outputs]


@RUNTIMES.register("tensorrt")
class TensorRTBackend(InferenceRuntime):
    """A serialized TensorRT engine (built by `models.reid.export` on this GPU model and TensorRT version).

    I/O through torch CUDA tensors; the input's dynamic dims are set per call within the engine's profile.
    """

    name = "tensorrt"

    def __init__(self, path: str | Path, device: str = "cuda:0", threads: int | None = None) -> None:
        import torch

        if not torch.cuda.is_available() or not str(device).startswith("cuda"):
            raise RuntimeLoadError(f"{path}: a TensorRT engine needs a CUDA GPU (set reid.device: cuda:0, or use the "
                                   "model.onnx / model.xml of the export on the CPU)")
        try:
            import tensorrt as trt
        except ImportError:
            raise RuntimeLoadError(f"{path}: the tensorrt package is not installed (pip install tensorrt)") from None
        self.torch, self.device = torch, torch.device(device)
        logger = trt.Logger(trt.Logger.ERROR)
        with open(path, "rb") as f, trt.Runtime(logger) as runtime:
            self.engine = runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise RuntimeLoadError(f"{path}: not a TensorRT engine for this TensorRT version / GPU; rebuild it with "
                                   "`run_pipeline.py export --format tensorrt` on this machine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise RuntimeLoadError(f"{path}: the engine has {len(inputs)} inputs; expected one image tensor")
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n not in inputs]
        self.input_shape = _dims(self.engine.get_tensor_shape(self.input_name))
        self.static_batch = self.input_shape[0] if self.input_shape else None
        self._lock = threading.Lock()

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        torch = self.torch
        with self._lock, torch.inference_mode():
            inp = torch.from_numpy(x).to(self.device)
            self.context.set_input_shape(self.input_name, tuple(inp.shape))
            self.context.set_tensor_address(self.input_name, inp.data_ptr())
            outs = []
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                out = torch.empty(shape, dtype=torch.float32, device=self.device)
                self.context.set_tensor_address(name, out.data_ptr())
                outs.append(out)
            stream = torch.cuda.current_stream(self.device)
            self.context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
            return [o.cpu().numpy() for o in outs]


def installed_runtimes() -> list[str]:
    """Backends whose Python package imports here (TensorRT also needs CUDA)."""
    import importlib.util

    names = [n for n, mod in (("onnxruntime", "onnxruntime"), ("openvino", "openvino"))
             if importlib.util.find_spec(mod) is not None]
    if importlib.util.find_spec("tensorrt") is not None:
        import torch

        if torch.cuda.is_available():
            names.append("tensorrt")
    return names


def open_runtime(path: str | Path, backend: str = "auto", device: str = "cpu",
                 threads: int | None = None) -> InferenceRuntime:
    """Load `path` with `backend` (`auto`: by file type and what is installed: .xml -> openvino, .engine ->
    tensorrt, .onnx -> onnxruntime, else openvino)."""
    path = Path(path)
    if not path.is_file():
        raise RuntimeLoadError(f"{path}: no such model file (give a local .onnx, OpenVINO .xml or TensorRT .engine)")
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".xml", ".engine", ".plan"):
        raise RuntimeLoadError(f"{path}: unknown model file type {suffix or '(none)'}; expected .onnx, an OpenVINO "
                               ".xml or a TensorRT .engine")
    if suffix == ".xml" and not path.with_suffix(".bin").is_file():
        raise RuntimeLoadError(f"{path}: the OpenVINO weights {path.with_suffix('.bin').name} are missing beside it")
    if backend == "auto":
        if suffix == ".xml":
            backend = "openvino"
        elif suffix in (".engine", ".plan"):
            backend = "tensorrt"
        else:
            backend = "onnxruntime" if "onnxruntime" in installed_runtimes() else "openvino"
    if backend not in RUNTIMES:
        raise RuntimeLoadError(f"unknown inference runtime {backend!r}; known: {', '.join(RUNTIMES.names())}")
    if suffix == ".xml" and backend != "openvino":
        raise RuntimeLoadError(f"{path}: an OpenVINO IR runs only on the openvino runtime, not {backend}")
    return RUNTIMES.get(backend)(path, device=device, threads=threads)


# ----------------------------------------------------------------------------------------------------------------------
# pixels -> model input
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """How a model wants its crops: size (H, W) px; color `rgb` or `bgr` (the order of the input's channels);
    mean / std per R, G, B in 0..1 pixel units (the tensor is (x / 255 - mean) / std); mean 0 and std 1/255 feed
    raw 0..255 values (a model that normalises inside, like the Open Model Zoo IRs); `source` says where the values
    came from."""

    size: tuple[int, int] = (256, 128)
    color: str = "rgb"
    mean: tuple[float, float, float] = IMAGENET_MEAN_RGB
    std: tuple[float, float, float] = IMAGENET_STD_RGB
    source: str = "defaults (torchreid convention: RGB, ImageNet mean/std)"

    def to_tensor(self, crops: np.ndarray) -> np.ndarray:
        """uint8 RGB crops (N, H, W, 3) -> float32 (N, 3, H, W) in the model's channel order and normalisation."""
        x = crops.astype(np.float32)
        mean = np.asarray(self.mean, np.float32) * 255.0
        std = np.asarray(self.std, np.float32) * 255.0
        x -= mean
        x /= std
        if self.color == "bgr":
            x = x[..., ::-1]
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _floats(text: str) -> tuple[float, ...]:
    text = text.strip()
    if "[" in text:
        text = text[text.index("[") + 1: text.rindex("]")]
    return tuple(float(v) for v in text.replace(",", " ").split())


def openvino_ir_input_spec(xml_path: str | Path) -> dict[str, Any] | None:
    """What an IR's Model Optimizer `conversion_parameters` (rt_info) say about its input, or None without them.

    `mean_values` / `scale_values` there were folded into the IR (its preprocessing layers subtract and divide), so
    the IR takes raw 0..255 pixels; `reverse_input_channels` True: a channel flip was folded in, so the IR takes the
    opposite order of the source model (BGR for Open Model Zoo models, whose PyTorch sources take RGB; their docs
    say "The expected color order is BGR").
    """
    try:
        root = ET.parse(str(xml_path)).getroot()
    except (ET.ParseError, OSError):
        return None
    params = root.find("./rt_info/conversion_parameters")
    if params is None:
        return None
    values = {child.tag: child.get("value", "") for child in params}
    out: dict[str, Any] = {"framework": values.get("framework")}
    out["normalised_inside"] = bool(values.get("mean_values") or values.get("scale_values"))
    out["reverse_input_channels"] = values.get("reverse_input_channels", "False").lower() == "true"
    if values.get("mean_values"):
        out["mean_values"] = _floats(values["mean_values"])
    if values.get("scale_values"):
        out["scale_values"] = _floats(values["scale_values"])
    out["layout"] = values.get("layout")
    return out


def resolve_input_spec(path: Path, runtime: InferenceRuntime, config_size: tuple[int, int] | None = None,
                       color: str = "auto", mean=None, std=None) -> InputSpec:
    """The input spec of a foreign frame model: size from the model's static input shape (else `config_size`);
    channel order and normalisation from the config when given, else from the model's metadata (ONNX metadata
    `mcsa.color` / `mcsa.mean` / `mcsa.std`; an OpenVINO IR's conversion parameters), else the torchreid
    convention (RGB, ImageNet mean/std)."""
    shape = runtime.input_shape
    if len(shape) != 4:
        raise RuntimeLoadError(f"{path}: input {runtime.input_name!r} has rank {len(shape)} ({shape}); a frame re-id "
                               "model takes one image batch (N, 3, H, W)")
    if shape[1] not in (None, 3):
        raise RuntimeLoadError(f"{path}: input {runtime.input_name!r} has {shape[1]} channels at dim 1 ({shape}); "
                               "expected NCHW with 3 colour channels")
    h, w = shape[2], shape[3]
    if h is None or w is None:
        if not config_size:
            raise RuntimeLoadError(f"{path}: the input size is dynamic; set reid.input_size: [H, W]")
        h, w = int(config_size[0]), int(config_size[1])
    found: dict[str, Any] = {}
    source = "defaults (torchreid convention: RGB, ImageNet mean/std)"
    meta = getattr(runtime, "metadata", {}) or {}
    if "mcsa.color" in meta:
        found = {"color": meta["mcsa.color"], "mean": _floats(meta.get("mcsa.mean", "")) or IMAGENET_MEAN_RGB,
                 "std": _floats(meta.get("mcsa.std", "")) or IMAGENET_STD_RGB}
        source = "ONNX metadata"
    elif path.suffix.lower() == ".xml":
        ir = openvino_ir_input_spec(path)
        if ir is not None and ir["normalised_inside"]:
            found = {"color": "bgr" if ir["reverse_input_channels"] else "rgb",
                     "mean": (0.0, 0.0, 0.0), "std": (1 / 255.0,) * 3}
            source = ("IR conversion parameters (mean/scale folded in: raw 0..255 pixels; reverse_input_channels="
                      f"{ir['reverse_input_channels']})")
    spec = {"color": found.get("color", "rgb"), "mean": found.get("mean", IMAGENET_MEAN_RGB),
            "std": found.get("std", IMAGENET_STD_RGB)}
    if color != "auto":
        spec["color"], source = color, "config"
    if mean is not None:
        spec["mean"], source = tuple(float(v) for v in mean), "config"
    if std is not None:
        spec["std"], source = tuple(float(v) for v in std), "config"
    if spec["color"] not in ("rgb", "bgr"):
        raise RuntimeLoadError(f"{path}: channel order {spec['color']!r}; expected rgb or bgr")
    return InputSpec((int(h), int(w)), spec["color"], tuple(spec["mean"]), tuple(spec["std"]), source)


# ----------------------------------------------------------------------------------------------------------------------
# models on top of a runtime
# ----------------------------------------------------------------------------------------------------------------------


def parse_model_spec(spec: str) -> tuple[str, Path] | None:
    """`onnx:PATH` / `openvino:PATH.xml` -> (kind, path); None for a plain backbone name such as `osnet_x0_25`."""
    for kind in ("onnx", "openvino"):
        if spec.startswith(kind + ":"):
            return kind, Path(os.path.expanduser(os.path.expandvars(spec[len(kind) + 1:])))
    return None


class FrameReIDModel:
    """A foreign frame-level re-id model: uint8 RGB crops (N, H, W, 3) -> embeddings float32 (N, D).

    spec: `onnx:PATH` (ONNX Runtime, else OpenVINO) or `openvino:PATH.xml`; input size / order / normalisation from
    `resolve_input_spec`. The model must map one crop to one vector (output rank 2, or (N, D, 1, 1))."""

    def __init__(self, spec: str, device: str = "cpu", threads: int | None = None,
                 config_size: tuple[int, int] | None = None, color: str = "auto", mean=None, std=None) -> None:
        parsed = parse_model_spec(spec)
        if parsed is None:
            raise RuntimeLoadError(f"{spec!r}: expected onnx:PATH or openvino:PATH.xml")
        kind, path = parsed
        if kind == "openvino" and path.suffix.lower() not in (".xml", ".onnx"):
            raise RuntimeLoadError(f"{path}: openvino: takes an IR .xml (with its .bin) or an .onnx file")
        if kind == "onnx" and path.suffix.lower() != ".onnx":
            raise RuntimeLoadError(f"{path}: onnx: takes an .onnx file (use openvino:PATH.xml for an OpenVINO IR)")
        self.path = path
        self.runtime = open_runtime(path, "openvino" if kind == "openvino" else "auto", device, threads)
        self.input = resolve_input_spec(path, self.runtime, config_size, color, mean, std)
        self.input_size = self.input.size
        probe = self.embed(np.full((1, *self.input.size, 3), 128, np.uint8))
        if not np.isfinite(probe).all():
            other = "openvino:" if self.runtime.name == "onnxruntime" else "onnx:"
            raise RuntimeLoadError(f"{path}: {self.runtime.name} gives NaN/inf embeddings for this model (a graph the "
                                   f"runtime computes wrongly); try {other}{path}")
        self.embedding_dim = int(probe.shape[1])
        self.backend = f"{self.runtime.name} {self.runtime.device}"

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """uint8 RGB (N, H, W, 3) at `input_size` -> (N, D) float32."""
        out = self.runtime.run(self.input.to_tensor(crops))[0]
        if out.ndim == 4 and out.shape[2:] == (1, 1):
            out = out[:, :, 0, 0]
        if out.ndim != 2:
            raise RuntimeLoadError(f"{self.path}: output {self.runtime.output_names[0]!r} has shape {out.shape}; a "
                                   "frame re-id model gives one vector per crop (N, D)")
        return out


@dataclass
class ExportMetadata:
    """metadata.json of an export folder: what a runtime needs to feed the model and name its outputs.

    input_size (H, W) px; mean / std per R, G, B in 0..1 units, channel order RGB (input = (x/255 - mean)/std,
    shape (B, T, 3, H, W), float32); clip_len: T used for the export and the parity check (`dynamic_clip_len`: other
    T work too); embedding_dim D; action_names (A outputs, empty: no `action_probs` output); files per format."""

    input_size: tuple[int, int]
    clip_len: int
    dynamic_clip_len: bool
    embedding_dim: int
    action_names: list[str]
    backbone: str
    files: dict[str, str]
    embedding: str = "bn"
    normalize_embedding: bool = False
    mean: tuple[float, float, float] = IMAGENET_MEAN_RGB
    std: tuple[float, float, float] = IMAGENET_STD_RGB
    color: str = "rgb"
    input_name: str = "clips"
    output_names: list[str] = field(default_factory=lambda: ["embedding", "action_probs"])
    source: str = ""
    opset: int = 17
    format: str = EXPORT_FORMAT

    def write(self, folder: Path) -> Path:
        path = Path(folder) / METADATA_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, folder: str | Path) -> "ExportMetadata":
        path = Path(folder) / METADATA_FILE
        if not path.is_file():
            raise RuntimeLoadError(f"{folder}: no {METADATA_FILE}: not an export folder (write one with "
                                   "`run_pipeline.py export --checkpoint CKPT --format onnx --output DIR`)")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise RuntimeLoadError(f"{path}: unreadable ({_first_line(err)}); export the model again") from None
        if not str(data.get("format", "")).startswith("mcsa-reid-ar-export/"):
            raise RuntimeLoadError(f"{path}: not an mcsa Re-ID-AR export (format {data.get('format')!r})")
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in data.items() if k in known}
        data["input_size"] = tuple(data["input_size"])
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def is_export_dir(path: str | Path | None) -> bool:
    return bool(path) and Path(path).is_dir()


class ExportedReIDAR:
    """An export folder on a runtime: normalised clips float32 (B, T, 3, H, W) -> (embedding (B, D), probs (B, A)).

    backend `auto`: on CUDA the TensorRT engine when there is one and tensorrt is installed, else ONNX Runtime CUDA;
    on the CPU OpenVINO (model.xml, else model.onnx) when installed, else ONNX Runtime. `onnxruntime` / `openvino` /
    `tensorrt` force one."""

    def __init__(self, folder: str | Path, device: str = "cpu", backend: str = "auto",
                 threads: int | None = None) -> None:
        self.folder = Path(folder)
        self.meta = ExportMetadata.read(self.folder)
        files = {k: self.folder / v for k, v in self.meta.files.items() if (self.folder / v).is_file()}
        if not files:
            raise RuntimeLoadError(f"{self.folder}: none of the model files in {METADATA_FILE} "
                                   f"({', '.join(self.meta.files.values())}) is there; export again")
        cuda = str(device).startswith("cuda")
        installed = installed_runtimes()
        if backend == "auto":
            order = ["tensorrt", "onnxruntime"] if cuda else ["openvino", "onnxruntime"]
            choices = [(b, f) for b in order for f in self._files_for(b, files) if b in installed]
            if not choices:
                raise RuntimeLoadError(f"{self.folder}: no runtime for {device} can run {', '.join(files)} here "
                                       f"(installed: {', '.join(installed) or 'none'}); pip install onnxruntime or "
                                       "openvino")
            backend, path = choices[0]
        else:
            paths = self._files_for(backend, files)
            if not paths:
                raise RuntimeLoadError(f"{self.folder}: the export has no file for the {backend} runtime "
                                       f"(has {', '.join(files)}); export with --format {backend}")
            path = paths[0]
        self.runtime = open_runtime(path, backend, device, threads)
        self.action_names = list(self.meta.action_names)
        self.input_size = tuple(self.meta.input_size)
        self.embedding_dim = int(self.meta.embedding_dim)
        self.backend = f"{self.runtime.name} {self.runtime.device} ({path.name})"
        emb, probs = self.encode(np.zeros((1, self.meta.clip_len, 3, *self.input_size), np.float32))
        if emb.shape[1] != self.embedding_dim or probs.shape[1] != len(self.action_names):
            raise RuntimeLoadError(f"{path}: gives embeddings of {emb.shape[1]} and {probs.shape[1]} action scores, "
                                   f"but {METADATA_FILE} says {self.embedding_dim} and {len(self.action_names)}; "
                                   "export again")

    @staticmethod
    def _files_for(backend: str, files: dict[str, Path]) -> list[Path]:
        if backend == "tensorrt":
            return [files["tensorrt"]] if "tensorrt" in files else []
        if backend == "openvino":
            return [files[k] for k in ("openvino", "onnx") if k in files]
        return [files["onnx"]] if "onnx" in files else []

    def encode_uint8(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB clips (B, T, H, W, 3) -> normalised with the export's mean/std -> `encode`."""
        x = np.ascontiguousarray(clips).transpose(0, 1, 4, 2, 3).astype(np.float32)
        x -= (np.asarray(self.meta.mean, np.float32) * 255.0).reshape(1, 1, 3, 1, 1)
        x /= (np.asarray(self.meta.std, np.float32) * 255.0).reshape(1, 1, 3, 1, 1)
        return self.encode(x)

    def encode(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """normalised float32 clips (B, T, 3, H, W) -> (embedding (B, D), action_probs (B, A))."""
        outs = self.runtime.run(clips)
        emb = outs[0]
        probs = outs[1] if self.action_names else np.zeros((len(clips), 0), np.float32)
        return emb, probs
