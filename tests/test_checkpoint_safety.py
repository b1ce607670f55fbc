"""No code from a weights file: every torch file the project loads is unpickled with `weights_only=True`.

Real malicious pickles are crafted here (their `__reduce__` creates a marker file when unpickled the unsafe way, which
a subprocess proves); loading them through the project's loaders gives one clear error and the marker never appears.
The project's own checkpoints (old and new), torchreid-style and IBN-Net-style weights still load.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.reid import CheckpointError, ReIDAR, build_backbone, load_checkpoint, save_checkpoint
from models.reid.backbones import UnsafeCheckpointError, read_torch_file


class _WritesMarker:
    """Unpickling this (the unsafe way) runs `exec`, which writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


class _RunsShell:
    """Unpickling this (the unsafe way) runs `os.system('touch marker')`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _craft(kind: str, path: Path, marker: Path) -> Path:
    """A weights-looking file (tensors beside the payload) in one of three container formats."""
    state = {"conv1.conv.weight": torch.randn(16, 3, 7, 7), "fc.0.bias": torch.zeros(512)}
    if kind == "zip":  # torch.save's default format, a checkpoint dict
        torch.save({"state_dict": state, "epoch": 3, "hook": _WritesMarker(marker)}, path)
    elif kind == "legacy":  # the pre-1.6 format (IBN-Net's resnet50_ibn_a.pth.tar era)
        torch.save({"state_dict": state, "hook": _RunsShell(marker)}, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle named like weights
        with open(path, "wb") as fh:
            pickle.dump({"state_dict": state, "hook": _WritesMarker(marker)}, fh)
    return path


def _unsafe_load_in_subprocess(path: Path) -> None:
    code = "import sys, torch; torch.load(sys.argv[1], map_location='cpu', weights_only=False)"
    subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=120)


@pytest.mark.parametrize("kind", ["zip", "legacy", "pickle"])
def test_malicious_checkpoint_runs_nothing(tmp_path, kind):
    # the payload is real: loaded the unsafe way (in a child process), it creates its marker
    proof_marker = tmp_path / "proof_marker"
    _unsafe_load_in_subprocess(_craft(kind, tmp_path / "proof.pth", proof_marker))
    assert proof_marker.exists(), "the crafted pickle should run code when loaded unsafely"

    marker = tmp_path / "marker"
    evil = _craft(kind, tmp_path / "evil.pth", marker)
    loaders = {
        "read_torch_file": lambda: read_torch_file(evil),
        "reid checkpoint": lambda: load_checkpoint(evil),
        "osnet weights": lambda: build_backbone("osnet_x0_25", pretrained=evil),
    }
    for what, load in loaders.items():
        with pytest.raises(UnsafeCheckpointError) as err:
            load()
        msg = str(err.value)
        assert "\n" not in msg and str(evil) in msg, what
        assert "refused to load" in msg and "nothing was run" in msg, what
        assert ("builtins.exec" if kind != "legacy" else "system") in msg, what
        assert not marker.exists(), f"{what}: code from the checkpoint ran"


def test_malicious_ibn_net_file_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    evil = _craft("legacy", tmp_path / "resnet50_ibn_a.pth.tar", marker)
    with pytest.raises(UnsafeCheckpointError):
        build_backbone("resnet50_ibn_a").load_imagenet_checkpoint(evil)
    assert not marker.exists()


def test_training_checkpoint_with_optimizer_scheduler_and_config_loads(tmp_path):
    """What `pipeline/reid_data/training.py` writes: weights, optimizer, LambdaLR scheduler, criterion, JSON config."""
    from models.reid.config import ReIDTrainingConfig

    torch.manual_seed(0)
    model = ReIDAR("osnet_x0_25", 5, ["walking", "standing"], (64, 32))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.1 * (e + 1))
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    opt.step()
    sched.step()
    cfg = ReIDTrainingConfig.model_validate({"data": {"root": str(tmp_path)}, "actions": ["walking", "standing"]})
    path = save_checkpoint(tmp_path / "ckpt.pth", model, epoch=2, optimizer=opt, scheduler=sched,
                           extra={"criterion": torch.nn.Linear(2, 2).state_dict()},
                           train_config=cfg.model_dump(mode="json"))
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []  # plain types only
    loaded, payload = load_checkpoint(path)
    assert payload["epoch"] == 2 and payload["action_names"] == ["walking", "standing"]
    assert payload["optimizer"]["state"] and payload["scheduler"]["last_epoch"] == 1
    assert payload["train_config"]["data"]["root"] == str(tmp_path)
    torch.testing.assert_close(loaded.state_dict()["bottleneck.weight"], model.state_dict()["bottleneck.weight"])


def test_checkpoint_written_before_the_change_loads(tmp_path):
    """A checkpoint saved the old way (the same payload; legacy serialisation too) still loads."""
    model = ReIDAR("osnet_x0_25", 3, ["a"], (64, 32))
    path = save_checkpoint(tmp_path / "new.pth", model)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    old = tmp_path / "old_legacy.pth"
    torch.save(payload, old, _use_new_zipfile_serialization=False)
    loaded, again = load_checkpoint(old)
    assert again["format"] == "mcsa-reid-ar/1" and loaded.num_actions == 1


@pytest.mark.parametrize("legacy", [False, True])
def test_torchreid_style_checkpoint_with_numpy_metrics_loads(tmp_path, legacy):
    """torchreid's save_checkpoint keeps `rank1` as a numpy scalar beside the state_dict: allowed (plain data)."""
    net = build_backbone("osnet_x0_25")
    ckpt = {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 60,
            "rank1": np.float64(0.71), "mAP": np.float32(0.5), "optimizer": None}
    path = tmp_path / "model.pth.tar-60"
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    raw = read_torch_file(path)
    assert float(raw["rank1"]) == pytest.approx(0.71)
    other = build_backbone("osnet_x0_25", pretrained=path)
    torch.testing.assert_close(other.state_dict()["conv1.conv.weight"], net.state_dict()["conv1.conv.weight"])


