"""`onnx_frame`: a trainable backbone made from a frame-level ONNX re-id model (one crop -> one embedding).

The ONNX graph is converted to a PyTorch `torch.fx.GraphModule` by onnx2torch (its weights become parameters, so it
can be fine-tuned) and wrapped to map frames (N, 3, H, W) -> (N, D, 1, 1): a 1x1 "map", so Re-ID-AR's temporal
attention and pooling (models/reid/model.py) work unchanged (`out_channels == feature_dim == D`, no `embed`).
Config: `model.backbone: onnx_frame`, `model.pretrained: PATH.onnx`; the model's input is the project's (RGB,
ImageNet mean/std), e.g. Intel's person-reidentification-retail-0267 (256x128 -> 256-d).

Two gaps of onnx2torch are filled here: a converter for opset-9 `MeanVarianceNormalization` (registered in
onnx2torch's own registry), and tensor shapes (onnx2torch's pool / norm converters need the input rank, which ONNX
shape inference does not reach past ops it cannot type): OpenVINO reads the file and every tensor it shapes
statically gets a `value_info` entry. The completed ONNX bytes are kept in the persistent uint8 buffer
`source_onnx`, so a checkpoint rebuilds the module without the original file (and without OpenVINO).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.reid.backbones import BACKBONES, CheckpointError

log = logging.getLogger("mcsa.reid.onnx_backbone")

SOURCE_BUFFER = "source_onnx"  # name of the uint8 buffer holding the ONNX bytes (state_dict key backbone.source_onnx)

_CONVERTERS_LOCK = threading.Lock()
_CONVERTERS_READY = False


class ONNXBackboneError(CheckpointError):
    """The ONNX file cannot become a backbone; the message names the file, the reason and the fix."""


class MeanVarianceNormalization(nn.Module):
    """ONNX MeanVarianceNormalization: (x - mean) / sqrt(var + 1e-9) over `axes` (ONNX default (0, 2, 3))."""

    def __init__(self, axes: tuple[int, ...] = (0, 2, 3), eps: float = 1e-9) -> None:
        super().__init__()
        self.axes, self.eps = tuple(int(a) for a in axes), float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(self.axes, keepdim=True)
        centred = x - mean
        return centred / torch.sqrt(centred.pow(2).mean(self.axes, keepdim=True) + self.eps)


def _register_converters() -> None:
    """Add the converters onnx2torch lacks to its registry (once per process)."""
    global _CONVERTERS_READY
    with _CONVERTERS_LOCK:
        if _CONVERTERS_READY:
            return
        from onnx2torch.node_converters.registry import add_converter
        from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

        def convert_mvn(node, graph):  # noqa: ARG001 - onnx2torch's converter signature
            axes = node.attributes.get("axes", [0, 2, 3])
            return OperationConverterResult(torch_module=MeanVarianceNormalization(tuple(axes)),
                                            onnx_mapping=onnx_mapping_from_node(node))

        try:
            add_converter(operation_type="MeanVarianceNormalization", version=9)(convert_mvn)
        except ValueError:  # a newer onnx2torch (or another caller) has one already
            pass
        _CONVERTERS_READY = True


def _fix_opset_lookup() -> None:
    """onnx2torch's ONNX export of Shape / Squeeze / Reduce* asks `torch.onnx.symbolic_helper` for the export opset
    (`GLOBALS`). In recent torch (2.14 here) that name is a compatibility module without `GLOBALS` once anything has
    imported it as a submodule (before that, `torch.onnx` hands out the internal module that has it), so the export
    fails depending on import order. Point onnx2torch at the internal module, which always has it."""
    from onnx2torch.utils import common

    if hasattr(common.symbolic_helper, "GLOBALS") and hasattr(common.symbolic_helper.GLOBALS,
                                                              "export_onnx_opset_version"):
        return
    try:
        from torch.onnx._internal.torchscript_exporter import symbolic_helper
    except ImportError:  # older torch: the public module is the real one
        return
    if hasattr(symbolic_helper, "GLOBALS"):
        common.symbolic_helper = symbolic_helper


def _read_onnx(source: str | Path | bytes) -> tuple[Any, str, bytes]:
    """(ModelProto, name for messages, the file's bytes) from a path or ONNX bytes; one-line `ONNXBackboneError`
    when it is not an ONNX model."""
    import onnx
    from google.protobuf.message import DecodeError

    name = "embedded ONNX model" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)):
        if not Path(source).is_file():
            raise ONNXBackboneError(f"{name}: no such file (model.pretrained of backbone onnx_frame must be an .onnx "
                                    "re-id model)")
        source = Path(source).read_bytes()
    source = bytes(source)
    try:
        model = onnx.load_from_string(source)
    except (DecodeError, ValueError, RuntimeError) as err:
        model, why = None, f"{type(err).__name__}"
    else:
        why = "no graph nodes"
    if model is None or not len(model.graph.node) or not len(model.graph.input):
        raise ONNXBackboneError(f"{name}: not an ONNX model ({why}); model.pretrained of backbone onnx_frame must be "
                                "an .onnx file (one crop in, one embedding out)")
    return model, name, source


def _graph_inputs(model) -> list[Any]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _input_dims(model, name: str) -> list[int | None]:
    """The single image input's dims (None where dynamic); one-line error unless one rank-4 input."""
    inputs = _graph_inputs(model)
    if len(inputs) != 1:
        raise ONNXBackboneError(f"{name}: has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); backbone "
                                "onnx_frame needs a model with one image input (N, 3, H, W)")
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] not in (None, 3):
        shown = "x".join("?" if d is None else str(d) for d in dims) or "unknown"
        raise ONNXBackboneError(f"{name}: input {inputs[0].name!r} has shape {shown}; backbone onnx_frame needs a "
                                "frame-level model whose input is (N, 3, H, W) RGB crops")
    return dims


