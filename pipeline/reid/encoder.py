"""`ClipEncoder`: the Re-ID-AR model behind a uint8-clip interface, on CUDA (AMP, channels-last) or CPU (fp32).

Weights: a Re-ID-AR checkpoint written by `run_pipeline.py train`; without one, the model is built on the OSNet
backbone weights (e.g. ../shared/models/osnet_x0_25_msmt17.pth) with mean temporal pooling and NO action branch,
and a warning says so: it never runs silently on random weights.

Two more sources run on an inference runtime instead of PyTorch (models/reid/runtimes.py):
  * `checkpoint` = a folder written by `run_pipeline.py export` (ONNX Runtime / OpenVINO on the CPU, TensorRT or ONNX
    Runtime CUDA on a GPU): the whole Re-ID-AR model, actions included; no start-up compilation;
  * `backbone` = `onnx:PATH` / `openvino:PATH.xml`: a foreign frame-level re-id model (one crop -> one vector); the
    clip embedding is the mean of its frames' embeddings, there are no actions.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from core.device import resolve_device
from models.reid.model import InferenceHead

log = logging.getLogger("mcsa.reid")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN_255 = (np.array(IMAGENET_MEAN, np.float32) * 255.0).reshape(1, 1, 3, 1, 1)
_STD_255 = (np.array(IMAGENET_STD, np.float32) * 255.0).reshape(1, 1, 3, 1, 1)


def openvino_cache_dir() -> Path:
    """Where converted Re-ID models are kept: $MCSA_CACHE/openvino, else ~/.cache/mcsa/openvino."""
    root = os.environ.get("MCSA_CACHE") or Path.home() / ".cache" / "mcsa"
    return Path(root) / "openvino"


def _model_key(model: torch.nn.Module, input_size: tuple[int, int], ov_version: str) -> str:
    """A digest of the weights, the architecture and the input size: equal models share one converted file."""
    digest = hashlib.sha256(f"{ov_version}|{input_size}|{getattr(model, 'config', dict)()}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def compile_openvino(model: torch.nn.Module, input_size: tuple[int, int], threads: int | None = None,
                     cache: bool = True):
    """The eval-mode Re-ID-AR model as an OpenVINO CPU model with dynamic batch and clip length (fp32 precision).

    The conversion (a trace of the PyTorch model, or its ONNX export for a backbone marked `openvino_via_onnx`;
    seconds to tens of seconds) is cached as OpenVINO IR under
    `openvino_cache_dir()`, keyed by a digest of the weights; later runs load it in about a second.
    """
    import openvino as ov

    core = ov.Core()
    path = None
    if cache:
        path = openvino_cache_dir() / f"reid_{_model_key(model, input_size, ov.__version__)}.xml"
    if path is not None and path.is_file() and path.with_suffix(".bin").is_file():
        ov_model = core.read_model(str(path))
    else:
        if getattr(getattr(model, "backbone", None), "openvino_via_onnx", False):
            ov_model = _convert_via_onnx(model, ov)
        else:
            example = torch.zeros(2, 2, 3, *input_size)
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer notes on shape-dependent Python branches (fixed H, W)
                ov_model = ov.convert_model(InferenceHead(model.eval().cpu()), example_input=example,
                                            input=[(-1, -1, 3, *input_size)])
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.stem}.{os.getpid()}.xml")
                ov.save_model(ov_model, str(tmp), compress_to_fp16=False)
                tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
                tmp.replace(path)
            except OSError as err:  # a read-only home is no reason to fail
                log.debug("Re-ID: cannot cache the OpenVINO model in %s: %s", path.parent, err)
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return core.compile_model(ov_model, "CPU", config)


def _convert_via_onnx(model: torch.nn.Module, ov):
    """The model through its ONNX export (dynamic B and T), for backbones whose TorchScript trace would fix the
    batch size (`onnx_frame`: onnx2torch's Shape/Reshape nodes; its ONNX export writes the original ops)."""
    import tempfile

    from models.reid.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, path, clip_len=2)
        ov_model = ov.convert_model(str(path))
    return ov_model


