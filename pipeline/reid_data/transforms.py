"""Clip transforms. Spatial randomness (flip, pad + crop) is shared by all frames of a clip; random erasing is drawn
per frame and reported, so the attention loss knows which frames were erased. Output is normalised with ImageNet
mean/std."""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_image(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


class ClipTransform:
    def __init__(self, size: tuple[int, int] = (224, 112), train: bool = False, flip_prob: float = 0.5, pad: int = 10,
                 erase_prob: float = 0.5, erase_area: tuple[float, float] = (0.02, 0.4), erase_ratio: float = 0.3):
        self.h, self.w = int(size[0]), int(size[1])
        self.train, self.flip_prob, self.pad, self.erase_prob = train, flip_prob, pad, erase_prob
        self.erase_area, self.erase_ratio = erase_area, erase_ratio

    def _erase(self, arr: np.ndarray) -> bool:
        """Random erasing on a normalised (3, H, W) array: a random rectangle set to 0 (= the ImageNet mean)."""
        area = self.h * self.w
        for _ in range(100):
            target = random.uniform(*self.erase_area) * area
            ratio = math.exp(random.uniform(math.log(self.erase_ratio), math.log(1 / self.erase_ratio)))
            eh, ew = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
            if 0 < eh < self.h and 0 < ew < self.w:
                y, x = random.randint(0, self.h - eh), random.randint(0, self.w - ew)
                arr[:, y:y + eh, x:x + ew] = 0.0
                return True
        return False

    def __call__(self, images: list[Image.Image]):
        """-> (clip float32 array (T, 3, H, W), erased bool array (T,))."""
        flip = self.train and random.random() < self.flip_prob
        dx = dy = self.pad
        if self.train and self.pad:
            dx, dy = random.randint(0, 2 * self.pad), random.randint(0, 2 * self.pad)
        mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(3, 1, 1)
        std = np.asarray(IMAGENET_STD, np.float32).reshape(3, 1, 1)
        frames, erased = [], []
        for im in images:
            im = im.resize((self.w, self.h), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
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
