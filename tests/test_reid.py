"""Re-ID-AR model, weight loading, losses and ranking metrics (fast, tiny inputs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.reid import CheckpointError, ReIDAR, build_backbone, load_checkpoint, save_checkpoint
from models.reid.backbones import BACKBONES, feature_map_size
from models.reid.losses import (
    ActionBCELoss,
    ActionCenterLoss,
    AttentionErasedLoss,
    CenterLoss,
    CrossEntropyLabelSmooth,
    RankedListLoss,
)
from pipeline.reid_data.metrics import action_metrics, evaluate_ranking, hardest_identities, identity_breakdown


def scalar(t) -> float:
    """A tensor's value as a Python float (detached: no autograd warning)."""
    return float(t.detach())


@pytest.mark.parametrize(
    "name,channels",
    [("osnet_x0_25", 128), ("osnet_x0_5", 256), ("osnet_x0_75", 384), ("osnet_x1_0", 512), ("resnet50_ibn_a", 2048)],
)
def test_backbone_shapes(name, channels):
    torch.manual_seed(0)
    net = build_backbone(name).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 32))
    assert out.dtype == torch.float32 and out.shape[:2] == (2, channels)
    # OSNet reduces by 16, ResNet50-IBN-a with last stride 1 by 16 too
    assert tuple(out.shape[2:]) == (4, 2) == feature_map_size(net, 64, 32)
    assert net.out_channels == channels


def test_resnet50_ibn_a_map_size_paper_input():
    assert feature_map_size(build_backbone("resnet50_ibn_a"), 224, 112) == (14, 7)


def test_registry_names():
    assert {"resnet50_ibn_a", "osnet_x0_25", "osnet_x0_5", "osnet_x0_75", "osnet_x1_0"} <= set(BACKBONES.names())


def test_reid_ar_forward_train_and_eval():
    torch.manual_seed(0)
    model = ReIDAR("osnet_x0_25", num_classes=5, action_names=["walk", "run", "stand"], input_size=(64, 32))
    # attention conv kernel sized from the map of the configured input
    assert model.attention.spatial_conv.kernel_size == (4, 2)
    clips = torch.randn(3, 4, 3, 64, 32)
    model.train()
    out = model(clips)
    assert out.global_feature.shape == (3, 512) and out.bn_feature.shape == (3, 512)
    assert out.logits.shape == (3, 5) and out.action_logits.shape == (3, 3)
    assert out.action_features.shape == (3, 3, 512) and out.attention.shape == (3, 4)
    assert not model.bottleneck.bias.requires_grad and model.classifier.bias is None
    model.eval()
    with torch.no_grad():
        inf = model(clips)
    assert inf.embedding.shape == (3, 512) and inf.embedding.dtype == torch.float32
    assert inf.action_probs.shape == (3, 3) and bool(((inf.action_probs >= 0) & (inf.action_probs <= 1)).all())
    torch.testing.assert_close(inf.attention.sum(1), torch.ones(3))


def test_osnet_shared_weights_load_strict(shared):
    path = shared / "models" / "osnet_x0_25_msmt17.pth"
    net = build_backbone("osnet_x0_25", pretrained=path)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    torch.testing.assert_close(net.state_dict()["conv5.conv.weight"], sd["conv5.conv.weight"])
    own = set(net.state_dict())
    assert own == {k for k in sd if not k.startswith("classifier.")}


def test_osnet_prefixed_and_wrapped(tmp_path):
    net = build_backbone("osnet_x0_25")
    wrapped = {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "w.pth.tar")
    other = build_backbone("osnet_x0_25")
    other.load_pretrained(tmp_path / "w.pth.tar")
    torch.testing.assert_close(other.state_dict()["conv1.conv.weight"], net.state_dict()["conv1.conv.weight"])


def test_resnet50_ibn_a_loads_ibn_net_checkpoint(tmp_path):
    torch.manual_seed(1)
    src = build_backbone("resnet50_ibn_a")
    state = {f"module.{k}": v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["module.fc.weight"] = torch.zeros(1000, 2048)  # the ImageNet classifier is ignored
    state["module.fc.bias"] = torch.zeros(1000)
    assert "module.layer1.0.bn1.IN.weight" in state and "module.layer3.5.bn1.BN.running_var" in state
    assert "module.layer4.0.bn1.weight" in state  # no IBN in layer4
    path = tmp_path / "resnet50_ibn_a.pth.tar"
    torch.save({"state_dict": state, "epoch": 100, "arch": "resnet50_ibn_a"}, path)
    dst = build_backbone("resnet50_ibn_a")
    dst.load_imagenet_checkpoint(path)
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)


