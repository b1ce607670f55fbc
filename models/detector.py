"""Person detector: a thin wrapper over Ultralytics YOLO that returns `Detections`.

Loads any format Ultralytics loads from a LOCAL path (`.pt`, OpenVINO folder, `.onnx`, TensorRT `.engine`); nothing
is downloaded. The current frames of all cameras go through one batched call when the model accepts a batch
(PyTorch weights, dynamic-batch exports); static-batch exports (e.g. the shipped OpenVINO INT8 model, batch 1) fall
back to one call per frame, logged once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from core.device import resolve_device
from core.types import Detections

log = logging.getLogger("mcsa.detector")

_EXPORT_SUFFIXES = {".pt": "pytorch", ".onnx": "onnx", ".engine": "tensorrt", ".torchscript": "torchscript"}


class DetectorError(RuntimeError):
    """The detector cannot be built; the message names the weights and the fix."""


def weights_format(path: Path) -> str:
    """Name the weight format from a path: pytorch, onnx, tensorrt, torchscript or openvino (folder)."""
    if path.is_dir():
        if any(path.glob("*.xml")):
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
        try:
            from ultralytics import YOLO

            self._model = YOLO(str(path), task="detect")
        except Exception as err:  # noqa: BLE001 - Ultralytics raises many types for bad files
            raise DetectorError(
                f"cannot load detector weights {path} as {self.format}: {str(err).splitlines()[0][:160]} "
                "(is it an Ultralytics detection model of that format?)"
            ) from None
        self.imgsz = int(imgsz)
        self._batched: bool | None = None  # decided at the first call, once the backend is built
        self._warned_fallback = False

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
        return cls(cfg.weights, cfg.conf, cfg.iou, cfg.imgsz, cfg.device, cfg.classes, cfg.half)
