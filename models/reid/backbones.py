"""Re-ID backbones: ResNet50-IBN-a (last stride 1) and OSNet (x0.25 .. x1.0).

Every backbone maps frames (N, 3, H, W) to a spatial feature map (N, C, h, w) (`forward`) and exposes
`out_channels`. A backbone may also own a per-frame `embed` head applied to the globally pooled map (OSNet's
`fc` layer: Linear + BN + ReLU, 512-d); `feature_dim` is the size after `embed` (== `out_channels` when there is none).

Parameter names follow the public checkpoints so their state_dicts load as they are:
  * OSNet: torchreid's names (`conv1.conv.weight`, `conv2.0.conv2a.conv1.weight`, `fc.0.weight`, ...);
  * ResNet50-IBN-a: the IBN-Net release (`layer1.0.bn1.IN.weight`, `layer1.0.bn1.BN.running_mean`, ...).
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.registry import Registry

BACKBONES: Registry[nn.Module] = Registry("re-id backbone")


class CheckpointError(ValueError):
    """A weights/checkpoint file cannot be used; the message names the file, what was expected and the fix."""


# ----------------------------------------------------------------------------------------------------------------------
# checkpoint helpers shared by all backbones
# ----------------------------------------------------------------------------------------------------------------------


# Plain, non-tensor types that real weight files hold beside their tensors and that cannot run code: numpy scalars
# and their dtypes (torchreid checkpoints store `rank1` as a numpy float). Everything else a pickle may name (a
# function, a class with a `__reduce__`) is refused: `torch.load(weights_only=True)` never calls it.
_NUMPY_SCALAR_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool_")


def _plain_numpy_globals() -> list[Any]:
    """numpy's scalar constructor (under its numpy 1 and numpy 2 module names), `numpy.dtype` and the scalar dtype
    classes, as `(object, "module.name")` pairs for `torch.serialization.add_safe_globals`."""
    import numpy as np

    scalar = np.float64(0).__reduce__()[0]  # numpy.core.multiarray.scalar (numpy._core in numpy 2)
    out: list[Any] = [np.dtype, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    for name in _NUMPY_SCALAR_DTYPES:
        out.append(type(np.dtype(getattr(np, name))))
    return out


_SAFE_GLOBALS_READY = False


def _allow_plain_globals() -> None:
    global _SAFE_GLOBALS_READY
    if not _SAFE_GLOBALS_READY:
        torch.serialization.add_safe_globals(_plain_numpy_globals())
        _SAFE_GLOBALS_READY = True


def _refused_globals(path: Path) -> list[str]:
    """Names a zip-format torch file's pickle refers to that the weights-only loader will not build (read from the
    pickle's opcodes; nothing is executed). [] for legacy (non-zip) files: the loader itself checks those."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip archive (legacy format or junk): torch.load decides below
        return []
    allowed = {f"{g.__module__}.{g.__qualname__}" if not isinstance(g, tuple) else g[1]
               for g in torch.serialization.get_safe_globals()}
    return [name for name in names if name not in allowed]


def _raw_pickle_globals(path: Path, limit_bytes: int = 1 << 20) -> list[str]:
    """`module.name` of the GLOBAL / STACK_GLOBAL opcodes of a plain pickle file's first 1 MiB (opcodes are only
    read, nothing is executed); for the error message."""
    import pickletools

    names: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit_bytes)
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL" and isinstance(arg, str):
                names.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a truncated or odd pickle: report what was found so far
        pass
    return names


class UnsafeCheckpointError(CheckpointError):
    """The file's pickle names Python objects (functions, classes) a weights file never needs: it is not loaded."""


def _unsafe_error(path: Path, names: list[str]) -> UnsafeCheckpointError:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return UnsafeCheckpointError(
        f"{path}: refused to load: it holds pickled Python objects ({shown}) that could run code, not only tensors "
        "and plain values; nothing was run. Use weights from a source you trust, saved as a state_dict "
        "(torch.save(model.state_dict(), path)) or by `run_pipeline.py train`"
    )


