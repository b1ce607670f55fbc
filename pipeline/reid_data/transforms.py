"""Clip transforms. Spatial randomness (flip, pad + crop) is shared by all frames of a clip (`spatial="clip"`) or
drawn for each frame on its own (`spatial="frame"`, the official Re-ID-AR code); random erasing is drawn per frame and
reported, so the attention loss knows which frames were erased. The erased rectangle is filled with 0 in the
normalised image (`erase_fill="zero"`, the ImageNet mean colour) or with the values (0.485, 0.456, 0.406) written
into the normalised tensor (`"mean_values"`, the official code). Frames are resized bilinear or bicubic (official).
Output is normalised with ImageNet mean/std.

Optional photometric / resolution augmentations (`ClipAugment`, all off by default, so the paper's recipe is
unchanged): colour jitter (brightness, contrast, saturation, hue, per-channel gain), grayscale and a random
low-resolution round trip. They are meant to mimic what differs between two cameras (colour response, white
balance, how many pixels a person covers); one draw per clip, the same for all of its frames, since a camera does not
change from frame to frame."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_image(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


# ITU-R BT.601 luma weights (as PIL's "L" conversion)
_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)
# RGB <-> YIQ: a hue shift is a rotation of the (I, Q) chroma plane
_RGB2YIQ = np.asarray([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ2RGB = np.linalg.inv(_RGB2YIQ).astype(np.float32)


@dataclass(frozen=True)
class ClipAugment:
    """Clip-level photometric and resolution augmentation settings; zeros = off.

    brightness / contrast / saturation: factor drawn from [1 - x, 1 + x]; hue: shift drawn from [-x, x] turns
    (x <= 0.5), a rotation in YIQ chroma; channel_gain: each of R, G, B scaled by its own factor from [1 - x, 1 + x]
    (a white-balance change); jitter_prob: probability that a clip gets the colour jitter at all; grayscale_prob:
    probability of a grayscale clip; lowres_prob: probability that the clip's frames are shrunk to a random scale
    from `lowres_scale` (of the input size) and resized back (bilinear)."""

    jitter_prob: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    channel_gain: float = 0.0
    grayscale_prob: float = 0.0
    lowres_prob: float = 0.0
    lowres_scale: tuple[float, float] = (0.25, 0.75)

    @property
    def active(self) -> bool:
        jitter = self.jitter_prob > 0 and any((self.brightness, self.contrast, self.saturation, self.hue,
                                                self.channel_gain))
        return jitter or self.grayscale_prob > 0 or self.lowres_prob > 0

    def draw(self, rng: random.Random | None = None) -> dict:
        """One clip's parameters: {'brightness', 'contrast', 'saturation', 'hue', 'gain' (3,), 'gray', 'scale'};
        neutral values (1, 0, None) where nothing is applied."""
        r = rng or random
        p = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0, "gain": (1.0, 1.0, 1.0),
             "gray": False, "scale": None}
        if self.jitter_prob > 0 and r.random() < self.jitter_prob:
            for key in ("brightness", "contrast", "saturation"):
                x = getattr(self, key)
                if x > 0:
                    p[key] = r.uniform(max(0.0, 1 - x), 1 + x)
            if self.hue > 0:
                p["hue"] = r.uniform(-self.hue, self.hue)
            if self.channel_gain > 0:
                g = self.channel_gain
                p["gain"] = tuple(r.uniform(max(0.0, 1 - g), 1 + g) for _ in range(3))
        if self.grayscale_prob > 0 and r.random() < self.grayscale_prob:
            p["gray"] = True
        if self.lowres_prob > 0 and r.random() < self.lowres_prob:
            p["scale"] = r.uniform(*self.lowres_scale)
        return p


def apply_lowres(im: Image.Image, scale: float | None) -> Image.Image:
    """Shrink `im` to `scale` of its size and resize it back (detail lost, size kept)."""
    if scale is None or scale >= 1:
        return im
    w, h = im.size
    small = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    return small.resize((w, h), Image.BILINEAR)


def apply_colour(arr: np.ndarray, p: dict) -> np.ndarray:
    """Colour jitter / grayscale on an RGB (3, H, W) float array in [0, 1] with the parameters of `ClipAugment.draw`;
    order: gain, brightness, contrast, saturation, hue, grayscale; clipped to [0, 1] after each step."""
    out = arr
    if p["gain"] != (1.0, 1.0, 1.0):
        out = np.clip(out * np.asarray(p["gain"], np.float32).reshape(3, 1, 1), 0, 1)
    if p["brightness"] != 1.0:
        out = np.clip(out * np.float32(p["brightness"]), 0, 1)
    if p["contrast"] != 1.0:
        m = np.float32(np.tensordot(_LUMA, out, axes=1).mean())
        out = np.clip((out - m) * np.float32(p["contrast"]) + m, 0, 1)
    if p["saturation"] != 1.0:
        gray = np.tensordot(_LUMA, out, axes=1)[None]
        out = np.clip((out - gray) * np.float32(p["saturation"]) + gray, 0, 1)
    if p["hue"] != 0.0:
        a = 2 * math.pi * p["hue"]
        rot = np.asarray([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]], np.float32)
        mat = _YIQ2RGB @ rot @ _RGB2YIQ
        out = np.clip(np.tensordot(mat, out, axes=1), 0, 1)
    if p["gray"]:
        out = np.repeat(np.tensordot(_LUMA, out, axes=1)[None], 3, axis=0)
    return out.astype(np.float32, copy=False)


RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
ERASE_FILLS = ("zero", "mean_values")


class ClipTransform:
    """images (T PIL RGB) -> (clip float32 (T, 3, H, W) normalised, erased bool (T,)).

    size (H, W); train: random flip (flip_prob), pad by `pad` + random crop back to (H, W), random erasing per frame
    (erase_prob; area fraction erase_area, aspect ratio log-uniform in [erase_ratio, 1 / erase_ratio], up to
    erase_attempts tries to fit); spatial: "clip" (one flip / crop draw per clip) or "frame" (one per frame);
    erase_fill: "zero" or "mean_values" (see the module docstring); resize: "bilinear" or "bicubic"."""

    def __init__(self, size: tuple[int, int] = (224, 112), train: bool = False, flip_prob: float = 0.5, pad: int = 10,
                 erase_prob: float = 0.5, erase_area: tuple[float, float] = (0.02, 0.4), erase_ratio: float = 0.3,
                 augment: ClipAugment | None = None, spatial: str = "clip", erase_fill: str = "zero",
                 erase_attempts: int = 100, resize: str = "bilinear"):
        if spatial not in ("clip", "frame"):
            raise ValueError(f"spatial augmentation must be 'clip' or 'frame', got {spatial!r}")
        if erase_fill not in ERASE_FILLS:
            raise ValueError(f"erase_fill must be one of {ERASE_FILLS}, got {erase_fill!r}")
        if resize not in RESAMPLE:
            raise ValueError(f"resize must be one of {tuple(RESAMPLE)}, got {resize!r}")
        self.h, self.w = int(size[0]), int(size[1])
        self.train, self.flip_prob, self.pad, self.erase_prob = train, flip_prob, pad, erase_prob
        self.erase_area, self.erase_ratio, self.erase_attempts = erase_area, erase_ratio, max(1, int(erase_attempts))
        self.spatial, self.resample = spatial, RESAMPLE[resize]
        fill = (0.0, 0.0, 0.0) if erase_fill == "zero" else IMAGENET_MEAN
        self.erase_value = np.asarray(fill, np.float32).reshape(3, 1, 1)
        self.augment = augment if augment is not None and augment.active else None
        self.last_params: dict | None = None  # the clip-level augmentation parameters of the last call (tests, logs)
        self.last_spatial: list[tuple[bool, int, int]] = []  # per frame (flip, dx, dy) of the last call (tests, logs)

    def _erase(self, arr: np.ndarray) -> bool:
        """Random erasing on a normalised (3, H, W) array: a random rectangle set to `erase_value`."""
        area = self.h * self.w
        for _ in range(self.erase_attempts):
            target = random.uniform(*self.erase_area) * area
            ratio = math.exp(random.uniform(math.log(self.erase_ratio), math.log(1 / self.erase_ratio)))
            eh, ew = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
            if 0 < eh < self.h and 0 < ew < self.w:
                y, x = random.randint(0, self.h - eh), random.randint(0, self.w - ew)
                arr[:, y:y + eh, x:x + ew] = self.erase_value
                return True
        return False

    def _draw_spatial(self) -> tuple[bool, int, int]:
        """(flip, dx, dy): horizontal flip and the crop offset in the padded frame."""
        flip = random.random() < self.flip_prob
        dx = dy = self.pad
        if self.pad:
            dx, dy = random.randint(0, 2 * self.pad), random.randint(0, 2 * self.pad)
        return flip, dx, dy

    def __call__(self, images: list[Image.Image]):
        """-> (clip float32 array (T, 3, H, W), erased bool array (T,))."""
        spatial = [(False, self.pad, self.pad)] * len(images)
        if self.train:
            if self.spatial == "frame":
                spatial = [self._draw_spatial() for _ in images]
            else:
                spatial = [self._draw_spatial()] * len(images)
        self.last_spatial = spatial
        aug = self.augment.draw() if self.train and self.augment is not None else None
        self.last_params = aug
        mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(3, 1, 1)
        std = np.asarray(IMAGENET_STD, np.float32).reshape(3, 1, 1)
        frames, erased = [], []
        for im, (flip, dx, dy) in zip(images, spatial):
            im = im.resize((self.w, self.h), self.resample)
            if aug is not None:
                im = apply_lowres(im, aug["scale"])
            arr = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
            if aug is not None:
                arr = apply_colour(arr, aug)
            if flip:
                arr = arr[:, :, ::-1]
            if self.train and self.pad:
                padded = np.zeros((3, self.h + 2 * self.pad, self.w + 2 * self.pad), np.float32)
                padded[:, self.pad:self.pad + self.h, self.pad:self.pad + self.w] = arr
                arr = padded[:, dy:dy + self.h, dx:dx + self.w]
            arr = np.ascontiguousarray((arr - mean) / std)
            hit = bool(self.train and random.random() < self.erase_prob and self._erase(arr))
            frames.append(arr)
            erased.append(hit)
        return np.stack(frames), np.asarray(erased)
