"""onnx_frame backbone: Intel's person-reidentification-retail-0267 (ONNX) converted to PyTorch by onnx2torch, as a
trainable Re-ID-AR backbone: parity with OpenVINO on real Terrace crops, dynamic batch, checkpoint round trip
without the ONNX file, one optimiser step moves the embedding, one-line errors for bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

ONNX_REL = "models/openvino_reid/person-reidentification-retail-0287/person-reidentification-retail-0267.onnx"


@pytest.fixture(scope="module")
def onnx_path(shared, tmp_path_factory) -> Path:
    """A private copy of the 0267 ONNX file (the round-trip test deletes it)."""
    src = shared / ONNX_REL
    if not src.is_file():
        pytest.skip(f"{src} not found (Intel Open Model Zoo person-reidentification-retail-0267 ONNX)")
    dst = tmp_path_factory.mktemp("onnx") / src.name
    shutil.copyfile(src, dst)
    return dst


@pytest.fixture(scope="module")
def model(onnx_path):
    from models.reid.model import ReIDAR

    torch.set_num_threads(1)
    torch.manual_seed(0)
    return ReIDAR("onnx_frame", num_classes=3, action_names=["walking"], input_size=(256, 128),
                  pretrained=str(onnx_path)).eval()


@pytest.fixture(scope="module")
def crops(shared) -> torch.Tensor:
    """8 real person crops from Terrace c0 (gt boxes >= 90 px tall), (8, 3, 256, 128), ImageNet-normalised RGB."""
    import cv2

    s = shared / "data" / "epfl_terrace1"
    gt = np.loadtxt(s / "gt_c0" / "gt.txt", delimiter=",")
    gt = gt[(gt[:, 5] >= 90) & (gt[:, 4] >= 30) & (gt[:, 2] >= 0) & (gt[:, 3] >= 0)]
    all_frames = sorted(set(gt[:, 0].astype(int)))
    cap = cv2.VideoCapture(str(s / "terrace1-c0.mp4"))
    out = []
    for f in all_frames[:: max(1, len(all_frames) // 6)]:
        if len(out) >= 8:
            break
        cap.set(cv2.CAP_PROP_POS_FRAMES, f)
        ok, img = cap.read()
        assert ok, f"cannot read frame {f}"
        for row in gt[gt[:, 0] == f][: min(2, 8 - len(out))]:
            x, y, w, h = (int(v) for v in row[2:6])
            crop = cv2.resize(img[y:y + h, x:x + w], (128, 256), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
            out.append(crop)
    cap.release()
    x = torch.from_numpy(np.stack(out).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_matches_openvino_on_terrace_crops_at_any_batch(shared, model, crops):
    import openvino as ov

    assert model.feature_dim == 256 and model.map_size == (1, 1)
    compiled = ov.Core().compile_model(str(shared / ONNX_REL), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ref = np.concatenate([compiled(c[None].numpy())[0] for c in crops])  # the file's own input is batch 1
    with torch.no_grad():
        ours = model.backbone(crops).flatten(1).numpy()  # batch 8
        single = model.backbone(crops[:1]).flatten(1).numpy()
    assert crops.shape[0] == 8
    assert _cos(ours, ref).min() >= 0.9999, _cos(ours, ref)
    np.testing.assert_allclose(single[0], ours[0], rtol=1e-4, atol=1e-4)
    # the crops are different people / poses: the embeddings are not all alike
    assert _cos(ref[:1].repeat(len(ref), 0), ref).min() < 0.95


def test_checkpoint_round_trip_without_the_onnx_file(model, onnx_path, tmp_path):
    from models.reid.model import load_checkpoint, save_checkpoint

    clips = torch.randn(2, 2, 3, 256, 128)
    with torch.no_grad():
        before = model(clips).embedding
    ckpt = save_checkpoint(tmp_path / "m.pth", model)
    onnx_path.unlink()  # the checkpoint must carry the graph itself
    loaded, payload = load_checkpoint(ckpt)
    assert payload["model_config"]["backbone"] == "onnx_frame"
    with torch.no_grad():
        after = loaded(clips).embedding
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_one_optimizer_step_changes_the_embedding(model, crops):
    import copy

    trained = copy.deepcopy(model)
    clips = crops.view(4, 2, 3, 256, 128)
    with torch.no_grad():
        before = trained(clips).embedding
    trained.train()
    params = [p for p in trained.backbone.parameters() if p.requires_grad]
    assert sum(p.numel() for p in params) > 500_000  # the converted weights are parameters, not buffers
    out = trained(clips)
    loss = torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 0])) + out.global_feature.pow(2).mean()
    opt = torch.optim.SGD(trained.parameters(), lr=0.05)
    opt.zero_grad()
    loss.backward()
    first = next(trained.backbone.net.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0  # gradients reach the first layer
    opt.step()
    trained.eval()
    with torch.no_grad():
        after = trained(clips).embedding
    assert (after - before).abs().max() > 1e-4


def _tiny_onnx(path: Path, op: str, shape: list[int]) -> Path:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node(op, ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_bad_files_give_one_line_errors(tmp_path):
    from models.reid.backbones import build_backbone
    from models.reid.onnx_backbone import ONNXBackboneError

    text = tmp_path / "notes.onnx"
    text.write_text("not a model\n")
    cases = [
        (text, "not an ONNX model"),
        (_tiny_onnx(tmp_path / "hardmax.onnx", "Hardmax", [1, 3, 8, 4]), "cannot convert op Hardmax (opset 13)"),
        (_tiny_onnx(tmp_path / "flat.onnx", "Relu", [1, 256]), "has shape 1x256"),
        (tmp_path / "missing.onnx", "no such file"),
    ]
    for path, expected in cases:
        with pytest.raises(ONNXBackboneError) as err:
            build_backbone("onnx_frame", pretrained=path)
        message = str(err.value)
        assert expected in message and str(path) in message and "\n" not in message, message
    with pytest.raises(ONNXBackboneError, match="set model.pretrained"):
        build_backbone("onnx_frame")


def test_freeze_names(model):
    from pipeline.reid_data.training import _freeze

    frozen = _freeze(model, ["until:Conv_3"])
    names = [n for n, p in model.backbone.net.named_parameters() if not p.requires_grad]
    try:
        assert frozen and names and all(n.split(".")[0] in {"InstanceNormalization", "Conv", "InstanceNormalization_1",
                                                            "Conv_1", "BatchNormalization", "Conv_2", "Conv_3"}
                                        for n in names)
        assert any(p.requires_grad for p in model.backbone.net.parameters())
        with pytest.raises(ValueError, match=r"no submodule 'conv1'; valid: net \(all\), until:NODE"):
            _freeze(model, ["conv1"])
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
        model.bottleneck.bias.requires_grad_(False)


def test_pipeline_encoder_compiles_it_with_openvino_at_any_batch(model, tmp_path, monkeypatch):
    """reid.checkpoint with an onnx_frame model: the CPU start-up compile (OpenVINO, through the ONNX export) keeps
    B dynamic and matches PyTorch."""
    import torch.onnx.symbolic_helper as compat_module
    from onnx2torch.utils import common

    from models.reid.model import save_checkpoint
    from pipeline.reid.encoder import ClipEncoder

    monkeypatch.setenv("MCSA_CACHE", str(tmp_path / "cache"))
    # the pipeline's state: another package imported torch.onnx.symbolic_helper (torch's compatibility module, no
    # GLOBALS) before onnx2torch, whose ONNX export of Shape nodes then failed
    monkeypatch.setattr(common, "symbolic_helper", compat_module)
    ckpt = save_checkpoint(tmp_path / "m.pth", model)
    enc = ClipEncoder(checkpoint=str(ckpt), device="cpu", cpu_threads=1)
    assert enc.backend == "openvino cpu fp32" and enc.embedding_dim == 256
    clips = np.random.RandomState(0).randint(0, 256, (5, 2, 256, 128, 3), dtype=np.uint8)
    emb, probs = enc.encode(clips)
    one, _ = enc.encode(clips[:1])
    x = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float() / 255.0
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (x - mean.view(1, 1, 3, 1, 1)) / std.view(1, 1, 3, 1, 1)
    with torch.no_grad():
        ref = model(x)
    assert emb.shape == (5, 256) and probs.shape == (5, 1) and one.shape == (1, 256)
    assert _cos(emb, ref.embedding.numpy()).min() >= 0.9999
    np.testing.assert_allclose(one[0], emb[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(probs, ref.action_probs.numpy(), atol=1e-4)


def test_short_training_with_frozen_early_nodes(shared, onnx_path, tmp_path):  # onnx_path: skips without it
    """`run_pipeline.py train`'s loop on real Terrace tracklets (~200 frames) with onnx_frame and
    `freeze: [until:Conv_20]`: the frozen nodes keep their weights, later ones move, the checkpoint loads."""
    from models.reid.config import ReIDTrainingConfig
    from models.reid.model import load_checkpoint
    from pipeline.reid_data.export import ExportOptions, export_tracklets
    from pipeline.reid_data.training import train

    s = shared / "data" / "epfl_terrace1"
    data = tmp_path / "tracklets"
    for cam in ("c0", "c1"):
        opts = ExportOptions(camera=cam, split="train", frame_step=3, max_len=8, min_len=4, max_gap=3, min_height=40,
                             min_visibility=1, max_frames=600)
        export_tracklets(s / f"terrace1-{cam}.mp4", s / f"gt_{cam}" / "gt.txt", data, opts)
    src = shared / ONNX_REL  # the module's copy may be deleted by the round-trip test
    cfg = ReIDTrainingConfig.model_validate({
        "name": "onnx_tiny", "actions": [],
        "model": {"backbone": "onnx_frame", "pretrained": str(src), "freeze": ["until:Conv_20"]},
        "data": {"format": "tracklets", "root": str(data), "input_size": [256, 128], "seq_len": 2, "p": 2, "k": 2,
                 "num_workers": 0},
        "train": {"epochs": 1, "iters_per_epoch": 2, "lr": 1e-4, "warmup_epochs": 0, "milestones": [100],
                  "device": "cpu"},
    })
    summary = train(cfg, tmp_path / "run", progress=False)
    trained, _ = load_checkpoint(summary["checkpoint"])
    from models.reid.onnx_backbone import ONNXFrameBackbone

    start = ONNXFrameBackbone(src).net.state_dict()
    after = trained.backbone.net.state_dict()
    frozen = trained.backbone.freeze_modules("until:Conv_20")
    frozen_keys = {f"{n}.{k}" for n, m in trained.backbone.net.named_children() if any(m is f for f in frozen)
                   for k, _ in m.named_parameters()}
    assert frozen_keys and all(torch.equal(after[k], start[k]) for k in frozen_keys)
    moved = [k for k in after if k not in frozen_keys and after[k].is_floating_point()
             and not torch.equal(after[k], start[k]) and "running" not in k]
    assert moved  # later weights were trained
