"""Re-ID-AR training recipe of the official code (issue #22), on a tiny MARS-format data set written by the test:
the identity-pass sampler (16 x 4 batches, each identity once per epoch), junk tracklets out of the gallery, the
feature each metric loss sees, per-frame augmentation, the erasing fill, the attention-loss forms, the official
label-smoothing option (hand-computed), the dense-clip cap, the paper configs, and a short run of the paper recipe."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.reid.losses import AttentionErasedLoss, CenterLoss, CrossEntropyLabelSmooth, RankedListLoss, ReIDARLoss
from models.reid.model import ReIDARTrainOutput
from pipeline.reid_data.datasets import load_mars
from pipeline.reid_data.sampling import RandomIdentitySampler, dense_clips
from pipeline.reid_data.transforms import IMAGENET_MEAN, ClipTransform

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture
def one_thread():
    """One torch thread for the model tests: on a loaded 2-core machine, 2 threads ran ~10x slower than 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
N_TRAIN_IDS = 40  # 40 // 16 = 2 full batches per identity pass


def _mars_name(pid: int, cam: int, tracklet: int, frame: int) -> str:
    return f"{pid:04d}C{cam}T{tracklet:04d}F{frame:03d}.jpg" if pid >= 0 else f"00-1C{cam}T{tracklet:04d}F{frame:03d}.jpg"


@pytest.fixture(scope="module")
def tiny_mars(tmp_path_factory) -> Path:
    """MARS layout: bbox_train/<pid4>/, bbox_test/<pid4>/ (junk in 00-1/, distractors in 0000/), info/{train,test}
    _name.txt, tracks_{train,test}_info.mat (start, end, pid, camid; 1-based rows), query_IDX.mat, and action files
    `image_name action` parallel to the name lists. 40 training ids with 2..6 tracklets of 3..9 frames of 32x16."""
    from scipy.io import savemat

    root = tmp_path_factory.mktemp("tiny_mars") / "MARS"
    (root / "info").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = {"train": [], "test": []}
    info = {"train": [], "test": []}
    acts = {"train": [], "test": []}
    query_rows = []

    def add(split: str, pid: int, cam: int, tracklet: int, n: int, action: int) -> int:
        folder = root / f"bbox_{split}" / _mars_name(pid, cam, tracklet, 1)[:4]
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array([(pid * 53) % 256, (pid * 97) % 256, (pid * 31) % 256], np.uint8)
        start = len(names[split]) + 1
        for f in range(n):
            img = np.clip(colour + rng.integers(-20, 20, (32, 16, 3)), 0, 255).astype(np.uint8)
            name = _mars_name(pid, cam, tracklet, f + 1)
            Image.fromarray(img).save(folder / name)
            names[split].append(name)
            acts[split].append(action)
        info[split].append([start, len(names[split]), pid, cam])
        return len(info[split]) - 1

    t = 0
    for pid in range(1, N_TRAIN_IDS + 1):
        for j in range(2 + pid % 5):  # 2..6 tracklets per identity
            t += 1
            add("train", pid, 1 + j % 2, t, 3 + (pid + j) % 7, 1 + (pid + j) % 3)
    for pid in range(101, 105):  # test people: one query (camera 1) and two gallery tracklets (cameras 2 and 3)
        query_rows.append(add("test", pid, 1, pid, 5, 1 + pid % 3))
        add("test", pid, 2, pid + 10, 6, 1 + pid % 3)
        add("test", pid, 3, pid + 20, 4, 2)
    add("test", -1, 2, 900, 4, 1)  # junk
    add("test", -1, 3, 901, 5, 2)
    add("test", 0, 2, 902, 4, 3)  # distractor
    for split in ("train", "test"):
        (root / "info" / f"{split}_name.txt").write_text("\n".join(names[split]) + "\n")
        savemat(root / "info" / f"tracks_{split}_info.mat", {f"track_{split}_info": np.array(info[split], np.float64)})
        (root / f"act_{split}.txt").write_text("".join(f"{n} {a}\n" for n, a in zip(names[split], acts[split])))
    savemat(root / "info" / "query_IDX.mat", {"query_IDX": np.array([[r + 1 for r in query_rows]], np.float64)})
    return root