def test_wrong_files_give_one_clear_line(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError) as e:
        build_backbone("osnet_x0_25", pretrained=junk)
    assert str(junk) in str(e.value) and "\n" not in str(e.value)
    # right file type, wrong network: OSNet weights given to ResNet50-IBN-a
    osnet = tmp_path / "osnet.pth"
    torch.save(build_backbone("osnet_x0_25").state_dict(), osnet)
    with pytest.raises(CheckpointError) as e:
        build_backbone("resnet50_ibn_a").load_imagenet_checkpoint(osnet)
    msg = str(e.value)
    assert str(osnet) in msg and "ResNet50-IBN-a" in msg and "missing" in msg and "\n" not in msg
    # wrong width
    with pytest.raises(CheckpointError, match="wrong shape"):
        build_backbone("osnet_x0_5", pretrained=osnet)
    # a backbone file where a Re-ID-AR checkpoint is expected
    with pytest.raises(CheckpointError, match="not a Re-ID-AR checkpoint"):
        load_checkpoint(osnet)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pth")


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = ReIDAR("osnet_x0_25", 7, ["a", "b"], (64, 32))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    path = save_checkpoint(tmp_path / "m.pth", model, epoch=4, optimizer=opt)
    loaded, payload = load_checkpoint(path)
    assert payload["epoch"] == 4 and payload["backbone"] == "osnet_x0_25" and payload["action_names"] == ["a", "b"]
    assert payload["optimizer"] is not None and loaded.input_size == (64, 32)
    x = torch.randn(2, 3, 3, 64, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).embedding, model(x).embedding)


def test_embedding_choice_and_normalisation(tmp_path):
    """`embedding` picks the BNNeck output or the pooled feature before it; `normalize_embedding` makes it unit
    length per clip and per tracklet; both survive a checkpoint round trip."""
    from pipeline.reid_data.datasets import Tracklet
    from pipeline.reid_data.video import extract_tracklet_features

    torch.manual_seed(0)
    model = ReIDAR("osnet_x0_25", 3, [], (64, 32), embedding="global", normalize_embedding=True)
    with torch.no_grad():
        model.bottleneck.running_mean.fill_(0.5)  # a BN that is not the identity
    model.eval()
    x = torch.randn(2, 3, 3, 64, 32)
    with torch.no_grad():
        emb = model(x).embedding
        fmap, feat = model.frame_features(x.flatten(0, 1))
        att = model.attention(fmap, 2, 3)
        pooled = (att.unsqueeze(2) * feat.view(2, 3, -1)).sum(1)
    torch.testing.assert_close(emb, torch.nn.functional.normalize(pooled, dim=1))
    loaded, payload = load_checkpoint(save_checkpoint(tmp_path / "m.pth", model))
    assert payload["model_config"]["embedding"] == "global" and loaded.normalize_embedding
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).embedding, emb)
    model.embedding_kind, model.normalize_embedding = "bn", False
    with torch.no_grad():
        torch.testing.assert_close(model(x).embedding, model.bottleneck(pooled))
    with pytest.raises(ValueError, match="embedding"):
        ReIDAR("osnet_x0_25", 3, [], (64, 32), embedding="pre")
    # tracklet features: the mean of several clips is re-normalised
    from PIL import Image

    paths = []
    for i in range(5):
        Image.new("RGB", (16, 32), (40 * i, 80, 200 - 30 * i)).save(tmp_path / f"{i:06d}.jpg")
        paths.append(str(tmp_path / f"{i:06d}.jpg"))
    model.normalize_embedding = True
    feats, _ = extract_tracklet_features(model, [Tracklet(paths, 1, 0)], 2, (64, 32))
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(1))


def test_old_checkpoint_config_defaults_to_bn(tmp_path):
    """Checkpoints written before `embedding` existed load with the old behaviour (BNNeck output, no normalising)."""
    model = ReIDAR("osnet_x0_25", 2, [], (64, 32))
    path = save_checkpoint(tmp_path / "old.pth", model)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    del payload["model_config"]["embedding"], payload["model_config"]["normalize_embedding"]
    torch.save(payload, path)
    loaded, _ = load_checkpoint(path)
    assert loaded.embedding_kind == "bn" and not loaded.normalize_embedding


# ---------------------------------------------------------------------------------------------------------- losses


def _grad_ok(loss, x):
    loss.backward()
    assert torch.isfinite(loss) and x.grad is not None and torch.isfinite(x.grad).all()


