"""Colours for class maps: Cityscapes' official colours, a fixed palette for any other set, and overlay drawing.

A class map may hold any integer: ignore (255), a value past the class count or a negative one all draw in one
defined colour (black, as Cityscapes draws 'unlabeled'), so no id ever indexes past a palette.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

UNKNOWN_COLOR = (0, 0, 0)


def palette(n: int) -> np.ndarray:
    """(n, 3) uint8 RGB colours, pairwise distinct for any n < 2**24, none black (black means ignore)."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        # Spread the bits of i+1 over the high bits of r, g and b in turn: a bijection from index to colour in
        # which neighbouring ids differ strongly (the PASCAL VOC scheme, shifted so that no class is black).
        v, r, g, b = i + 1, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (v & 1) << shift
            g |= ((v >> 1) & 1) << shift
            b |= ((v >> 2) & 1) << shift
            v >>= 3
        out[i] = r, g, b
    return out


def palette_for(n: int, setting: str | dict | None = None) -> np.ndarray:
    """(n, 3) RGB colours for a data YAML's `semantic.palette` setting: 'cityscapes', {id: (r, g, b)} or None."""
    colors = palette(n)
    if setting == "cityscapes":
        from utils.tasks.semantic.labels import cityscapes_labels

        cs = cityscapes_labels().colors
        k = min(n, len(cs))
        colors[:k] = cs[:k]
    elif isinstance(setting, dict):
        for i, c in setting.items():
            if 0 <= int(i) < n:
                colors[int(i)] = c
    elif setting is not None:
        raise ValueError(f"unknown palette {setting!r} (known: 'cityscapes', a mapping of id to colour, or None)")
    return colors


def colourise(class_map, colors: np.ndarray, bgr: bool = False) -> np.ndarray:
    """(H, W) integer class map (numpy or torch) -> (H, W, 3) uint8 colour image; unknown ids are black."""
    cm = class_map.detach().cpu().numpy() if isinstance(class_map, torch.Tensor) else np.asarray(class_map)
    colors = np.asarray(colors, dtype=np.uint8)
    table = np.concatenate((colors, np.array([UNKNOWN_COLOR], dtype=np.uint8)))
    idx = np.where((cm >= 0) & (cm < len(colors)), cm, len(colors)).astype(np.intp)
    out = table[idx]
    return np.ascontiguousarray(out[..., ::-1]) if bgr else out


def overlay(image: np.ndarray, colour: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend a colour map over an image of the same size (alpha = weight of the colour map)."""
    if image.shape != colour.shape:
        raise ValueError(f"overlay needs equal shapes, got image {image.shape} and colour map {colour.shape}")
    return cv2.addWeighted(colour, float(alpha), image, 1.0 - float(alpha), 0.0)