# --------------------------------------------------------------------------------------------------------- sampler


def test_identity_pass_sampler_yields_16x4_batches(tiny_mars):
    ds = load_mars(tiny_mars, "act_train.txt", "act_test.txt")
    assert ds.relabel_train() == N_TRAIN_IDS
    pids = [t.pid for t in ds.train]
    sampler = RandomIdentitySampler(pids, p=16, k=4, seed=0, epoch="identities")
    assert len(sampler) == N_TRAIN_IDS // 16 == 2
    for _ in range(3):  # every epoch: 2 batches of 16 distinct identities x 4 tracklets, no identity twice
        batches = list(sampler)
        assert len(batches) == 2
        seen = set()
        for b in batches:
            assert len(b) == 64
            ids = [pids[i] for i in b]
            assert len(set(ids)) == 16 and all(ids.count(p) == 4 for p in set(ids))
            # an identity with >= 4 tracklets gives 4 different ones; fewer: drawn with replacement
            for p in set(ids):
                own = {i for i in b if pids[i] == p}
                assert len(own) == 4 if pids.count(p) >= 4 else len(own) <= pids.count(p)
            assert not seen & set(ids)
            seen |= set(ids)
        assert len(seen) == 32  # one pass: 40 ids, the 8 of the incomplete last batch dropped
    # the default epoch covers all tracklets: more iterations than identities // P
    all_tracklets = RandomIdentitySampler(pids, p=16, k=4, seed=0)
    assert len(all_tracklets) == sum(max(1, pids.count(p) // 4) for p in set(pids)) // 16
    with pytest.raises(ValueError, match="epoch"):
        RandomIdentitySampler(pids, 16, 4, epoch="frames")


# --------------------------------------------------------------------------------------------------------- gallery


def test_junk_tracklets_excluded_from_gallery(tiny_mars):
    ds = load_mars(tiny_mars, "act_train.txt", "act_test.txt")
    assert [t.pid for t in ds.query] == [101, 102, 103, 104]
    assert -1 not in {t.pid for t in ds.gallery}
    assert 0 in {t.pid for t in ds.gallery}  # distractors stay
    assert len(ds.gallery) == 8 + 1
    kept = load_mars(tiny_mars, "act_train.txt", "act_test.txt", gallery_junk="keep")
    assert sorted(t.pid for t in kept.gallery).count(-1) == 2 and len(kept.gallery) == 11
    with pytest.raises(ValueError, match="gallery_junk"):
        load_mars(tiny_mars, gallery_junk="maybe")


def test_dense_clip_cap_first_or_evenly():
    assert dense_clips(200, 4, 41, "first") == [list(range(s, s + 4)) for s in range(0, 164, 4)]
    evenly = dense_clips(200, 4, 41, "evenly")
    assert len(evenly) == 41 and evenly[0] == [0, 1, 2, 3] and evenly[-1] == [196, 197, 198, 199]
    assert dense_clips(10, 4, 41, "first") == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]]


# --------------------------------------------------------------------------------------------------------- losses


def _out(global_feature: torch.Tensor, bn_feature: torch.Tensor, b: int, t: int = 4) -> ReIDARTrainOutput:
    return ReIDARTrainOutput(global_feature, bn_feature, torch.zeros(b, 3), torch.zeros(b, 0),
                             torch.zeros(b, 0, 1), torch.full((b, t), 1.0 / t), torch.zeros(b, t))