def read_torch_file(path: str | Path) -> Any:
    """Load a torch file on CPU with `weights_only=True`: tensors, containers, numbers, strings and numpy scalars
    only, never code. One-line `CheckpointError` when the file is missing or unreadable, and
    `UnsafeCheckpointError` (before anything is unpickled) when it names other Python objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (expected a torch checkpoint/state_dict saved with torch.save)")
    _allow_plain_globals()
    refused = _refused_globals(path)
    if refused:
        raise _unsafe_error(path, refused)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the verdict below says what matters
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights only" in text.lower() or "weights_only" in text:
            names = re.findall(r"GLOBAL ([\w.]+)", text) or _raw_pickle_globals(path) or ["objects of unknown type"]
            raise _unsafe_error(path, sorted(set(names))) from None
        raise CheckpointError(_unreadable(path, exc)) from None
    except Exception as exc:  # zip and EOF errors all mean the same thing to the user
        raise CheckpointError(_unreadable(path, exc)) from None


def _unreadable(path: Path, exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:120]
    return (f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {first}); "
            "pass a file written by torch.save (a state_dict or a dict with 'state_dict')")


def extract_state_dict(obj: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict, or a dict holding one under 'state_dict'/'model'; strip a `module.` prefix."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path}: holds no state_dict (got {type(obj).__name__}); expected a dict of tensors or a dict with "
            "'state_dict'"
        )
    out = {}
    for key, value in obj.items():
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def load_matching(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    path: str | Path,
    what: str,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Load `state` into `module` strictly (apart from ignored prefixes and missing `num_batches_tracked`).

    Raises one clear `CheckpointError` naming the file, the expected network and a few offending keys.
    """
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shape:
            parts.append(f"{len(shape)} with wrong shape (e.g. {shape[0]})")
        raise CheckpointError(f"{path}: keys do not match {what}: " + "; ".join(parts) + f"; pass {what} weights")
    for key, value in own.items():  # old checkpoints lack num_batches_tracked
        if key not in state:
            state[key] = value
    module.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------------------------------------------------
# ResNet50-IBN-a
# ----------------------------------------------------------------------------------------------------------------------


class IBN(nn.Module):
    """Instance-Batch Normalisation: the first half of the channels InstanceNorm (affine), the rest BatchNorm."""

    def __init__(self, planes: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(a.contiguous()), self.BN(b.contiguous())], dim=1)


