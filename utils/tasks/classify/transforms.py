"""Image transforms of the classification task, in numpy/OpenCV (no torchvision).

Evaluation follows YOLOv5 v7.0's `classify_transforms` exactly, because top-1 parity with upstream checkpoints depends
on it: the largest centred square, resized to `size` with cv2.INTER_LINEAR, BGR -> RGB, /255, then ImageNet
normalisation. The last two steps run on the device (`normalize`), on a uint8 batch, which keeps transfers small and
computes the same float32 values as upstream's ToTensor + Normalize.

Training follows the augmentations upstream takes from albumentations (RandomResizedCrop scale 0.08-1, ratio 3/4-4/3,
horizontal flip 0.5, ColorJitter 0.4/0.4/0.4 with no hue), written here in a simple form:
  - random_resized_crop: torchvision's sampling rule (10 tries, then a centre crop clamped to the allowed ratios);
  - color_jitter: brightness, contrast and saturation factors drawn from [1 - j, 1 + j], applied in a fixed order
    (torchvision shuffles the order; a fixed order is simpler and trains as well at these strengths).
"""

from __future__ import annotations

import math
import random

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB
IMAGENET_STD = (0.229, 0.224, 0.225)


def center_crop(im: np.ndarray, size: int) -> np.ndarray:
    """Largest centred square of a HWC image, resized to size x size (bilinear), as upstream's CenterCrop."""
    h, w = im.shape[:2]
    m = min(h, w)
    top, left = (h - m) // 2, (w - m) // 2
    return cv2.resize(im[top:top + m, left:left + m], (size, size), interpolation=cv2.INTER_LINEAR)


def random_resized_crop(im: np.ndarray, size: int, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """A crop of random area fraction `scale` and aspect `ratio`, resized to size x size."""
    h, w = im.shape[:2]
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * random.uniform(*scale)
        ar = math.exp(random.uniform(*log_ratio))
        cw, ch = round(math.sqrt(target * ar)), round(math.sqrt(target / ar))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = random.randint(0, h - ch), random.randint(0, w - cw)
            return cv2.resize(im[top:top + ch, left:left + cw], (size, size), interpolation=cv2.INTER_LINEAR)
    # no sample fitted: the whole image, cut to the nearest allowed aspect ratio
    ar = w / h
    cw, ch = (w, round(w / ratio[0])) if ar < ratio[0] else (round(h * ratio[1]), h) if ar > ratio[1] else (w, h)
    cw, ch = min(cw, w), min(ch, h)
    top, left = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(im[top:top + ch, left:left + cw], (size, size), interpolation=cv2.INTER_LINEAR)


def color_jitter(im: np.ndarray, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4) -> np.ndarray:
    """Random brightness, contrast and saturation (BGR uint8 in and out)."""
    if not (brightness or contrast or saturation):
        return im
    b, c, s = (random.uniform(max(0.0, 1 - j), 1 + j) if j else 1.0 for j in (brightness, contrast, saturation))
    x = im.astype(np.float32) * b
    gray = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
    x = (x - gray.mean()) * c + gray.mean()  # contrast pivots on the mean grey level, as torchvision
    if s != 1.0:
        g = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)[..., None]
        x = (x - g) * s + g  # saturation blends with the image's own grey version
    return np.clip(x, 0, 255).astype(np.uint8)


def train_transform(im: np.ndarray, size: int, hyp: dict) -> np.ndarray:
    """Training augmentation of one BGR image -> size x size BGR uint8."""
    im = random_resized_crop(im, size, scale=tuple(hyp.get("scale", (0.08, 1.0))))
    if random.random() < hyp.get("fliplr", 0.5):
        im = np.ascontiguousarray(im[:, ::-1])
    j = hyp.get("jitter", 0.4)
    return color_jitter(im, j, j, j)


def normalize(img: torch.Tensor) -> torch.Tensor:
    """uint8 (or 0-255 float) RGB batch -> float ImageNet-normalised, computed as upstream (x/255 - mean) / std."""
    x = img.float() / 255
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