def test_metric_losses_receive_the_configured_feature():
    # global: each identity's two clips coincide, identities far apart -> ranked list loss 0
    # bn: all four clips close together -> negatives inside alpha -> ranked list loss > 0
    pids = torch.tensor([0, 0, 1, 1])
    glob = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    bn = torch.tensor([[0.0, 1.0], [0.1, 1.0], [0.2, 1.0], [0.3, 1.0]], requires_grad=True)
    erased = torch.zeros(4, 4, dtype=torch.bool)
    rll = RankedListLoss()
    assert float(rll(glob, pids).detach()) == 0.0 and float(rll(bn, pids).detach()) > 0.5
    for kind, feat, other in (("bn", bn, glob), ("global", glob, bn)):
        crit = ReIDARLoss(2, 2, 0, ranked_feature=kind, center_feature=kind, w_id=0, w_attention=0, w_action=0,
                          w_action_center=0)
        _, terms = crit(_out(glob, bn, 4), pids, torch.zeros(4, dtype=torch.long), erased)
        assert terms["ranked"] == pytest.approx(float(rll(feat, pids).detach()), abs=1e-6)
        assert terms["ranked"] != pytest.approx(float(rll(other, pids).detach()), abs=1e-3)
        center = CenterLoss(2, 2)
        center.load_state_dict(crit.center.state_dict())
        assert terms["center"] == pytest.approx(float(center(feat, pids).detach()), abs=1e-6)
        assert terms["center"] != pytest.approx(float(center(other, pids).detach()), abs=1e-3)
    # mixed: ranked list on bn, center on global; gradients reach exactly the chosen tensors
    crit = ReIDARLoss(2, 2, 0, ranked_feature="bn", center_feature="global", w_id=0, w_center=0, w_attention=0,
                      w_action=0, w_action_center=0)
    total, _ = crit(_out(glob, bn, 4), pids, torch.zeros(4, dtype=torch.long), erased)
    total.backward()
    assert bn.grad is not None and bn.grad.abs().sum() > 0 and glob.grad is None
    with pytest.raises(ValueError, match="ranked_feature"):
        ReIDARLoss(2, 2, 0, ranked_feature="pooled")


def test_official_label_smoothing_hand_computed():
    """The official code builds the smoothed target with the batch size B as the number of classes:
    (1 - eps) * one-hot + eps / B over all N logits. B = 2 clips, N = 3 identities, eps = 0.1."""
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([2, 0])
    lse = math.log(math.e + math.e ** 2 + math.e ** 3)  # 3.40760596
    row0 = [1 - lse, 2 - lse, 3 - lse]  # log-probabilities of clip 0
    row1 = [-math.log(3)] * 3
    # official: target 0.9 on the true class + 0.1 / 2 = 0.05 on every class
    official = (-(0.9 * row0[2] + 0.05 * sum(row0)) - (0.9 * row1[0] + 0.05 * sum(row1))) / 2
    # correct: 0.1 / 3 on every class
    correct = (-(0.9 * row0[2] + 0.1 / 3 * sum(row0)) - (0.9 * row1[0] + 0.1 / 3 * sum(row1))) / 2
    assert official == pytest.approx(0.865764583, abs=1e-8) and correct == pytest.approx(0.803109127, abs=1e-8)
    got_official = float(CrossEntropyLabelSmooth(0.1, smooth_classes="batch")(logits, targets))
    got_correct = float(CrossEntropyLabelSmooth(0.1)(logits, targets))
    assert got_official == pytest.approx(official, abs=1e-6)
    assert got_correct == pytest.approx(correct, abs=1e-6)
    # through the combined loss and its option name
    crit = ReIDARLoss(3, 2, 0, smooth_classes="batch", w_ranked=0, w_center=0, w_attention=0, w_action=0,
                      w_action_center=0)
    out = _out(torch.zeros(2, 2), torch.zeros(2, 2), 2)
    out.logits = logits
    total, terms = crit(out, targets, torch.zeros(2, dtype=torch.long), torch.zeros(2, 4, dtype=torch.bool))
    assert float(total) == pytest.approx(official, abs=1e-6) and terms["id"] == pytest.approx(official, abs=1e-6)