def _unconvertible_ops(model) -> list[str]:
    """`OpType (opset N)` of the nodes onnx2torch has no converter for."""
    from onnx2torch.node_converters import get_converter

    opsets = {o.domain: o.version for o in model.opset_import}
    missing: list[str] = []
    for node in model.graph.node:
        domain = node.domain or ""
        version = opsets.get(domain, opsets.get("ai.onnx", 0))
        try:
            get_converter(operation_type=node.op_type, version=version, domain=domain)
        except NotImplementedError:
            label = f"{(domain + '.') if domain else ''}{node.op_type} (opset {version})"
            if label not in missing:
                missing.append(label)
    return missing


_OV_TO_ONNX_TYPE = {"f32": 1, "u8": 2, "i8": 3, "i32": 6, "i64": 7, "boolean": 9, "f16": 10, "f64": 11}


def _add_value_info(model, data: bytes, name: str) -> int:
    """Give every node output without a `value_info` entry the static shape OpenVINO infers for it (by tensor
    name); returns how many were added. Without OpenVINO nothing is added (conversion may then fail on pools)."""
    from onnx import helper

    known = {v.name for v in model.graph.value_info} | {i.name for i in model.graph.input}
    known |= {i.name for i in model.graph.initializer} | {o.name for o in model.graph.output}
    wanted = {o for n in model.graph.node for o in n.output if o and o not in known}
    if not wanted:
        return 0
    try:
        import openvino as ov
    except ImportError:
        log.warning("%s: OpenVINO is not installed: tensor shapes come from ONNX shape inference only", name)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(data)
        try:
            ov_model = ov.Core().read_model(str(path))
        except Exception as err:  # noqa: BLE001 - OpenVINO cannot read it: the conversion below may still work
            log.warning("%s: OpenVINO cannot read it (%s): tensor shapes come from ONNX shape inference only",
                        name, str(err).splitlines()[0][:120])
            return 0
    added = 0
    for op in ov_model.get_ops():
        for out in op.outputs():
            if not out.get_partial_shape().is_static:
                continue
            elem = _OV_TO_ONNX_TYPE.get(out.get_element_type().get_type_name())
            for tensor in out.get_names():
                if tensor in wanted and elem is not None:
                    model.graph.value_info.append(helper.make_tensor_value_info(tensor, elem, list(out.get_shape())))
                    wanted.discard(tensor)
                    added += 1
    return added


def convert_onnx(source: str | Path | bytes) -> tuple[nn.Module, bytes, list[int | None]]:
    """ONNX file or bytes -> (torch GraphModule, the completed ONNX bytes to embed, input dims (N, 3, H, W))."""
    _register_converters()
    _fix_opset_lookup()
    model, name, raw = _read_onnx(source)
    dims = _input_dims(model, name)
    missing = _unconvertible_ops(model)
    if missing:
        raise ONNXBackboneError(f"{name}: onnx2torch cannot convert op {', '.join(missing)}; backbone onnx_frame "
                                "needs a model made of ops onnx2torch supports (or add a converter in "
                                "models/reid/onnx_backbone.py)")
    added = _add_value_info(model, raw, name)
    from onnx2torch import convert

    try:
        net = convert(model)
    except Exception as err:  # noqa: BLE001 - converter errors carry no file name
        first = (str(err).strip().splitlines() or ["no message"])[0][:160]
        raise ONNXBackboneError(f"{name}: onnx2torch failed to convert it ({type(err).__name__}: {first})") from None
    log.debug("%s: converted (%d tensor shapes from OpenVINO)", name, added)
    return net, (model.SerializeToString() if added else raw), dims


