"""`DirectDetector`: a YOLO PyTorch model called directly on a batch of frames, pre- and post-processing on its device.

Ultralytics' predictor letterboxes every frame with OpenCV on the CPU, runs the model, then loops over the images in
Python for NMS and box scaling: with 16 cameras on a GPU that CPU work is most of the detector's time (bench/gpu.py,
H200: 16 frames in 48 ms where the model takes 9). Here the frames of one size travel to the device as one uint8
tensor; the letterbox (Ultralytics' own geometry: scale to fit `imgsz`, pad to a multiple of the stride, grey 114),
the model, the person filter and one batched NMS for all frames run there, and one copy brings every box back.
Boxes agree with Ultralytics' to within resampling differences (tests/test_detector_direct.py).

Frames of different sizes go in one call per size (each letterboxed to its own rectangle, as Ultralytics does for a
batch of one size).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.types import Detections

PAD_VALUE = 114.0  # Ultralytics' letterbox grey
MAX_DET = 300  # boxes kept per frame (Ultralytics' default)
MAX_NMS = 30000  # candidates per frame entering NMS (Ultralytics' default)


def letterbox_geometry(h: int, w: int, imgsz: int,
                       stride: int) -> tuple[float, tuple[int, int], tuple[int, int, int, int]]:
    """Ultralytics' letterbox for a (h, w) frame at `imgsz` with minimal stride padding ("auto"):
    (scale, (new_h, new_w), (top, bottom, left, right) padding in px)."""
    r = min(imgsz / h, imgsz / w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = (imgsz - new_w) % stride / 2, (imgsz - new_h) % stride / 2
    return r, (new_h, new_w), (int(round(dh - 0.1)), int(round(dh + 0.1)), int(round(dw - 0.1)), int(round(dw + 0.1)))


class DirectDetector:
    """model: an Ultralytics DetectionModel (fused, eval, on `device`); classes: class ids kept; half: fp16 inputs
    (the model must be half too). `detect(images)` -> one `Detections` per BGR uint8 (H, W, 3) image, in order."""

    def __init__(self, model: torch.nn.Module, device: torch.device, imgsz: int, conf: float, iou: float,
                 classes: list[int], half: bool) -> None:
        self.model, self.device = model, torch.device(device)
        self.imgsz, self.conf, self.iou = int(imgsz), float(conf), float(iou)
        self.classes = torch.tensor(sorted(set(int(c) for c in classes)), device=self.device)
        self.dtype = torch.float16 if half else torch.float32
        self.stride = int(max(getattr(model, "stride", torch.tensor([32])).max().item(), 32))

    @torch.inference_mode()
    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        out: list[Detections | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(img.shape[:2], []).append(i)
        for (h, w), idx in groups.items():
            for i, det in zip(idx, self._detect_same_size([images[i] for i in idx], h, w)):
                out[i] = det
        return out  # type: ignore[return-value]

    def _detect_same_size(self, images: list[np.ndarray], h: int, w: int) -> list[Detections]:
        r, (nh, nw), (top, bottom, left, right) = letterbox_geometry(h, w, self.imgsz, self.stride)
        host = torch.from_numpy(np.stack(images))  # (B, H, W, 3) uint8 BGR
        if self.device.type == "cuda":
            host = host.pin_memory()
        x = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2).flip(1).float()  # (B, 3, H, W) RGB
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        x = F.pad(x, (left, right, top, bottom), value=PAD_VALUE)
        x = (x / 255.0).to(self.dtype).contiguous()
        pred = self.model(x)
        pred = pred[0] if isinstance(pred, (list, tuple)) else pred  # (B, 4 + nc, N)
        boxes, keep_img, scores, cls = self._nms(pred.float())
        boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - left) / r).clamp_(0, w)
        boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - top) / r).clamp_(0, h)
        rows = torch.cat([boxes, scores[:, None], cls[:, None].float(), keep_img[:, None].float()], 1).cpu().numpy()
        result = []
        for b in range(len(images)):
            mine = rows[rows[:, 6] == b]
            result.append(Detections(mine[:, :4].astype(np.float32), mine[:, 4].astype(np.float32),
                                     mine[:, 5].astype(np.int32)) if len(mine) else Detections.empty())
        return result

    def _nms(self, pred: torch.Tensor):
        """pred (B, 4 + nc, N) -> kept boxes xyxy (K, 4) in letterbox px, their frame index (K,), score (K,) and
        class (K,); per frame, as Ultralytics: the best class of each box above `conf`, only `classes`, the `MAX_NMS`
        best, class-aware NMS at `iou`, at most `MAX_DET`."""
        import torchvision

        frames = pred.shape[0]
        p = pred.transpose(1, 2)  # (B, N, 4 + nc)
        score, cls = p[..., 4:].max(2)
        img, anchor = ((score > self.conf) & torch.isin(cls, self.classes)).nonzero(as_tuple=True)
        score, cls, xywh = score[img, anchor], cls[img, anchor], p[img, anchor, :4]
        boxes = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
        order = torch.argsort(score, descending=True)
        order = order[rank_within(img[order], frames) < MAX_NMS]
        img, boxes, score, cls = img[order], boxes[order], score[order], cls[order]
        groups = img * (int(cls.max().item()) + 1) + cls if len(cls) else img
        keep = torchvision.ops.batched_nms(boxes, score, groups, self.iou)  # by decreasing score
        keep = keep[rank_within(img[keep], frames) < MAX_DET]
        return boxes[keep], img[keep], score[keep], cls[keep]


def rank_within(groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """groups (K,) int: each element's 0-based rank among the earlier elements of its group, (K,)."""
    if not len(groups):
        return groups
    onehot = F.one_hot(groups, n_groups)
    return (torch.cumsum(onehot, 0) * onehot).sum(1) - 1
