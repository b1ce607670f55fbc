#!/usr/bin/env python3
"""Rebuild the shipped YOLO11n INT8 OpenVINO detector as an Ultralytics PyTorch checkpoint, for GPU benchmarks.

The project ships YOLO11n only as an INT8 OpenVINO folder (CPU). A CUDA run needs PyTorch weights, and none can be
downloaded here, so this reads the IR's convolutions (weights de-quantised to float32 by OpenVINO's own constant
folding, BatchNorm already folded into a bias by the export), builds YOLO11n from Ultralytics' `yolo11n.yaml` and copies
them in by module path, which the export keeps in the IR's op names (each BatchNorm set to identity around the copied
bias). The result is checked against the IR on real frames (raw head outputs and the person boxes after NMS), and the
script fails when they disagree. The activations run in float (not INT8), so boxes differ slightly from the IR's.

    python3 bench/yolo_from_openvino.py --out /tmp/yolo11n_from_int8.pt \
        --check ../shared/data/epfl_terrace1/terrace1-c0.mp4
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_IR = ROOT.parent / "shared" / "models" / "yolo11n_int8_openvino_model"


def ir_convolutions(xml: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Module path (e.g. `model.23.cv3.2.2`) -> (weight (Cout, Cin/groups, kh, kw) float32, bias (Cout,) or None) for
    every convolution of the IR; the path is read from the op's name, which the PyTorch export keeps."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    convs = [op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]
    outputs, bias_of = [], []
    for op in convs:
        outputs.append(op.input_value(1))
        bias = None
        for target in op.output(0).get_target_inputs():
            add = target.get_node()
            if add.get_type_name() == "Add":
                other = add.input_value(1 - target.get_index())
                if not _depends_on_parameter(other.get_node()):
                    bias = other
                break
        bias_of.append(bias)
    folded = ov.Model([o for o in outputs] + [b for b in bias_of if b is not None], [], "weights")
    values = core.compile_model(folded, "CPU")({})
    arrays = [np.asarray(v, np.float32) for v in values.values()]
    weights, biases = arrays[: len(outputs)], iter(arrays[len(outputs):])
    out = {}
    for op, w, b in zip(convs, weights, bias_of):
        if op.get_type_name() == "GroupConvolution":  # (G, Cout/G, Cin/G, kh, kw) -> (Cout, Cin/G, kh, kw)
            w = w.reshape(-1, *w.shape[2:])
        name = re.match(r"__module\.([\w.]+)/", op.get_friendly_name())
        if not name:
            raise SystemExit(f"{xml}: convolution {op.get_friendly_name()!r} does not name its PyTorch module")
        out[name.group(1)] = (w, next(biases).reshape(-1) if b is not None else None)
    return out


def _depends_on_parameter(node, seen=None) -> bool:
    seen = set() if seen is None else seen
    if node.get_type_name() == "Parameter":
        return True
    if id(node) in seen:
        return False
    seen.add(id(node))
    return any(_depends_on_parameter(v.get_node(), seen) for v in node.input_values())


def build_from_ir(ir_dir: Path):
    """An Ultralytics DetectionModel (YOLO11n, 80 COCO classes) carrying the IR's weights."""
    import torch
    import yaml
    from ultralytics.nn.tasks import DetectionModel

    xml = next(Path(ir_dir).glob("*.xml"))
    meta = yaml.safe_load((Path(ir_dir) / "metadata.yaml").read_text())
    model = DetectionModel("yolo11n.yaml", nc=len(meta["names"]), verbose=False)
    model.names = {int(k): v for k, v in meta["names"].items()}
    modules = dict(model.named_modules())
    sources = ir_convolutions(xml)
    missing = [n for n, m in modules.items() if isinstance(m, torch.nn.Conv2d) and m.weight.requires_grad
               and n not in sources]
    if missing:
        raise SystemExit(f"{xml}: {len(missing)} YOLO11n convolutions have no weights in the IR, e.g. {missing[0]}")
    with torch.no_grad():
        for name, (w, b) in sources.items():
            conv = modules.get(name)
            if not isinstance(conv, torch.nn.Conv2d) or tuple(conv.weight.shape) != w.shape:
                raise SystemExit(f"{xml}: IR convolution {name} {w.shape} has no YOLO11n counterpart of that shape")
            conv.weight.copy_(torch.from_numpy(w))
            bias = torch.from_numpy(b) if b is not None else torch.zeros(w.shape[0])
            bn = modules.get(name.rsplit(".", 1)[0] + ".bn")
            if isinstance(bn, torch.nn.BatchNorm2d):  # identity BatchNorm around the folded bias
                bn.weight.fill_(1.0)
                bn.bias.copy_(bias)
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
            elif conv.bias is not None:
                conv.bias.copy_(bias)
    return model.eval()