def test_ibn_net_legacy_checkpoint_loads(tmp_path):
    """IBN-Net's release layout: legacy serialisation, {'state_dict' (module.-prefixed), 'epoch', 'arch', ...}."""
    torch.manual_seed(2)
    src = build_backbone("resnet50_ibn_a")
    state = {f"module.{k}": v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["module.fc.weight"] = torch.zeros(1000, 2048)
    state["module.fc.bias"] = torch.zeros(1000)
    path = tmp_path / "resnet50_ibn_a.pth.tar"
    torch.save({"state_dict": state, "epoch": 100, "arch": "resnet50_ibn_a", "best_prec1": 77.4}, path,
               _use_new_zipfile_serialization=False)
    dst = build_backbone("resnet50_ibn_a")
    dst.load_imagenet_checkpoint(path)
    torch.testing.assert_close(dst.state_dict()["layer1.0.bn1.IN.weight"], src.state_dict()["layer1.0.bn1.IN.weight"])


def test_shared_torchreid_weights_load(shared):
    for name in ("osnet_x0_25_msmt17.pth", "osnet_x0_25_market1501.pth"):
        net = build_backbone("osnet_x0_25", pretrained=shared / "models" / name)
        assert net.state_dict()["conv5.conv.weight"].abs().sum() > 0


def test_truncated_checkpoint_is_one_line(tmp_path):
    model = ReIDAR("osnet_x0_25", 2, [], (64, 32))
    good = save_checkpoint(tmp_path / "m.pth", model)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(cut)
    assert "not a readable torch checkpoint" in str(err.value) and "\n" not in str(err.value)
    assert not isinstance(err.value, UnsafeCheckpointError)


# ------------------------------------------------------------------------------------------ detector .pt weights


def test_malicious_detector_pt_runs_nothing(tmp_path):
    from models.detector import DetectorError, PersonDetector

    marker = tmp_path / "marker"
    evil = tmp_path / "yolo_evil.pt"
    torch.save({"model": _RunsShell(marker), "train_args": {}}, evil)
    with pytest.raises(DetectorError) as err:
        PersonDetector(evil, device="cpu")
    msg = str(err.value)
    assert str(evil) in msg and "refused to load" in msg and "nothing was run" in msg and "\n" not in msg
    assert not marker.exists()


def test_genuine_ultralytics_pt_still_loads(tmp_path):
    """A real Ultralytics checkpoint (YOLO11n built from the package's own yaml, saved by Ultralytics) loads under the
    weights-only restriction and detects (random weights: only the output format is checked)."""
    from ultralytics import YOLO

    from models.detector import PersonDetector

    path = tmp_path / "yolo11n_scratch.pt"
    YOLO("yolo11n.yaml").save(str(path))
    det = PersonDetector(path, device="cpu", imgsz=160)
    out = det.detect([np.zeros((120, 160, 3), np.uint8)])
    assert len(out) == 1 and out[0].xyxy.shape[1] == 4
    from ultralytics.nn import tasks

    assert tasks.SAFE_LOAD is True and os.environ["YOLO_AUTOINSTALL"] == "false"
