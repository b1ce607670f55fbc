"""Re-ID-AR export (ONNX / OpenVINO / TensorRT), the runtimes that load it back, and foreign frame re-id models.

Small models (OSNet x0.25 at 128x64, T = 2) are exported in the test and compared with PyTorch on real crops cut from
the shared EPFL Terrace video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.reid import ReIDAR, save_checkpoint
from models.reid.export import ExportError, check_export, export_reid_ar, normalise_clips, tensorrt_unavailable_reason
from models.reid.runtimes import (
    ExportedReIDAR,
    FrameReIDModel,
    RuntimeLoadError,
    openvino_ir_input_spec,
    resolve_input_spec,
)

SIZE = (128, 64)
T = 2
TOL = 1e-4
OMZ = "models/openvino_reid/person-reidentification-retail-{0}/{1}/person-reidentification-retail-{0}.xml"


@pytest.fixture(scope="module")
def small_model(shared) -> ReIDAR:
    torch.manual_seed(0)
    model = ReIDAR("osnet_x0_25", num_classes=4, action_names=["walking", "standing"], input_size=SIZE,
                   pretrained=str(shared / "models/osnet_x0_25_msmt17.pth"), temporal_attention=True)
    for block in model.actions:  # non-trivial action heads (BN statistics away from the identity)
        block.bn.running_mean.uniform_(-0.5, 0.5)
        block.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def real_clips(shared) -> np.ndarray:
    from pipeline.reid_data.sample_clips import terrace_clips

    clips = terrace_clips(shared, 16, T, SIZE)
    assert clips.shape == (16, T, *SIZE, 3) and clips.dtype == np.uint8
    return clips


@pytest.fixture(scope="module")
def onnx_export(small_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export_onnx")
    meta = export_reid_ar(small_model, out, "onnx", clip_len=T)
    return out, meta


def test_onnx_export_metadata_and_parity_at_batch_1_8_64(small_model, real_clips, onnx_export):
    pytest.importorskip("onnxruntime")
    out, meta = onnx_export
    assert (out / "model.onnx").is_file() and (out / "metadata.json").is_file()
    assert meta.input_size == SIZE and meta.embedding_dim == 512 and meta.action_names == ["walking", "standing"]
    report = check_export(small_model, out, "onnx", real_clips, (1, 8, 64), repeats=0)
    assert set(report["batches"]) == {"1", "8", "64"}
    assert report["runtime"].startswith("onnxruntime")
    assert report["max_cosine_distance"] < TOL and report["max_abs_action_probs"] < TOL
    assert (out / "parity.json").is_file()


def test_export_has_dynamic_clip_length(small_model, real_clips, onnx_export):
    pytest.importorskip("onnxruntime")
    exported = ExportedReIDAR(onnx_export[0], backend="onnxruntime")
    for t in (1, 3):  # T = 1: the per-detection embedder; T = 3: another clip_len than the export's
        clips = np.concatenate([real_clips[:4], real_clips[4:8]], axis=1)[:, :t]
        x = normalise_clips(clips)
        with torch.inference_mode():
            ref = small_model(torch.from_numpy(x))
        emb, probs = exported.encode(x)
        assert emb.shape == (4, 512) and probs.shape == (4, 2)
        assert np.abs(emb - ref.embedding.numpy()).max() < 1e-3
        assert np.abs(probs - ref.action_probs.numpy()).max() < TOL


def test_pipeline_encoder_runs_an_export_folder(small_model, real_clips, onnx_export):
    pytest.importorskip("onnxruntime")
    from pipeline.config import ReIDStageConfig
    from pipeline.reid import ClipEncoder

    ref_emb, ref_probs = ClipEncoder.from_model(small_model, device="cpu", cpu_backend="torch").encode(real_clips)
    for backend in ("onnxruntime", "auto"):
        enc = ClipEncoder.from_config(ReIDStageConfig(checkpoint=str(onnx_export[0]), device="cpu",
                                                      cpu_backend=backend))
        assert enc.action_names == ["walking", "standing"] and enc.actions_trained
        assert enc.input_size == SIZE and enc.embedding_dim == 512
        emb, probs = enc.encode(real_clips)
        cos = (emb * ref_emb).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref_emb, axis=1)
        assert 1 - cos.min() < TOL and np.abs(probs - ref_probs).max() < TOL
    assert "onnxruntime" in ClipEncoder(str(onnx_export[0]), device="cpu", cpu_backend="onnxruntime").backend


def test_export_command_openvino_writes_folder_and_checks_parity(small_model, tmp_path, shared):
    pytest.importorskip("openvino")
    import json

    from pipeline.cli import main

    ckpt = save_checkpoint(tmp_path / "small.pth", small_model)
    out = tmp_path / "exported"
    rc = main(["export", "--checkpoint", str(ckpt), "--format", "openvino", "--output", str(out), "--clip-len", "2",
               "--batches", "1", "4"])
    assert rc == 0
    assert (out / "model.xml").is_file() and (out / "model.bin").is_file() and (out / "model.onnx").is_file()
    report = json.loads((out / "parity.json").read_text())
    assert report["ok"] and set(report["batches"]) == {"1", "4"} and report["tolerance"] == TOL
    assert report["runtime"].startswith("openvino") and "model.xml" in report["runtime"]
    assert report["max_cosine_distance"] < TOL and report["max_abs_action_probs"] < TOL
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["action_names"] == ["walking", "standing"] and meta["clip_len"] == 2
    assert meta["files"] == {"onnx": "model.onnx", "openvino": "model.xml"}


def test_tensorrt_on_a_machine_without_it_says_so_in_one_line(tmp_path, capsys, shared):
    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT and CUDA present: the engine is built (see bench), nothing to refuse")
    from pipeline.cli import main

    rc = main(["export", "--checkpoint", str(shared / "models/osnet_x0_25_msmt17.pth"), "--format", "tensorrt",
               "--output", str(tmp_path / "trt")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and err.startswith("TensorRT engine not built")
    assert not (tmp_path / "trt").exists()
    with pytest.raises(ExportError, match="TensorRT engine not built"):
        export_reid_ar(torch.nn.Identity(), tmp_path / "trt2", "tensorrt")


def _export_frame_model(model: ReIDAR, path, dynamic_batch: bool = True) -> None:
    """An OSNet frame model as torchreid / BoxMOT export it: (N, 3, H, W) RGB ImageNet-normalised -> (N, 512)."""

    class Frame(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.frame_features(x)[1]

    with torch.no_grad():
        torch.onnx.export(Frame(model).eval(), (torch.zeros(2, 3, *SIZE),), str(path), dynamo=False,
                          input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "n"}} if dynamic_batch else None)


def test_foreign_onnx_frame_model_equals_pytorch_frame_mean(small_model, real_clips, tmp_path):
    pytest.importorskip("onnxruntime")
    from pipeline.reid import ClipEncoder

    path = tmp_path / "osnet_frames.onnx"
    _export_frame_model(small_model, path, dynamic_batch=False)  # static batch 2: run in chunks
    frames = real_clips.reshape(-1, *SIZE, 3)
    with torch.inference_mode():
        ref = small_model.frame_features(torch.from_numpy(normalise_clips(frames[:, None])[:, 0]))[1].numpy()
    for spec in (f"onnx:{path}", f"openvino:{path}"):
        model = FrameReIDModel(spec)
        assert model.input.size == SIZE and model.input.color == "rgb" and model.embedding_dim == 512
        assert np.abs(model.embed(frames[:5]) - ref[:5]).max() < 1e-3  # 5: odd count through a static batch of 2
    enc = ClipEncoder(None, f"onnx:{path}", None, (256, 128), device="cpu")
    emb, probs = enc.encode(real_clips)
    assert enc.input_size == SIZE and probs.shape == (len(real_clips), 0) and enc.action_names == []
    clip_ref = ref.reshape(len(real_clips), T, -1).mean(1)  # clip embedding = mean of the frame embeddings
    assert np.abs(emb - clip_ref).max() < 1e-3


def test_open_model_zoo_ir_input_spec_comes_from_the_ir(shared):
    pytest.importorskip("openvino")
    xml = shared / OMZ.format("0288", "FP32")
    params = openvino_ir_input_spec(xml)
    assert params["reverse_input_channels"] and params["normalised_inside"]
    assert params["mean_values"] == (123.675, 116.28, 103.53) and params["scale_values"] == (58.395, 57.12, 57.375)
    fp32 = FrameReIDModel(f"openvino:{xml}")
    assert fp32.input.color == "bgr" and fp32.input.mean == (0.0, 0.0, 0.0) and fp32.input_size == (256, 128)
    assert fp32.runtime.static_batch is None  # batch 1 IR reshaped to a dynamic batch
    assert fp32.embedding_dim == 256


def test_open_model_zoo_precisions_agree_and_channel_order_matters(shared, real_clips):
    pytest.importorskip("openvino")
    import cv2

    crops = np.stack([cv2.resize(c, (128, 256)) for c in real_clips[:6, 0]])
    fp32 = FrameReIDModel(f"openvino:{shared / OMZ.format('0287', 'FP32')}")
    fp16 = FrameReIDModel(f"openvino:{shared / OMZ.format('0287', 'FP16')}")
    wrong = FrameReIDModel(f"openvino:{shared / OMZ.format('0287', 'FP32')}", color="rgb", mean=(0, 0, 0),
                           std=(1 / 255,) * 3)

    def cos(a, b):
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    a = fp32.embed(crops)
    assert cos(a, fp16.embed(crops)).min() > 0.99
    assert cos(a, wrong.embed(crops)).mean() < 0.95  # feeding RGB where the IR wants BGR changes the embedding


def test_wrong_files_and_shapes_give_one_clear_line(tmp_path, shared, onnx_export):
    pytest.importorskip("onnxruntime")
    from pipeline.reid import ClipEncoder, ReIDLoadError

    def one_line(exc_info) -> str:
        text = str(exc_info.value)
        assert "\n" not in text
        return text

    with pytest.raises(RuntimeLoadError) as e:
        FrameReIDModel(f"onnx:{tmp_path / 'missing.onnx'}")
    assert "no such model file" in one_line(e)
    bogus = tmp_path / "bogus.onnx"
    bogus.write_text("not a model")
    with pytest.raises(RuntimeLoadError) as e:
        FrameReIDModel(f"onnx:{bogus}")
    assert "not a loadable ONNX model" in one_line(e)
    with pytest.raises(RuntimeLoadError) as e:
        FrameReIDModel(f"onnx:{shared / 'models/osnet_x0_25_msmt17.pth'}")
    assert "onnx: takes an .onnx file" in one_line(e)
    xml = tmp_path / "lonely.xml"
    xml.write_text("<net/>")
    with pytest.raises(RuntimeLoadError) as e:
        FrameReIDModel(f"openvino:{xml}")
    assert "weights lonely.bin are missing" in one_line(e)
    flat = tmp_path / "flat.onnx"  # input rank 2: not an image model
    torch.onnx.export(torch.nn.Linear(8, 4).eval(), (torch.zeros(1, 8),), str(flat), dynamo=False,
                      input_names=["x"])
    with pytest.raises(RuntimeLoadError) as e:
        FrameReIDModel(f"onnx:{flat}")
    assert "has rank 2" in one_line(e)
    with pytest.raises(ReIDLoadError) as e:  # the encoder says the same thing through the pipeline's error
        ClipEncoder(None, f"onnx:{flat}", None, device="cpu")
    assert "has rank 2" in one_line(e)
    with pytest.raises(ReIDLoadError) as e:  # an embedding of another size than the gallery's
        ClipEncoder(str(onnx_export[0]), device="cpu", embedding_dim=256)
    assert "512-d embeddings, but reid.embedding_dim is 256" in one_line(e)
    with pytest.raises(ReIDLoadError) as e:
        ClipEncoder(str(tmp_path), device="cpu")  # a folder that is not an export
    assert "not an export folder" in one_line(e)
