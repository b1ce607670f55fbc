"""Person detector: a thin wrapper over Ultralytics YOLO that returns `Detections`.

Loads any format Ultralytics loads from a LOCAL path (`.pt`, OpenVINO folder, `.onnx`, TensorRT `.engine`); nothing
is downloaded. The current frames of all cameras go through one batched call when the model accepts a batch
(PyTorch weights, dynamic-batch exports); static-batch exports (e.g. the shipped OpenVINO INT8 model, batch 1) fall
back to one call per frame, logged once.

Safety: Ultralytics is made to install nothing (`YOLO_AUTOINSTALL=false`), to probe no network (`YOLO_OFFLINE`), and to
unpickle `.pt` weights with `torch.load(weights_only=True)` against its allow-list of model classes
(`ULTRALYTICS_SAFE_LOAD`), so a crafted `.pt` cannot run code. The backend package a format needs (onnxruntime,
openvino, tensorrt) is checked up front, and the backend is built (and run once) in the constructor, so a bad file
fails there with one line naming it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

import numpy as np

from core.device import resolve_device
from core.types import Detections

log = logging.getLogger("mcsa.detector")

_EXPORT_SUFFIXES = {".pt": "pytorch", ".onnx": "onnx", ".engine": "tensorrt", ".torchscript": "torchscript"}


class DetectorError(RuntimeError):
    """The detector cannot be built; the message names the weights and the fix."""


# format -> (Python module it needs, pip package to install)
_BACKEND_MODULES = {"onnx": ("onnxruntime", "onnxruntime"), "openvino": ("openvino", "openvino"),
                    "tensorrt": ("tensorrt", "tensorrt")}


def restrict_ultralytics() -> None:
    """Forbid Ultralytics' auto-install and network probes and turn on its weights-only `.pt` loading: in the
    environment (read when it is first imported) and in its modules when they are already imported."""
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"
    os.environ.setdefault("YOLO_OFFLINE", "1")
    flags = (("ultralytics.utils", "AUTOINSTALL", False), ("ultralytics.utils.checks", "AUTOINSTALL", False),
             ("ultralytics.utils", "SAFE_LOAD", True), ("ultralytics.nn.tasks", "SAFE_LOAD", True))
    for name, attr, value in flags:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, attr):
            setattr(module, attr, value)


def check_openvino_ir(path: Path) -> None:
    """Raise a one-line DetectorError unless the folder's .xml is an OpenVINO IR (an XML `<net>`) with its .bin.

    Checked here because OpenVINO, given anything else, tries every frontend and prints their C++ errors to stderr."""
    import xml.etree.ElementTree as ET

    for xml_path in sorted(path.glob("*.xml")):
        try:
            root_tag = next(ET.iterparse(xml_path, events=("start",)))[1].tag
            found = f"root element <{root_tag}>"
        except (ET.ParseError, StopIteration, OSError) as err:
            root_tag, found = "", f"unreadable XML: {err}"
        if root_tag != "net":
            raise DetectorError(
                f"detector weights {xml_path} is not an OpenVINO IR model ({found}); point detector.weights at a "
                "folder written by `yolo export format=openvino`"
            )
        if not xml_path.with_suffix(".bin").is_file():
            raise DetectorError(
                f"detector weights {xml_path}: its weights file {xml_path.with_suffix('.bin').name} is missing; "
                "copy the whole export folder"
            )


def check_backend_installed(path: Path, fmt: str) -> None:
    """Raise a one-line DetectorError when the package that runs `fmt` weights is not installed."""
    module, package = _BACKEND_MODULES.get(fmt, (None, None))
    if not module:
        return
    try:
        importlib.import_module(module)  # Ultralytics imports it next anyway
    except ImportError:
        raise DetectorError(
            f"detector weights {path} are {fmt}, which needs the '{package}' package: pip install {package} "
            "(or point detector.weights at another export; nothing is installed at run time)"
        ) from None


def _first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's text, without Ultralytics' 'ERROR ❌️' prefix."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Exception from src/")] or lines  # OpenVINO's C++ call stack
    text = lines[0] if lines else type(err).__name__
    for prefix in ("ERROR ❌️", "ERROR ❌", "ERROR"):
        if text.startswith(prefix):
            text = text[len(prefix):].strip()
    return text[:200]


def weights_format(path: Path) -> str:
    """Name the weight format from a path: pytorch, onnx, tensorrt, torchscript or openvino (folder)."""
    if path.is_dir():
        if any(path.glob("*.xml")):
            if not path.name.endswith("_openvino_model"):
                raise DetectorError(
                    f"detector weights folder {path}: Ultralytics reads an OpenVINO export only from a folder named "
                    f"'<name>_openvino_model' (as `yolo export format=openvino` names it); rename it, e.g. to "
                    f"{path.name}_openvino_model"
                )
            return "openvino"
        raise DetectorError(
            f"detector weights folder {path} holds no OpenVINO .xml model "
            "(point detector.weights at a .pt/.onnx/.engine file or an OpenVINO export folder)"
        )
    fmt = _EXPORT_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DetectorError(
            f"detector weights {path}: unsupported file type '{path.suffix}' (expected .pt, .onnx, .engine or an "
            "OpenVINO folder)"
        )
    return fmt


class PersonDetector:
    """YOLO detector keeping the configured classes (default: COCO person).

    weights: local path; conf: minimum score; iou: NMS IoU; imgsz: inference size (px); device: auto/cpu/cuda[:i].
    """

    def __init__(
        self,
        weights: str | Path,
        conf: float = 0.1,
        iou: float = 0.7,
        imgsz: int = 640,
        device: str = "auto",
        classes: list[int] | tuple[int, ...] = (0,),
        half: bool = False,
        direct: str = "auto",
    ) -> None:
        path = Path(weights).expanduser()
        if not path.exists():
            raise DetectorError(
                f"detector weights not found: {path} (set detector.weights to a local .pt, .onnx, .engine or "
                "OpenVINO folder; weights are never downloaded at run time)"
            )
        self.weights = path
        self.format = weights_format(path)
        self.conf, self.iou, self.classes = float(conf), float(iou), list(classes)
        self.device = str(resolve_device(device))
        if self.format == "openvino" and self.device.startswith("cuda"):
            self.device = "cpu"  # OpenVINO runs on Intel devices; Ultralytics maps "cpu" to the OpenVINO CPU plugin
        self.half = bool(half) and self.device.startswith("cuda")
        self.imgsz = int(imgsz)
        self._batched: bool | None = None  # decided at the first call, once the backend is built
        self._direct = None  # models.detector_direct.DirectDetector, set once the model is loaded
        self._warned_fallback = False
        check_backend_installed(path, self.format)
        if self.format == "openvino":
            check_openvino_ir(path)
        restrict_ultralytics()
        try:
            from ultralytics import YOLO

            restrict_ultralytics()  # the modules exist now: set their flags too
            self._model = YOLO(str(path), task="detect")
            if self.format != "pytorch":
                self._check_export_metadata()
            # exported formats build their backend at the first predict: do it now, so a bad file fails here
            self._predict([np.zeros((64, 64, 3), np.uint8)])
            self._direct = self._direct_path(direct)
        except DetectorError:
            raise
        except Exception as err:  # noqa: BLE001 - Ultralytics and the runtimes raise many types for bad files
            if "references types outside" in str(err):  # Ultralytics' weights-only load refused a global
                raise DetectorError(
                    f"detector weights {path}: refused to load: the file holds pickled Python objects other than "
                    "Ultralytics/torch model classes (they could run code); nothing was run. Use weights from a "
                    "source you trust"
                ) from None
            raise DetectorError(
                f"cannot load detector weights {path} as {self.format}: {_first_line(err)} "
                "(expected an Ultralytics YOLO detection model of that format, e.g. from `yolo export`)"
            ) from None

    def _direct_path(self, direct: str):
        """A `DirectDetector` on the loaded PyTorch model (pre/post-processing on its device) when `direct` is "on",
        or "auto" on CUDA; None for other formats, "off", or a model it cannot drive (then Ultralytics' predictor)."""
        if direct == "off" or (direct == "auto" and not self.device.startswith("cuda")):
            return None
        if self.format != "pytorch":
            if direct == "on":
                log.warning("detector.direct: on needs .pt weights; %s is %s: Ultralytics' predictor runs it",
                            self.weights.name, self.format)
            return None
        import torch

        from models.detector_direct import DirectDetector

        backend = getattr(getattr(getattr(self._model, "predictor", None), "model", None), "backend", None)
        net = getattr(backend, "model", None)
        if not hasattr(net, "stride") or getattr(backend, "end2end", False):
            log.info("detector %s: Ultralytics' predictor (no direct path for this model)", self.weights.name)
            return None
        det = DirectDetector(net, next(net.parameters()).device, self.imgsz, self.conf, self.iou, self.classes,
                             half=next(net.parameters()).dtype == torch.float16)
        log.info("detector %s: frames letterboxed, detected and NMS'd on %s in one batch per frame size",
                 self.weights.name, det.device)
        return det

    def _check_export_metadata(self) -> None:
        """An export must carry Ultralytics' metadata saying it is a detection model (a re-id or classification
        network in the same format would otherwise load and return nonsense)."""
        from ultralytics.nn.backends.base import BaseBackend

        meta = BaseBackend.read_metadata(self.weights) or {}
        task = meta.get("task")
        if task != "detect":
            what = f"an Ultralytics '{task}' model" if task else "not an Ultralytics export (no Ultralytics metadata)"
            raise DetectorError(
                f"detector weights {self.weights}: {what}; export a YOLO detection model, e.g. "
                f"`yolo export model=yolo11n.pt format={self.format}`"
            )

    def _backend_accepts_batch(self) -> bool:
        backend = getattr(getattr(self._model, "predictor", None), "model", None)
        if backend is None:
            return self.format == "pytorch"
        if self.format in ("pytorch", "torchscript"):
            return True
        return bool(getattr(backend, "dynamic", False)) or int(getattr(backend, "batch", 1) or 1) > 1

    def _predict(self, images: list[np.ndarray]):
        kwargs = dict(conf=self.conf, iou=self.iou, imgsz=self.imgsz, device=self.device, classes=self.classes)
        if self.half:
            kwargs["half"] = True
        return self._model.predict(images, verbose=False, **kwargs)

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """Detect in BGR uint8 images (H, W, 3), one `Detections` per image, in order."""
        if not images:
            return []
        if self._direct is not None:
            return self._direct.detect(images)
        if self._batched is None:
            results = self._predict(images[:1])
            self._batched = self._backend_accepts_batch()
            if not self._batched:
                log.info(
                    "detector %s (%s) has a static batch of 1: running one call per frame", self.weights.name,
                    self.format,
                )
            rest = images[1:]
            results = list(results) + (self._run(rest) if rest else [])
        else:
            results = self._run(images)
        return [self._to_detections(r) for r in results]

    def _run(self, images: list[np.ndarray]):
        if self._batched:
            return list(self._predict(images))
        out = []
        for image in images:
            out.extend(self._predict([image]))
        return out

    @staticmethod
    def _to_detections(result) -> Detections:
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return Detections.empty()
        return Detections(
            boxes.xyxy.cpu().numpy().astype(np.float32),
            boxes.conf.cpu().numpy().astype(np.float32),
            boxes.cls.cpu().numpy().astype(np.int32),
        )

    @classmethod
    def from_config(cls, cfg) -> "PersonDetector":
        """Build from a `pipeline.config.DetectorConfig`."""
        return cls(cfg.weights, cfg.conf, cfg.iou, cfg.imgsz, cfg.device, cfg.classes, cfg.half, cfg.direct)