class ONNXFrameBackbone(nn.Module):
    """A converted frame-level ONNX re-id model: frames (N, 3, H, W) -> embeddings as a 1x1 map (N, D, 1, 1).

    `net` is the onnx2torch GraphModule (its children are the graph's nodes in order, e.g. `Conv`, `Conv_1`, ...);
    `freeze_modules(name)` resolves `model.freeze` entries: `net` (the whole network), a node name, or `until:NODE`
    (every node from the input up to and including NODE).
    """

    def __init__(self, source: str | Path | bytes | torch.Tensor) -> None:
        super().__init__()
        if isinstance(source, torch.Tensor):
            source = source.detach().cpu().contiguous().numpy().tobytes()
        self.net, data, dims = convert_onnx(source)
        self.input_hw = (dims[2], dims[3])  # None where the ONNX input is dynamic
        self.register_buffer(SOURCE_BUFFER, torch.frombuffer(bytearray(data), dtype=torch.uint8).clone(),
                             persistent=True)
        h = dims[2] or 256
        w = dims[3] or 128
        self.net.eval()
        with torch.no_grad():
            out = self._embed(torch.zeros(1, 3, h, w))
        self.out_channels = int(out.shape[1])
        self.feature_dim = self.out_channels
        self.embed: nn.Module | None = None
        # A TorchScript trace (openvino.convert_model of the torch module) fixes the batch in onnx2torch's
        # Shape/Reshape nodes; the pipeline's OpenVINO compile goes through the ONNX export instead, which writes them
        # as the original ONNX ops (batch stays dynamic).
        self.openvino_via_onnx = True

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if isinstance(y, (tuple, list)):
            y = y[0]
        return y.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """frames (N, 3, H, W) normalised RGB -> (N, D, 1, 1)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"onnx_frame backbone: expected frames (N, 3, H, W), got {tuple(x.shape)}")
        h, w = self.input_hw
        if (h is not None and h != x.shape[-2]) or (w is not None and w != x.shape[-1]):
            raise ValueError(f"onnx_frame backbone: the ONNX model takes {h}x{w} crops, got "
                             f"{x.shape[-2]}x{x.shape[-1]}; set data.input_size: [{h}, {w}]")
        return self._embed(x)[:, :, None, None]

    def node_names(self) -> list[str]:
        """Names of the converted nodes that hold parameters, in graph order."""
        return [n for n, m in self.net.named_children() if n != "initializers" and any(True for _ in m.parameters())]

    def freeze_modules(self, name: str) -> list[nn.Module]:
        """Modules to freeze for one `model.freeze` entry (`net`, a node name, `until:NODE`); [] if unknown."""
        if name == "net":
            return [self.net]
        children = dict(self.net.named_children())
        if name.startswith("until:"):
            stop = name[len("until:"):]
            if stop not in children:
                return []
            order = [n for n in children if n != "initializers"]
            return [children[n] for n in order[: order.index(stop) + 1]]
        return [children[name]] if name in children and name != "initializers" else []

    def freeze_names_hint(self) -> str:
        nodes = self.node_names()
        shown = ", ".join(nodes[:6]) + (f", ... {nodes[-1]}" if len(nodes) > 6 else "")
        return f"net (all), until:NODE or a node name ({len(nodes)} with weights: {shown})"

    def load_pretrained(self, path: str | Path) -> None:  # the weights came with the graph
        """No-op: the ONNX file given at construction holds the weights."""


@BACKBONES.register("onnx_frame")
def onnx_frame(pretrained: str | Path | bytes | torch.Tensor | None = None, **_: Any) -> ONNXFrameBackbone:
    if pretrained is None:
        raise ONNXBackboneError("backbone onnx_frame is built from an ONNX file: set model.pretrained to a frame-level "
                                ".onnx re-id model (one crop in, one embedding out)")
    return ONNXFrameBackbone(pretrained)


onnx_frame.built_from_weights = True  # build_backbone passes `pretrained` to the factory


def embedded_source(state_dict: dict[str, torch.Tensor], prefix: str = "backbone.") -> torch.Tensor | None:
    """The ONNX bytes (uint8 tensor) a checkpoint's state_dict carries for an onnx_frame backbone, else None."""
    return state_dict.get(prefix + SOURCE_BUFFER)