def test_label_smoothing_ce():
    logits = torch.randn(4, 6, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    _grad_ok(CrossEntropyLabelSmooth(0.1)(logits, y), logits)
    confident = torch.full((2, 3), -20.0)
    confident[0, 0] = confident[1, 2] = 20.0
    assert CrossEntropyLabelSmooth(0.0)(confident, torch.tensor([0, 2])) < 1e-6


def test_ranked_list_loss_zero_and_positive():
    rll = RankedListLoss(margin=1.3, alpha=2.0, t=1.0, normalize=False)
    # two classes: positives within 0.5 (< alpha - margin = 0.7), negatives 10 apart (> alpha)
    x = torch.tensor([[0.0, 0.0], [0.5, 0.0], [10.0, 0.0], [10.5, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    assert scalar(rll(x, y).detach()) == 0.0
    # positives 1.0 apart (pull 0.3 each), negatives 1.5 apart (push 0.5, single negative -> weight 1)
    x2 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.5], [1.0, 1.5]], requires_grad=True)
    loss = rll(x2, y)
    # each anchor: L_P = 0.3; negatives at 1.5 and sqrt(1 + 2.25) = 1.803, weighted by exp(alpha - d)
    d = torch.tensor([1.5, math.sqrt(3.25)])
    w = torch.exp(2.0 - d)
    expected = 0.3 + scalar((w / w.sum() * (2.0 - d)).sum())
    assert abs(scalar(loss.detach()) - expected) < 1e-5
    _grad_ok(loss, x2)
    xn = torch.randn(8, 16, requires_grad=True)
    _grad_ok(RankedListLoss()(xn, torch.arange(4).repeat_interleave(2)), xn)


def test_center_loss():
    c = CenterLoss(3, 4)
    x = c.centers.detach()[[0, 2]].clone().requires_grad_(True)
    assert scalar(c(x, torch.tensor([0, 2])).detach()) < 1e-6
    x2 = torch.randn(5, 4, requires_grad=True)
    _grad_ok(c(x2, torch.tensor([0, 1, 2, 0, 1])), x2)


def test_attention_erased_loss():
    loss = AttentionErasedLoss()
    erased = torch.tensor([[True, False, False, False], [False, False, False, False]])
    low = torch.tensor([[0.0, 1 / 3, 1 / 3, 1 / 3], [0.25, 0.25, 0.25, 0.25]])
    assert scalar(loss(low, erased)) == 0.0
    logits = torch.zeros(2, 4, requires_grad=True)
    value = loss(torch.softmax(logits, 1), erased)
    assert abs(scalar(value) - 0.25) < 1e-6  # uniform attention: a quarter of the mass on the erased frame
    _grad_ok(value, logits)
    assert logits.grad[0, 0] > 0 and logits.grad[1].abs().sum() == 0
    assert scalar(loss(torch.full((1, 2), 0.5), torch.tensor([[True, True]]))) == 0.0  # all erased: no signal


def test_action_losses_ignore_unlabelled():
    bce = ActionBCELoss()
    logits = torch.tensor([[8.0, -8.0, -8.0], [0.0, 0.0, 0.0]], requires_grad=True)
    assert scalar(bce(logits, torch.tensor([1, 0]))) < 1e-3  # second clip unlabelled
    value = bce(logits, torch.tensor([2, 3]))
    _grad_ok(value, logits)
    assert scalar(bce(logits.detach(), torch.tensor([0, 0]))) == 0.0
    acl = ActionCenterLoss(3, 5)
    feats = torch.randn(4, 3, 5, requires_grad=True)
    _grad_ok(acl(feats, torch.tensor([1, 0, 3, 2])), feats)
    assert feats.grad[1].abs().sum() == 0  # unlabelled clip gets no gradient
    assert feats.grad[0, 1:].abs().sum() == 0  # only the block of the clip's own action is pulled


# --------------------------------------------------------------------------------------------------------- metrics


def test_ranking_hand_checked():
    # 2 queries, 5 gallery entries; distances chosen by hand
    q_pids, q_cams = [1, 2], [0, 0]
    g_pids = [1, 2, 1, 3, 2]
    g_cams = [0, 1, 1, 1, 1]
    dist = np.array([
        [0.1, 0.2, 0.5, 0.3, 0.9],  # order: g0 (pid1 cam0 = same pid & cam -> dropped), g1 x, g3 x, g2 hit, g4 x
        [0.4, 0.1, 0.6, 0.2, 0.3],  # order: g1 hit, g3 x, g4 hit, g0 x, g2 x
    ])
    res = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, ranks=(1, 2, 3, 5))
    # q1: first hit at rank 3 -> AP 1/3. q2: hits at ranks 1 and 3 -> AP (1 + 2/3) / 2 = 5/6
    assert res["rank1"] == 0.5 and res["rank2"] == 0.5 and res["rank3"] == 1.0 and res["rank5"] == 1.0
    assert abs(res["mAP"] - (1 / 3 + 5 / 6) / 2) < 1e-9
    assert res["num_query"] == 2