def test_attention_loss_forms():
    erased = torch.tensor([[True, False, False, False], [False, False, False, False], [True, True, True, True]])
    scores = torch.tensor([[2.0, 1.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 1.0]], requires_grad=True)
    # official: erased scores summed per clip, averaged over ALL clips: (2 + 0 + 2) / 3
    value = AttentionErasedLoss("scores")(scores, erased)
    assert float(value.detach()) == pytest.approx(4.0 / 3.0)
    value.backward()
    assert torch.equal(scores.grad, erased.float() / 3)
    # the project's default form: softmax mass, only on clips with erased and clean frames (clip 0 alone)
    att = torch.softmax(scores.detach(), 1)
    assert float(AttentionErasedLoss()(att, erased)) == pytest.approx(float(att[0, 0]))
    with pytest.raises(ValueError, match="form"):
        AttentionErasedLoss("logits")


def test_model_exposes_pre_softmax_attention_scores(one_thread):
    from models.reid.model import ReIDAR

    torch.manual_seed(0)
    model = ReIDAR("osnet_x0_25", num_classes=3, input_size=(64, 32)).train()
    out = model(torch.randn(2, 4, 3, 64, 32))
    assert out.attention_scores.shape == (2, 4) and bool((out.attention_scores >= 0).all())
    assert torch.allclose(torch.softmax(out.attention_scores, 1), out.attention, atol=1e-6)


# --------------------------------------------------------------------------------------------------------- transforms


def _asymmetric_frame() -> Image.Image:
    arr = np.zeros((64, 32, 3), np.uint8)
    arr[:, :8] = 255  # a bright left band: flips and crops move it
    arr[10:20, :, 1] = 200
    return Image.fromarray(arr)


def test_per_frame_augmentation_draws_differ_between_frames():
    import random

    frames = [_asymmetric_frame()] * 8
    random.seed(3)
    per_frame = ClipTransform((64, 32), train=True, pad=4, erase_prob=0.0, spatial="frame")
    clip, _ = per_frame(frames)
    assert len(set(per_frame.last_spatial)) > 1
    assert any(not np.array_equal(clip[0], clip[i]) for i in range(1, 8))
    random.seed(3)
    per_clip = ClipTransform((64, 32), train=True, pad=4, erase_prob=0.0, spatial="clip")
    clip, _ = per_clip(frames)
    assert len(set(per_clip.last_spatial)) == 1
    assert all(np.array_equal(clip[0], clip[i]) for i in range(1, 8))
    # test time: no draw at all
    test_t = ClipTransform((64, 32), train=False, spatial="frame")
    clip, erased = test_t(frames)
    assert all(np.array_equal(clip[0], clip[i]) for i in range(1, 8)) and not erased.any()


def test_erase_fill_and_bicubic_resize():
    import random

    frame = Image.fromarray(np.full((64, 32, 3), 255, np.uint8))  # white: normalised values far from the fills
    for fill, value in (("zero", (0.0, 0.0, 0.0)), ("mean_values", IMAGENET_MEAN)):
        random.seed(0)
        t = ClipTransform((64, 32), train=True, pad=0, flip_prob=0.0, erase_prob=1.0, erase_fill=fill)
        clip, erased = t([frame] * 4)
        assert erased.all()
        for c in range(3):
            hit = np.isclose(clip[:, c], value[c], atol=1e-6)
            assert 0.02 * 64 * 32 * 4 * 0.5 <= hit.sum() <= 0.4 * 64 * 32 * 4 * 1.5
    ramp = Image.fromarray((np.arange(40 * 20 * 3) % 251).astype(np.uint8).reshape(40, 20, 3))
    bil, _ = ClipTransform((64, 32), resize="bilinear")([ramp])
    bic, _ = ClipTransform((64, 32), resize="bicubic")([ramp])
    assert not np.allclose(bil, bic)
    with pytest.raises(ValueError, match="erase_fill"):
        ClipTransform((64, 32), erase_fill="noise")