class BottleneckIBN(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, ibn: bool, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = IBN(planes) if ibn else nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetIBNa(nn.Module):
    """ResNet-IBN-a: IBN in the first norm of every bottleneck of layer1..layer3; `last_stride` for layer4."""

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3), last_stride: int = 1) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0], 1, ibn=True)
        self.layer2 = self._make_layer(128, layers[1], 2, ibn=True)
        self.layer3 = self._make_layer(256, layers[2], 2, ibn=True)
        self.layer4 = self._make_layer(512, layers[3], last_stride, ibn=False)
        self.out_channels = 512 * 4
        self.feature_dim = self.out_channels
        self.embed: nn.Module | None = None
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int, ibn: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
        layers = [BottleneckIBN(self.inplanes, planes, ibn, stride, downsample)]
        self.inplanes = planes * 4
        layers += [BottleneckIBN(self.inplanes, planes, ibn) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
            elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def load_imagenet_checkpoint(self, path: str | Path) -> None:
        """Load IBN-Net's `resnet50_ibn_a.pth.tar` (a dict with 'state_dict', keys prefixed `module.`); `fc.*` ignored."""
        state = extract_state_dict(read_torch_file(path), path)
        load_matching(self, state, path, "ResNet50-IBN-a (IBN-Net layout, e.g. layer1.0.bn1.IN.weight)", ("fc.",))

    load_pretrained = load_imagenet_checkpoint


@BACKBONES.register("resnet50_ibn_a")
def resnet50_ibn_a(last_stride: int = 1, **_: Any) -> ResNetIBNa:
    return ResNetIBNa((3, 4, 6, 3), last_stride=last_stride)


# ----------------------------------------------------------------------------------------------------------------------
# OSNet (Zhou et al., ICCV 2019), parameter names as in torchreid
# ----------------------------------------------------------------------------------------------------------------------


class ConvLayer(nn.Module):
    """conv (no bias) + BN + ReLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False, groups=groups)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1(ConvLayer):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(cin, cout, 1, stride=stride)


class Conv1x1Linear(nn.Module):
    """1x1 conv + BN, no activation."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class LightConv3x3(nn.Module):
    """Lite 3x3: pointwise 1x1 then depthwise 3x3, BN, ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False, groups=cout)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """Unified aggregation gate: GAP -> 1x1 conv (C/16) -> ReLU -> 1x1 conv (C) -> sigmoid, multiplies the input."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=True)
        self.gate_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate_activation(self.fc2(self.relu(self.fc1(self.global_avgpool(x)))))
        return x * g


class OSBlock(nn.Module):
    """Omni-scale residual block: 4 streams of 1..4 lite 3x3 convs, shared gate, 1x1 expansion."""

    def __init__(self, cin: int, cout: int, bottleneck_reduction: int = 4) -> None:
        super().__init__()
        mid = cout // bottleneck_reduction
        self.conv1 = Conv1x1(cin, mid)
        self.conv2a = LightConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*[LightConv3x3(mid, mid) for _ in range(2)])
        self.conv2c = nn.Sequential(*[LightConv3x3(mid, mid) for _ in range(3)])
        self.conv2d = nn.Sequential(*[LightConv3x3(mid, mid) for _ in range(4)])
        self.gate = ChannelGate(mid)
        self.conv3 = Conv1x1Linear(mid, cout)
        self.downsample = Conv1x1Linear(cin, cout) if cin != cout else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = self.gate(self.conv2a(x1)) + self.gate(self.conv2b(x1)) + self.gate(self.conv2c(x1)) + self.gate(self.conv2d(x1))
        out = self.conv3(x2)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class OSNet(nn.Module):
    """OSNet feature extractor; `forward` returns the conv5 map, `embed` is torchreid's `fc` (Linear+BN+ReLU)."""

    def __init__(self, channels: tuple[int, int, int, int], layers: tuple[int, int, int] = (2, 2, 2),
                 feature_dim: int = 512) -> None:
        super().__init__()
        c0, c1, c2, c3 = channels
        self.conv1 = ConvLayer(3, c0, 7, stride=2, padding=3)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = self._make_layer(layers[0], c0, c1, reduce=True)
        self.conv3 = self._make_layer(layers[1], c1, c2, reduce=True)
        self.conv4 = self._make_layer(layers[2], c2, c3, reduce=False)
        self.conv5 = Conv1x1(c3, c3)
        self.fc = nn.Sequential(nn.Linear(c3, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True))
        self.out_channels = c3
        self.feature_dim = feature_dim
        self._init_weights()

    @property
    def embed(self) -> nn.Module:
        return self.fc

    @staticmethod
    def _make_layer(n: int, cin: int, cout: int, reduce: bool) -> nn.Sequential:
        blocks: list[nn.Module] = [OSBlock(cin, cout)] + [OSBlock(cout, cout) for _ in range(1, n)]
        if reduce:
            blocks.append(nn.Sequential(Conv1x1(cout, cout), nn.AvgPool2d(2, stride=2)))
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        return self.conv5(self.conv4(self.conv3(self.conv2(x))))

    def load_pretrained(self, path: str | Path) -> None:
        """Load a torchreid OSNet state_dict (bare, in 'state_dict', `module.`-prefixed); `classifier.*` ignored."""
        state = extract_state_dict(read_torch_file(path), path)
        load_matching(self, state, path, f"torchreid OSNet with channels {self.channels_str()}", ("classifier.",))

    def channels_str(self) -> str:
        return f"{self.conv1.conv.out_channels}/{self.out_channels}"


_OSNET_CHANNELS = {
    "osnet_x1_0": (64, 256, 384, 512),
    "osnet_x0_75": (48, 192, 288, 384),
    "osnet_x0_5": (32, 128, 192, 256),
    "osnet_x0_25": (16, 64, 96, 128),
}


def _osnet_factory(channels: tuple[int, int, int, int]):
    def build(feature_dim: int = 512, **_: Any) -> OSNet:
        return OSNet(channels, feature_dim=feature_dim)

    return build


for _name, _channels in _OSNET_CHANNELS.items():
    BACKBONES.register(_name)(_osnet_factory(_channels))


def build_backbone(name: str, pretrained: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered backbone and optionally load local pretrained weights (path). A backbone whose network
    comes from its weights file (`onnx_frame`: factory attribute `built_from_weights`) is built from `pretrained`."""
    factory = BACKBONES.get(name)
    if getattr(factory, "built_from_weights", False):
        return factory(pretrained=pretrained, **kwargs)
    backbone = factory(**kwargs)
    if pretrained:
        backbone.load_pretrained(pretrained)
    return backbone


def feature_map_size(backbone: nn.Module, height: int, width: int) -> tuple[int, int]:
    """(h, w) of the backbone's map for an input of height x width, from a dummy forward on CPU."""
    was_training = backbone.training
    backbone.eval()
    try:
        param = next(backbone.parameters())
        with torch.no_grad():
            out = backbone(torch.zeros(1, 3, height, width, device=param.device, dtype=param.dtype))
    finally:
        backbone.train(was_training)
    return int(out.shape[-2]), int(out.shape[-1])


from models.reid import onnx_backbone as _onnx_backbone  # noqa: E402,F401 - registers `onnx_frame`
