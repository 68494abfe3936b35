"""Reading a per-pixel class mask file and checking it fits its image.

Where an image's mask lives and how its raw values become class ids is the data YAML's `semantic:` section:
utils/data/semantic_spec.py (SemanticSpec.mask_path, SemanticSpec.remap).
"""

from __future__ import annotations

import os

import cv2
import numpy as np


class MaskError(ValueError):
    """A mask file that can't be used for its image; the message says why."""


def read_mask(path: str, hw0: tuple[int, int]) -> np.ndarray:
    """The raw ids (uint8/uint16, single channel) of a mask that must be as large as its image (h0, w0)."""
    try:
        m = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except OSError:
        m = None
    if m is None:
        raise MaskError("mask file unreadable" if os.path.exists(path) else "mask file no longer exists")
    if m.ndim != 2:
        raise MaskError(f"mask has {m.shape[2]} channels; class-id masks are single-channel PNGs")
    if m.dtype not in (np.uint8, np.uint16):
        raise MaskError(f"mask pixels are {m.dtype}; class-id masks are 8- or 16-bit")
    if m.shape != tuple(hw0):
        raise MaskError(f"mask size {m.shape[1]}x{m.shape[0]} differs from its image's {hw0[1]}x{hw0[0]}")
    return m