def save_checkpoint(model, path: Path) -> None:
    """Ultralytics' checkpoint layout (fp16 model, train_args), loadable by YOLO(path) and the pipeline."""
    import copy

    import torch

    ckpt = {"model": copy.deepcopy(model).half(), "ema": None, "train_args": {"imgsz": 640, "task": "detect"},
            "date": None, "version": None}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)


def check_against_ir(pt: Path, ir_dir: Path, video: Path, frames: int = 30) -> dict:
    """Person boxes of both detectors (conf 0.25) on `frames` frames spread over the video: matched share at IoU 0.5."""
    import cv2

    from models.detector import PersonDetector
    from pipeline.tracking.utils import iou_matrix

    cap = cv2.VideoCapture(str(video))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or frames
    images = []
    for idx in np.linspace(0, total - 1, frames).astype(int):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(idx))
        ok, img = cap.read()
        if ok:
            images.append(img)
    cap.release()
    ir = PersonDetector(ir_dir, conf=0.25, device="cpu")
    torch_det = PersonDetector(pt, conf=0.25, device="cpu")
    n_ir = n_pt = matched = 0
    for img in images:
        a, b = ir.detect([img])[0], torch_det.detect([img])[0]
        n_ir, n_pt = n_ir + len(a), n_pt + len(b)
        if len(a) and len(b):
            iou = iou_matrix(a.xyxy, b.xyxy)
            used = set()
            for i in np.argsort(-iou.max(axis=1)):
                j = int(np.argmax(iou[i]))
                if iou[i, j] >= 0.5 and j not in used:
                    used.add(j)
                    matched += 1
    return {"frames": len(images), "ir_boxes": n_ir, "torch_boxes": n_pt, "matched": matched,
            "recall_of_ir": matched / max(n_ir, 1), "precision_vs_ir": matched / max(n_pt, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ir", type=Path, default=DEFAULT_IR,
                    help="the OpenVINO folder (default: the shared YOLO11n INT8)")
    ap.add_argument("--out", type=Path, required=True, help="the .pt file to write")
    ap.add_argument("--check", type=Path, help="a video: compare the two detectors' person boxes on 30 of its frames")
    ap.add_argument("--min-agreement", type=float, default=0.9,
                    help="fail when fewer boxes than this share match (IoU >= 0.5) in either direction")
    args = ap.parse_args()
    if not args.ir.is_dir():
        print(f"error: OpenVINO folder not found: {args.ir} (give --ir)", file=sys.stderr)
        return 2
    model = build_from_ir(args.ir)
    save_checkpoint(model, args.out)
    print(f"wrote {args.out}")
    if args.check:
        rep = check_against_ir(args.out, args.ir, args.check)
        print(f"check on {rep['frames']} frames of {args.check.name}: IR {rep['ir_boxes']} persons, PyTorch "
              f"{rep['torch_boxes']}, matched {rep['matched']} (recall of the IR's {rep['recall_of_ir']:.3f}, "
              f"precision {rep['precision_vs_ir']:.3f})")
        if min(rep["recall_of_ir"], rep["precision_vs_ir"]) < args.min_agreement:
            print("error: the rebuilt model disagrees with the IR: the convolutions were not matched", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
