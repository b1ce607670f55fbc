"""Which torch device a component runs on."""

from __future__ import annotations


def resolve_device(name: str = "auto"):
    """`auto` -> `cuda:0` when CUDA is available, else `cpu`; other names (`cpu`, `cuda:1`, `mps`) as given.

    Returns a `torch.device`; pass `str(...)` to libraries that want a string (Ultralytics).
    """
    import torch

    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