# --------------------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ["reid_ar_mars_3actions", "reid_ar_mars_5actions", "reid_ar_mars_8actions",
                                  "reid_ar_lpw"])
def test_paper_configs_follow_the_official_recipe(name):
    from models.reid.config import load_reid_config

    cfg = load_reid_config(CONFIGS / f"{name}.yaml")
    d, lo, tr = cfg.data, cfg.loss, cfg.train
    assert (d.p, d.k, d.epoch, d.seq_len, tuple(d.input_size)) == (16, 4, "identities", 4, (224, 112))
    assert (d.spatial_augment, d.erase_fill, d.resize, d.pad, d.flip_prob, d.erase_prob) == (
        "frame", "mean_values", "bicubic", 10, 0.5, 0.5)
    assert (d.test_sampling, d.test_max_clips, d.test_clip_select) == ("dense", 41, "first")
    assert (lo.ranked_feature, lo.center_feature, lo.attention_form) == ("bn", "bn", "scores")
    assert lo.label_smooth_classes == "identities"  # the official bug is an option, not the default
    assert (tr.epochs, tr.milestones, tr.warmup_epochs, tr.warmup_factor, tr.lr, tr.weight_decay) == (
        200, [40, 70], 10, 0.01, 3.5e-4, 5e-4)
    assert tr.iters_per_epoch is None
    if d.format == "mars":
        assert d.gallery_junk == "drop"


def test_paper_recipe_runs_on_tiny_mars(tiny_mars, tmp_path, one_thread, caplog):
    """Two epochs of the MARS paper config's recipe (P=16 x K=4, identity-pass epochs, per-frame augmentation, BNNeck
    metric losses, attention on the pre-softmax scores) on the tiny MARS set, small inputs, OSNet x0.25 from random
    weights: each epoch is exactly n_ids // P = 2 iterations, the losses are finite, the junk-free gallery is
    evaluated with the official dense-clip cap. `train.amp` on the CPU falls back to float32 with a warning."""
    from models.reid.config import load_reid_config
    from models.reid.model import load_checkpoint
    from pipeline.reid_data.datasets import load_dataset
    from pipeline.reid_data.training import evaluate_model, train

    cfg = load_reid_config(CONFIGS / "reid_ar_mars_3actions.yaml")
    cfg.model.backbone, cfg.model.pretrained = "osnet_x0_25", None
    cfg.data.root, cfg.data.action_file_train, cfg.data.action_file_test = str(tiny_mars), "act_train.txt", "act_test.txt"
    cfg.data.input_size, cfg.data.pad, cfg.data.num_workers = (32, 16), 2, 0
    cfg.train.epochs, cfg.train.checkpoint_every, cfg.train.device, cfg.train.warmup_epochs = 2, 0, "cpu", 1
    cfg.train.amp = True
    torch.manual_seed(0)
    ds = load_dataset(cfg.data, cfg.actions)
    with caplog.at_level("WARNING"):
        summary = train(cfg, tmp_path / "run", progress=False, dataset=ds)
    assert "train.amp is for CUDA" in caplog.text
    hist = summary["history"]
    assert [h["iters"] for h in hist] == [2, 2]
    for h in hist:
        assert all(math.isfinite(h[k]) for k in ("total", "id", "ranked", "center", "attention", "action"))
    model, payload = load_checkpoint(summary["checkpoint"])
    assert payload["train_config"]["data"]["epoch"] == "identities"
    res = evaluate_model(model, ds, cfg.data.seq_len, cfg.data.input_size, "dense", cfg.data.test_max_clips,
                         clip_select=cfg.data.test_clip_select, resize=cfg.data.resize)
    assert res["num_query"] == 4 and 0.0 < res["mAP"] <= 1.0