def test_action_metrics_hand_checked():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.5, 0.1]])
    labels = np.array([1, 2, 2, 2, 0])  # last unlabelled: dropped
    m = action_metrics(probs, labels, ["walk", "run"])
    assert m["walk"]["precision"] == 0.5 and m["walk"]["recall"] == 1.0
    assert abs(m["run"]["f1"] - 0.8) < 1e-9 and m["_overall"]["accuracy"] == 0.75
    assert (m["walk"]["support"], m["walk"]["predicted"], m["run"]["support"], m["run"]["predicted"]) == (1, 2, 3, 2)


def test_cuda_batches_pad_to_few_sizes_and_padding_changes_nothing():
    """On CUDA the encoder pads each batch to `padded_batch(b)` (few shapes: cuDNN tunes each once, warm_up runs them
    before the first frame). The padded rows must not change the real ones: eval-mode layers treat clips apart."""
    from pipeline.reid.encoder import ClipEncoder, padded_batch

    sizes = {padded_batch(b) for b in range(1, 257)}
    assert sizes == {1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256}
    for b in range(1, 1200):
        n = padded_batch(b)
        assert n >= b and (b <= 8 or b > 256 or n <= 1.5 * b) and (b <= 256 or n % 256 == 0)  # padding <= 1/3
    torch.manual_seed(0)
    model = ReIDAR("osnet_x0_25", num_classes=3, action_names=["walking", "standing"], input_size=(64, 32)).eval()
    x = torch.rand(5, 4, 3, 64, 32)
    padded = torch.cat([x, torch.zeros(padded_batch(5) - 5, 4, 3, 64, 32)])
    with torch.inference_mode():
        a, b = model(x), model(padded)
    assert padded.shape[0] == 8
    assert torch.allclose(a.embedding, b.embedding[:5], atol=1e-5)
    assert torch.allclose(a.action_probs, b.action_probs[:5], atol=1e-5)
    enc = ClipEncoder.from_model(model, device="cpu", cpu_backend="torch")
    assert enc.warm_up(64, 4) == 0  # nothing to tune on the CPU
    emb, probs = enc.encode(np.zeros((3, 4, 64, 32, 3), np.uint8))
    assert emb.shape[0] == 3 and probs.shape == (3, 2)


def test_identity_breakdown_names_the_look_alike():
    # the same hand-checked ranking as above, plus a query of pid 3 whose only true match ranks after a pid-2 entry
    q_pids, q_cams = [1, 2, 3], [0, 0, 0]
    g_pids = [1, 2, 1, 3, 2]
    g_cams = [0, 1, 1, 1, 1]
    dist = np.array([
        [0.1, 0.2, 0.5, 0.3, 0.9],  # pid 1: g1 (pid 2) and g3 (pid 3) above its hit g2 -> AP 1/3
        [0.4, 0.1, 0.6, 0.2, 0.3],  # pid 2: hits at ranks 1 and 3, g3 (pid 3) between -> AP 5/6
        [0.5, 0.1, 0.9, 0.4, 0.2],  # pid 3: g1, g4 (both pid 2) above its hit g3 -> AP 1/3
    ])
    by = identity_breakdown(dist, q_pids, g_pids, q_cams, g_cams)
    assert set(by) == {1, 2, 3}
    assert abs(by[1]["mAP"] - 1 / 3) < 1e-9 and by[1]["rank1"] == 0.0 and by[1]["wrong_above"] == 2
    assert abs(by[2]["mAP"] - 5 / 6) < 1e-9 and by[2]["rank1"] == 1.0 and by[2]["confused_with"] == 3
    assert abs(by[3]["mAP"] - 1 / 3) < 1e-9 and by[3]["confused_with"] == 2 and by[3]["confused_count"] == 2
    assert by[3]["wrong_above"] == 2
    # the identities' mean AP over queries is evaluate_ranking's mAP (one query each here)
    res = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams)
    assert abs(np.mean([v["mAP"] for v in by.values()]) - res["mAP"]) < 1e-9
    # a perfect ranking confuses nobody
    perfect = identity_breakdown(np.array([[0.0, 1.0], [1.0, 0.0]]), [1, 2], [1, 2], [0, 0], [1, 1])
    assert all(v["confused_with"] is None and v["mAP"] == 1.0 for v in perfect.values())
    assert hardest_identities(perfect) == []
    hard = hardest_identities(by, 2)  # the lowest mAP first: pid 1 (1/3, first by the stable sort), then pid 3
    assert len(hard) == 2 and hard[0].startswith("1 (1 queries, mAP 0.333): mixed up with 2")
    assert hard[1].startswith("3 (1 queries, mAP 0.333): mixed up with 2 (2 of 2 entries")