def padded_batch(b: int) -> int:
    """The batch size the CUDA model is called with for b clips: the next of 1, 2, 4, 8, 12, 16, 24, 32, 48, 64, ...
    (powers of two and 1.5 times them) up to 256, then the next multiple of 256. A live batcher closes batches of every
    size from 1 to max_batch; padded, the model sees a handful of shapes, each tuned once by cuDNN (and warmed by
    `ClipEncoder.warm_up`) instead of a slow first call per size, at most a third of each batch being padding.
    Eval-mode BatchNorm and the rest of the model treat each clip on its own, so the zero padding changes nothing."""
    b = max(1, int(b))
    if b > 256:
        return -(-b // 256) * 256
    p = 1 << (b - 1).bit_length()  # next power of two
    return p * 3 // 4 if p >= 16 and b <= p * 3 // 4 else p


class ReIDLoadError(RuntimeError):
    """The Re-ID weights cannot be used; the message names the file and the fix."""


class ClipEncoder:
    """Encodes uint8 RGB clips (B, T, H, W, 3) into embeddings (B, D) and action probabilities (B, A).

    checkpoint: Re-ID-AR checkpoint path, or None to build on `backbone_weights`; input_size: (H, W) px, used only
    without a checkpoint (a checkpoint brings its own); amp: fp16/bf16 autocast on CUDA; cpu_threads: threads on CPU
    (None = the runtime's default); cpu_backend: on CPU, `openvino` (the same weights compiled by OpenVINO, fp32;
    several times faster than PyTorch eager for OSNet on 2 cores) or `torch`; `auto` = openvino when installed
    (for an export folder: `onnxruntime` or `openvino` picks its runtime). checkpoint may be an export folder,
    backbone `onnx:PATH` / `openvino:PATH.xml` (see the module docstring); input_color / input_mean / input_std
    override a foreign model's channel order (rgb/bgr) and per-R,G,B normalisation (0..1 units); embedding_dim: the
    size the embeddings must have (a gallery's), else one clear error.
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        backbone: str = "osnet_x0_25",
        backbone_weights: str | None = None,
        input_size: tuple[int, int] = (256, 128),
        device: str = "auto",
        amp: bool = True,
        cpu_threads: int | None = None,
        cpu_backend: str = "auto",
        input_color: str = "auto",
        input_mean: tuple[float, float, float] | None = None,
        input_std: tuple[float, float, float] | None = None,
        embedding_dim: int | None = None,
    ) -> None:
        from models.reid import CheckpointError, ReIDAR, load_checkpoint
        from models.reid.runtimes import parse_model_spec

        self.device = resolve_device(device)
        self.cpu_backend, self.cpu_threads = cpu_backend, cpu_threads
        self.resize = "bilinear"  # how crops are resized to the input size: the training's `data.resize`
        if self.device.type == "cpu" and cpu_threads:
            torch.set_num_threads(int(cpu_threads))
        self._runtime = self._frame_model = None
        if checkpoint and Path(checkpoint).is_dir():
            self._setup_exported(checkpoint, embedding_dim)
            return
        if not checkpoint and parse_model_spec(backbone):
            self._setup_frame_model(backbone, input_size, input_color, input_mean, input_std, embedding_dim)
            return
        try:
            if checkpoint:
                if not Path(checkpoint).is_file():
                    raise ReIDLoadError(
                        f"Re-ID-AR checkpoint not found: {checkpoint} (set reid.checkpoint to a file written by "
                        "`run_pipeline.py train`, or leave it empty to use the OSNet backbone weights)"
                    )
                model, payload = load_checkpoint(checkpoint, map_location="cpu")
                data_cfg = ((payload or {}).get("train_config") or {}).get("data") or {}
                self.resize = str(data_cfg.get("resize", "bilinear"))  # crops resized as the model was trained
                self.source = f"Re-ID-AR checkpoint {Path(checkpoint).name}"
                self.actions_trained = bool(model.action_names)
            else:
                if not backbone_weights or not Path(backbone_weights).is_file():
                    raise ReIDLoadError(
                        f"Re-ID backbone weights not found: {backbone_weights} (set reid.backbone_weights to a local "
                        "torchreid-format file such as osnet_x0_25_msmt17.pth, give reid.checkpoint, or set "
                        "reid.enabled: false)"
                    )
                model = ReIDAR(backbone, num_classes=1, action_names=[], input_size=tuple(input_size),
                               pretrained=backbone_weights, temporal_attention=False)
                self.source = f"{backbone} backbone weights {Path(backbone_weights).name} (mean temporal pooling)"
                self.actions_trained = False
                log.warning(
                    "Re-ID: no Re-ID-AR checkpoint given: embeddings come from %s; the action branch is untrained and "
                    "disabled (set reid.checkpoint to a trained model for action probabilities)", self.source,
                )
        except CheckpointError as err:
            raise ReIDLoadError(str(err)) from None
        self._setup(model, amp)
        self._check_dim(embedding_dim)

    def _check_dim(self, expected: int | None) -> None:
        if expected and int(expected) != self.embedding_dim:
            raise ReIDLoadError(
                f"Re-ID: {self.source} gives {self.embedding_dim}-d embeddings, but reid.embedding_dim is {expected} "
                "(the size of the gallery / stored embeddings it must match); use a model of that size or change "
                "reid.embedding_dim"
            )

    def _setup_exported(self, folder: str, embedding_dim: int | None) -> None:
        """An export folder on ONNX Runtime / OpenVINO (CPU) or TensorRT / ONNX Runtime CUDA (GPU)."""
        from models.reid.runtimes import ExportedReIDAR, RuntimeLoadError

        backend = {"auto": "auto", "openvino": "openvino", "torch": "auto", "onnxruntime": "onnxruntime"}.get(
            self.cpu_backend, "auto") if self.device.type == "cpu" else "auto"
        try:
            self._runtime = ExportedReIDAR(folder, str(self.device), backend, self.cpu_threads)
        except RuntimeLoadError as err:
            raise ReIDLoadError(str(err)) from None
        self.model = None
        self.action_names = list(self._runtime.action_names)
        self.actions_trained = bool(self.action_names)
        self.input_size = tuple(self._runtime.input_size)
        self.embedding_dim = self._runtime.embedding_dim
        self.amp = False
        self.source = f"Re-ID-AR export {Path(folder).name} ({self._runtime.meta.backbone})"
        self.backend = self._runtime.backend
        self._check_dim(embedding_dim)

    def _setup_frame_model(self, spec: str, input_size, color: str, mean, std, embedding_dim: int | None) -> None:
        """A foreign frame-level re-id model (`onnx:PATH`, `openvino:PATH.xml`); clip embedding = frame mean."""
        from models.reid.runtimes import FrameReIDModel, RuntimeLoadError

        try:
            self._frame_model = FrameReIDModel(spec, str(self.device), self.cpu_threads, tuple(input_size), color,
                                               mean, std)
        except RuntimeLoadError as err:
            raise ReIDLoadError(str(err)) from None
        self.model = None
        self.action_names, self.actions_trained = [], False
        self.input_size = tuple(self._frame_model.input_size)
        self.embedding_dim = self._frame_model.embedding_dim
        self.amp = False
        spec_in = self._frame_model.input
        self.source = (f"frame re-id model {self._frame_model.path.name} (input {spec_in.size[0]}x{spec_in.size[1]} "
                       f"{spec_in.color.upper()}, normalisation from {spec_in.source}; clip = mean of its frames)")
        self.backend = self._frame_model.backend
        self._check_dim(embedding_dim)
        log.warning("Re-ID: embeddings from %s; no action branch", self.source)

    @classmethod
    def from_model(cls, model, source: str = "in-memory model", device: str = "auto", amp: bool = True,
                   cpu_backend: str = "torch", cpu_threads: int | None = None) -> "ClipEncoder":
        """Wrap an already built `ReIDAR` (e.g. one being trained, or built in a test)."""
        self = cls.__new__(cls)
        self._runtime = self._frame_model = None
        self.device = resolve_device(device)
        self.cpu_backend, self.cpu_threads = cpu_backend, cpu_threads
        self.resize = "bilinear"
        self.source = source
        self.actions_trained = bool(model.action_names)
        self._setup(model, amp)
        return self

    def _setup(self, model, amp: bool) -> None:
        self.model = model.eval().to(self.device)
        self.action_names: list[str] = list(model.action_names)
        self.input_size = tuple(int(v) for v in model.input_size)  # (H, W)
        self.amp = bool(amp) and self.device.type == "cuda"
        self.pad_batches = True  # CUDA: batches padded to padded_batch() sizes (benchmarks turn it off to compare)
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # batches are padded to a few sizes (padded_batch): tuned once each
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 1, 3, 1, 1) * 255.0
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 1, 3, 1, 1) * 255.0
        with torch.inference_mode():
            self.embedding_dim = int(self.model(torch.zeros(1, 1, 3, *self.input_size, device=self.device))[0].shape[1])
        self._ov = None
        self._ov_local = threading.local()
        self.backend = "torch cuda" + (" amp" if self.amp else "") if self.device.type == "cuda" else "torch cpu fp32"
        if self.device.type == "cpu" and self.cpu_backend in ("auto", "openvino"):
            try:
                self._ov = compile_openvino(self.model, self.input_size, self.cpu_threads)
                self.backend = "openvino cpu fp32"
            except Exception as err:  # noqa: BLE001 - e.g. openvino missing: PyTorch still works
                if self.cpu_backend == "openvino":
                    raise ReIDLoadError(f"cannot compile the Re-ID model with OpenVINO ({str(err).splitlines()[0]}); "
                                        "install openvino or set reid.cpu_backend: torch") from None
                log.warning("Re-ID: OpenVINO unavailable (%s); running PyTorch on the CPU", str(err).splitlines()[0])

    @classmethod
    def from_config(cls, cfg) -> "ClipEncoder":
        """Build from a `pipeline.config.ReIDStageConfig`."""
        return cls(cfg.checkpoint, cfg.backbone, cfg.backbone_weights, tuple(cfg.input_size), cfg.device, cfg.amp,
                   cfg.cpu_threads, cfg.cpu_backend, cfg.input_color, cfg.input_mean, cfg.input_std,
                   cfg.embedding_dim)

    def encode(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """clips uint8 (B, T, H, W, 3) RGB -> (embeddings float32 (B, D), action_probs float32 (B, A))."""
        if self._frame_model is not None:
            b, t = clips.shape[:2]
            frames = self._frame_model.embed(np.ascontiguousarray(clips).reshape(b * t, *clips.shape[2:]))
            return frames.reshape(b, t, -1).mean(axis=1), np.zeros((b, 0), np.float32)
        if self._runtime is not None:
            return self._runtime.encode_uint8(clips)
        if self._ov is not None:
            x = np.ascontiguousarray(clips).transpose(0, 1, 4, 2, 3).astype(np.float32)
            x -= _MEAN_255
            x /= _STD_255  # (B, T, 3, H, W)
            request = getattr(self._ov_local, "request", None)
            if request is None:  # one infer request per thread: the batcher and the DetectionEmbedder may overlap
                request = self._ov_local.request = self._ov.create_infer_request()
            out = request.infer(x)
            emb = np.array(out[0], np.float32)
            probs = (np.array(out[1], np.float32) if len(self.action_names)
                     else np.zeros((len(clips), 0), np.float32))
            return emb, probs
        host = torch.from_numpy(np.ascontiguousarray(clips))
        b = host.shape[0]
        if self.device.type == "cuda":
            host = host.pin_memory()
        with torch.inference_mode():
            x = host.to(self.device, non_blocking=True).permute(0, 1, 4, 2, 3).float()
            x = (x - self._mean) / self._std  # (B, T, 3, H, W)
            pad = padded_batch(b) - b if self.device.type == "cuda" and self.pad_batches else 0
            if pad:
                x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
            if self.amp:
                with torch.autocast("cuda", dtype=self.amp_dtype):
                    out = self.model(x)
            else:
                out = self.model(x)
            emb = out.embedding[:b].float().cpu().numpy()
            probs = out.action_probs[:b].float().cpu().numpy()
        return emb, probs

    def warm_up(self, max_batch: int, clip_len: int) -> int:
        """On CUDA (PyTorch), run every padded batch size up to max_batch once, so cuDNN's tuning and the kernels'
        first launches happen before the first frame instead of inside the first live batches; returns the number
        of sizes run (0 elsewhere: the CPU runtimes have no per-size tuning)."""
        if self.model is None or self.device.type != "cuda" or not self.pad_batches:
            return 0
        sizes = sorted({padded_batch(n) for n in range(1, int(max_batch) + 1)})
        for n in sizes:
            self.encode(np.zeros((n, int(clip_len), *self.input_size, 3), np.uint8))
        return len(sizes)
