"""Per-pixel class masks (the semantic data contract): where an image's mask lives, reading it, mapping its ids.

Path rule: the LAST `images_dir` component of the image path is replaced by `masks_dir`, `image_suffix` is removed
from the end of the file stem and `mask_suffix` appended. `masks_dir` may also be a relative path (taken from the
folder holding `images_dir`, e.g. `../coco128-semantic/masks` for masks kept beside the image tree) or an absolute one.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from utils.data.labels import replace_dir_component

MAX_RAW_ID = 65535  # 16-bit PNG masks


def img2mask_paths(img_paths: list[str], images_dir: str = "images", masks_dir: str = "masks",
                   image_suffix: str = "", mask_suffix: str = ".png") -> list[str]:
    """Mask path of each image by the contract's rule (the image path itself when it has no images_dir component,
    which callers treat as 'no mask')."""
    out = []
    for p in img_paths:
        p = str(p)
        q = replace_dir_component(p, images_dir, masks_dir)
        if q == p:
            out.append(p)
            continue
        stem = os.path.splitext(q)[0]
        if image_suffix and stem.endswith(image_suffix):
            stem = stem[: -len(image_suffix)]
        out.append(stem + mask_suffix)
    return out


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


class IdMapper:
    """Raw mask values -> class ids through one lookup table: id_map when given (values not listed -> ignore), else
    the values themselves, with anything that is no class (>= nc) and not the ignore index sent to ignore."""

    def __init__(self, nc: int, ignore_index: int = 255, id_map: dict[int, int] | None = None):
        self.nc, self.ignore_index, self.has_map = nc, int(ignore_index), bool(id_map)
        self.dtype = np.uint8 if max(nc - 1, ignore_index) <= 255 else np.uint16
        lut = np.full(MAX_RAW_ID + 1, ignore_index, self.dtype)
        if id_map:
            for raw, c in id_map.items():
                lut[int(raw)] = c
        else:
            lut[:nc] = np.arange(nc)
        self.lut, self.lut8 = lut, lut[:256].copy()
        known = np.zeros(MAX_RAW_ID + 1, np.uint8)
        known[lut != ignore_index] = 1
        known[ignore_index] = 1
        self.unknown8 = (1 - known[:256]).astype(np.uint8)  # raw values silently ignored without an id_map

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Class-id mask (self.dtype) of a raw mask."""
        if raw.dtype == np.uint8 and self.dtype == np.uint8:
            return cv2.LUT(raw, self.lut8)
        return self.lut[raw]

    def unknown_values(self, raw: np.ndarray) -> list[int]:
        """Raw values that are neither a class nor the ignore index (only meaningful without an id_map)."""
        if raw.dtype == np.uint8:
            if not cv2.countNonZero(cv2.LUT(raw, self.unknown8)):
                return []
        vals = np.unique(raw)
        return [int(v) for v in vals if v != self.ignore_index and (v >= self.nc)]
