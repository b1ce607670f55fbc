"""Clip-level photometric / resolution augmentations of Re-ID training clips (pipeline/reid_data/transforms.py)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.reid_data.transforms import ClipAugment, ClipTransform, apply_colour, apply_lowres

FULL = ClipAugment(jitter_prob=1.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, channel_gain=0.2,
                   lowres_prob=1.0, lowres_scale=(0.3, 0.5))
NEUTRAL = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0, "gain": (1.0, 1.0, 1.0),
           "gray": False, "scale": None}


def _person(seed: int = 0, size: tuple[int, int] = (40, 100)) -> Image.Image:
    """A textured colour image (random blocks + stripes), so that colour and resolution changes show."""
    rng = np.random.default_rng(seed)
    w, h = size
    arr = rng.integers(30, 220, (h // 10, w // 10, 3), dtype=np.uint8).repeat(10, 0).repeat(10, 1)
    arr[::2, :, 1] = 200  # fine horizontal stripes: high frequency the low-res round trip must remove
    return Image.fromarray(arr)


def test_off_is_the_paper_recipe():
    """Default settings are inactive and give exactly the previous transform, random stream included."""
    assert not ClipAugment().active
    assert not ClipAugment(brightness=0.5).active  # jitter ranges without jitter_prob: still off
    assert ClipAugment(grayscale_prob=0.1).active and ClipAugment(lowres_prob=0.1).active
    clip = [_person(i) for i in range(4)]
    random.seed(7)
    a, ea = ClipTransform((64, 32), train=True)(clip)
    next_a = random.random()
    random.seed(7)
    t = ClipTransform((64, 32), train=True, augment=ClipAugment())
    b, eb = t(clip)
    next_b = random.random()
    assert t.augment is None and t.last_params is None
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ea, eb)
    assert next_a == next_b  # no extra random draws: training runs of the paper configs are unchanged


def test_test_time_transform_never_augments():
    clip = [_person(i) for i in range(3)]
    plain, _ = ClipTransform((64, 32), train=False)(clip)
    t = ClipTransform((64, 32), train=False, augment=FULL)
    aug, erased = t(clip)
    np.testing.assert_array_equal(plain, aug)
    assert t.last_params is None and not erased.any()


def test_one_draw_per_clip_same_for_all_frames():
    """A clip of 5 identical frames stays 5 identical frames (one draw per clip), different from the clean frame."""
    frame = _person(3)
    clean, _ = ClipTransform((64, 32), train=True, flip_prob=0, pad=0, erase_prob=0)([frame])
    t = ClipTransform((64, 32), train=True, flip_prob=0, pad=0, erase_prob=0, augment=FULL)
    random.seed(0)
    seen = []
    for _ in range(5):
        clip, erased = t([frame] * 5)
        assert clip.shape == (5, 3, 64, 32) and clip.dtype == np.float32 and not erased.any()
        for i in range(1, 5):
            np.testing.assert_array_equal(clip[0], clip[i])
        assert np.abs(clip[0] - clean[0]).mean() > 0.05
        p = t.last_params
        assert 0.3 <= p["scale"] <= 0.5 and -0.1 <= p["hue"] <= 0.1
        assert all(0.6 <= p[k] <= 1.4 for k in ("brightness", "contrast", "saturation"))
        assert all(0.8 <= g <= 1.2 for g in p["gain"])
        seen.append(p["brightness"])
    assert len(set(seen)) == 5  # a new draw for every clip


def test_draw_probabilities_and_determinism():
    aug = ClipAugment(jitter_prob=0.5, brightness=0.2, grayscale_prob=0.25, lowres_prob=0.75)
    draws = [aug.draw(random.Random(i)) for i in range(2000)]
    jittered = np.mean([d["brightness"] != 1.0 for d in draws])
    assert abs(jittered - 0.5) < 0.05
    assert abs(np.mean([d["gray"] for d in draws]) - 0.25) < 0.04
    assert abs(np.mean([d["scale"] is not None for d in draws]) - 0.75) < 0.04
    assert all(d["contrast"] == 1.0 and d["hue"] == 0.0 and d["gain"] == (1.0, 1.0, 1.0) for d in draws)
    assert aug.draw(random.Random(5)) == aug.draw(random.Random(5))


def test_colour_ops_hand_checked():
    rng = np.random.default_rng(0)
    arr = rng.uniform(0.2, 0.6, (3, 8, 4)).astype(np.float32)
    np.testing.assert_array_equal(apply_colour(arr, NEUTRAL), arr)
    # brightness: a plain scale
    np.testing.assert_allclose(apply_colour(arr, {**NEUTRAL, "brightness": 1.5}), arr * 1.5, rtol=1e-6)
    # per-channel gain
    out = apply_colour(arr, {**NEUTRAL, "gain": (1.2, 1.0, 0.5)})
    np.testing.assert_allclose(out, arr * np.array([1.2, 1.0, 0.5], np.float32).reshape(3, 1, 1), rtol=1e-6)
    # contrast 0: every pixel becomes the mean luma; saturation 0 / grayscale: the three channels equal the luma
    luma = 0.299 * arr[0] + 0.587 * arr[1] + 0.114 * arr[2]
    np.testing.assert_allclose(apply_colour(arr, {**NEUTRAL, "contrast": 0.0}), np.full_like(arr, luma.mean()),
                               atol=1e-6)
    for p in ({**NEUTRAL, "saturation": 0.0}, {**NEUTRAL, "gray": True}):
        out = apply_colour(arr, p)
        for c in range(3):
            np.testing.assert_allclose(out[c], luma, atol=1e-5)
    # hue: a chroma rotation keeps the luma (no clipping in this range) and a full turn is the identity
    out = apply_colour(arr, {**NEUTRAL, "hue": 0.08})
    assert np.abs(out - arr).max() > 0.01
    np.testing.assert_allclose(0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2], luma, atol=1e-4)
    np.testing.assert_allclose(apply_colour(arr, {**NEUTRAL, "hue": 0.5 + 0.5}), arr, atol=1e-5)
    # results stay valid images
    big = apply_colour(np.ones((3, 2, 2), np.float32) * 0.9, {**NEUTRAL, "brightness": 1.4, "gain": (1.2, 1, 1)})
    assert big.max() <= 1.0 and big.dtype == np.float32


def test_lowres_round_trip_keeps_size_loses_detail():
    im = _person(1, (64, 128))
    assert apply_lowres(im, None) is im and apply_lowres(im, 1.0) is im
    low = apply_lowres(im, 0.25)
    assert low.size == im.size
    a, b = np.asarray(im, np.float32), np.asarray(low, np.float32)
    # the 1-px stripes are gone: vertical neighbour differences in the green channel shrink a lot
    assert np.abs(np.diff(b[..., 1], axis=0)).mean() < 0.3 * np.abs(np.diff(a[..., 1], axis=0)).mean()
    assert abs(b.mean() - a.mean()) < 5  # same overall colour


def test_real_crop_clip(shared):
    """A real PETS09 person crop through the full training transform with everything on."""
    cv2 = pytest.importorskip("cv2")

    s = shared / "data" / "pets09_s2l1"
    gt = np.loadtxt(s / "gt" / "gt.txt", delimiter=",")
    row = gt[gt[:, 0] == gt[0, 0]][0]
    cap = cv2.VideoCapture(str(s / "vtest.avi"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, int(row[0]) - 1)
    ok, frame = cap.read()
    cap.release()
    assert ok
    x, y, w, h = (int(round(v)) for v in row[2:6])
    crop = Image.fromarray(frame[max(0, y):y + h, max(0, x):x + w, ::-1].copy())
    t = ClipTransform((128, 64), train=True, augment=FULL)
    random.seed(1)
    clip, erased = t([crop] * 4)
    assert clip.shape == (4, 3, 128, 64) and clip.dtype == np.float32 and erased.shape == (4,)
    assert np.isfinite(clip).all()
    # ImageNet-normalised values of a [0, 1] image lie within these bounds
    assert clip.min() >= -2.2 and clip.max() <= 2.7


def test_config_validation(tmp_path):
    from models.reid.config import ReIDConfigError, load_reid_config

    base = "data:\n  root: /tmp/x\n  augment:\n"
    cases = {"hue: 0.7": "hue", "lowres_scale: [0.8, 0.5]": "lowres_scale", "jitter_prob: 1.5": "jitter_prob",
             "sharpness: 0.2": "sharpness"}
    for i, (line, key) in enumerate(cases.items()):
        p = tmp_path / f"bad{i}.yaml"
        p.write_text(base + f"    {line}\n")
        with pytest.raises(ReIDConfigError, match=key):
            load_reid_config(p)
    p = tmp_path / "ok.yaml"
    p.write_text(base + "    jitter_prob: 0.8\n    brightness: 0.3\n    lowres_scale: [0.5, 1.0]\n")
    aug = load_reid_config(p).data.augment
    assert aug.jitter_prob == 0.8 and aug.lowres_scale == (0.5, 1.0) and aug.hue == 0.0
    # the paper's configs keep the paper's recipe (no photometric augmentation)
    root = Path(__file__).resolve().parent.parent / "configs"
    for name in ("reid_ar_mars_3actions", "reid_ar_mars_5actions", "reid_ar_mars_8actions", "reid_ar_lpw"):
        cfg = load_reid_config(root / f"{name}.yaml")
        assert not ClipAugment(**cfg.data.augment.model_dump()).active, name
