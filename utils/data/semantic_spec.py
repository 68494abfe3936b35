"""The `semantic:` section of a data YAML (per-pixel class masks): THE parser of it, the image -> mask path rule and
the raw value -> class id mapping. Every other module (check_dataset, SemanticDataset, the Cityscapes converter) goes
through SemanticSpec.

Contract: README.md, section 'Detection + semantic segmentation'. An image path becomes its mask path by replacing
the LAST `images_dir` component with `masks_dir` (utils.data.labels.swap_dir, the rule label files follow too),
removing `image_suffix` from the end of the stem and appending `mask_suffix`. `masks_dir` may also be a relative path
(`../coco128-semantic/masks`: resolved from the folder that holds the replaced component, then normalised) or an
absolute one, so masks can live beside another dataset root.

Raw mask values pass through `id_map` (unlisted values -> ignore_index); without id_map a value is its own class id
and anything that is not a class becomes ignore_index, so a stray value can never index past the class count. This
holds for 8- and 16-bit masks alike and for any ignore_index (0-65535): a 16-bit value read against a table built for
8-bit masks is past every class, so it is ignored. Class maps are uint8 unless a class id or ignore_index exceeds 255.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from utils.data.labels import swap_dir
from utils.data.names import parse_names
from utils.errors import DatasetError

KNOWN_KEYS = ("masks_dir", "image_suffix", "mask_suffix", "names", "ignore_index", "id_map", "palette")
MAX_MASK_VALUE = 65535  # masks are uint8 or uint16 PNGs


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _names(section: dict, where: str) -> dict[int, str]:
    """semantic.names -> {id: name}, numbered 0..n-1 (the segmentation head's channels)."""
    if section.get("names") is None:
        raise DatasetError(f"{where}: semantic: missing key 'names' (class id -> name of the mask classes)")
    names = parse_names(section["names"], where, "semantic.names")
    if list(names) != list(range(len(names))):
        gaps = sorted(set(range(len(names))) - set(names))
        raise DatasetError(f"{where}: semantic.names must be numbered 0..{len(names) - 1} without gaps "
                           f"(missing {gaps[:5]}); map sparse raw ids to them with id_map")
    return names


def _ignore_index(value, names: dict[int, str], where: str) -> int:
    if not _is_int(value) or not 0 <= value <= MAX_MASK_VALUE:
        raise DatasetError(f"{where}: semantic.ignore_index must be an integer in 0..{MAX_MASK_VALUE}, got {value!r}")
    if value in names:
        raise DatasetError(f"{where}: semantic.ignore_index {value} is also a class id (class '{names[value]}' of "
                           f"0..{len(names) - 1}); use e.g. 255")
    return value


def _id_map(value, names: dict[int, str], ignore: int, where: str) -> dict[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise DatasetError(f"{where}: semantic.id_map must be a non-empty mapping of raw mask value -> class id, "
                           f"got {value!r}")
    for raw, c in value.items():
        if not _is_int(raw) or not 0 <= raw <= MAX_MASK_VALUE:
            raise DatasetError(f"{where}: semantic.id_map: raw value {raw!r} is not an integer in 0..{MAX_MASK_VALUE} "
                               f"(masks are 8- or 16-bit)")
        if not _is_int(c) or (c not in names and c != ignore):
            raise DatasetError(f"{where}: semantic.id_map: {raw}: {c!r} is neither a class id "
                               f"(0..{len(names) - 1}) nor ignore_index {ignore}")
    return dict(sorted(value.items()))


def _palette(value, names: dict[int, str], where: str) -> str | dict[int, tuple[int, int, int]] | None:
    if value is None or value == "cityscapes":
        return value
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: semantic.palette must be 'cityscapes' or a mapping id -> [r, g, b], "
                           f"got {value!r}")
    out = {}
    for k, rgb in value.items():
        if not _is_int(k) or k not in names:
            raise DatasetError(f"{where}: semantic.palette: {k!r} is not a class id of semantic.names")
        if not isinstance(rgb, (list, tuple)) or len(rgb) != 3 or not all(_is_int(v) and 0 <= v <= 255 for v in rgb):
            raise DatasetError(f"{where}: semantic.palette: {k}: expected [r, g, b] with values 0..255, got {rgb!r}")
        out[k] = (rgb[0], rgb[1], rgb[2])
    return dict(sorted(out.items()))


def _string(section: dict, key: str, default: str, where: str) -> str:
    v = section.get(key, default)
    if not isinstance(v, str):
        raise DatasetError(f"{where}: semantic.{key} must be a string, got {v!r}")
    if key == "masks_dir" and not v.strip():
        raise DatasetError(f"{where}: semantic.masks_dir must not be empty (a folder name or a path)")
    if key == "mask_suffix" and not v:
        raise DatasetError(f"{where}: semantic.mask_suffix must not be empty (e.g. .png)")
    return v


@dataclass
class SemanticSpec:
    """What a data YAML says about its per-pixel masks: where they are, their classes and how raw values map."""

    names: dict[int, str]
    masks_dir: str = "masks"
    image_suffix: str = ""
    mask_suffix: str = ".png"
    ignore_index: int = 255
    id_map: dict[int, int] | None = None
    palette: str | dict[int, tuple[int, int, int]] | None = None  # "cityscapes", {id: (r, g, b)} or default
    images_dir: str = "images"  # the data YAML's top-level images_dir (the path component masks_dir replaces)
    _lut: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _unknown8: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def nc(self) -> int:
        """Number of semantic classes (segmentation head channels)."""
        return len(self.names)

    @property
    def dtype(self) -> type:
        """dtype of remapped masks: uint8 unless a class id or ignore_index needs 16 bits."""
        return np.uint8 if max(self.nc - 1, self.ignore_index) <= 255 else np.uint16

    # --- parsing -------------------------------------------------------------------------------------------------
    @classmethod
    def from_yaml_section(cls, section: dict, images_dir: str = "images", where: str = "data YAML") -> SemanticSpec:
        """Validate a `semantic:` mapping; every problem is one DatasetError line naming `where` and the key."""
        if not isinstance(section, dict):
            raise DatasetError(f"{where}: 'semantic' must be a mapping (masks_dir, names, ...), "
                               f"got {type(section).__name__}")
        unknown = sorted(set(section) - set(KNOWN_KEYS), key=str)
        if unknown:
            raise DatasetError(f"{where}: semantic: unknown key {unknown[0]!r} (known: {', '.join(KNOWN_KEYS)})")
        defaults = (("masks_dir", "masks"), ("image_suffix", ""), ("mask_suffix", ".png"))
        strings = {k: _string(section, k, default, where) for k, default in defaults}
        names = _names(section, where)
        ignore = _ignore_index(section.get("ignore_index", 255), names, where)
        return cls(names=names, ignore_index=ignore, id_map=_id_map(section.get("id_map"), names, ignore, where),
                   palette=_palette(section.get("palette"), names, where), images_dir=str(images_dir or "images"),
                   **strings)

    @classmethod
    def from_dict(cls, d: dict, images_dir: str = "images", where: str = "data YAML") -> SemanticSpec:
        """The spec of a section as check_dataset stores it (to_dict(): its derived `nc` must match the names) or of a
        raw one."""
        if isinstance(d, dict) and "nc" in d:
            d = dict(d)
            nc = d.pop("nc")
            spec = cls.from_yaml_section(d, images_dir, where)
            if nc != spec.nc:
                raise DatasetError(f"{where}: semantic.nc is {nc!r} but semantic.names has {spec.nc} classes")
            return spec
        return cls.from_yaml_section(d, images_dir, where)

    @classmethod
    def from_data(cls, data: dict) -> SemanticSpec | None:
        """The spec of a loaded data dict (check_dataset's output or a raw YAML dict); None without a section."""
        if data.get("semantic") is None:
            return None
        return cls.from_dict(data["semantic"], data.get("images_dir") or "images",
                             str(data.get("yaml_file") or "data YAML"))

    def to_dict(self) -> dict:
        """The section with every default filled in and `nc` added (check_dataset's data["semantic"], YAML-safe)."""
        palette = self.palette
        if isinstance(palette, dict):
            palette = {k: list(rgb) for k, rgb in palette.items()}
        return {"masks_dir": self.masks_dir, "image_suffix": self.image_suffix, "mask_suffix": self.mask_suffix,
                "names": dict(self.names), "nc": self.nc, "ignore_index": self.ignore_index,
                "id_map": None if self.id_map is None else dict(self.id_map), "palette": palette}

    # --- paths ---------------------------------------------------------------------------------------------------
    def find_mask_path(self, image_path: str | Path) -> str | None:
        """Mask file that pairs with an image (it may not exist); None when the image path has no images_dir folder,
        so no mask can be paired with it."""
        p = swap_dir(image_path, self.images_dir, self.masks_dir)
        if p is None:
            return None
        stem = os.path.splitext(p)[0]
        if self.image_suffix and stem.endswith(self.image_suffix):
            stem = stem[: -len(self.image_suffix)]
        return stem + self.mask_suffix

    def mask_path(self, image_path: str | Path) -> str:
        """Mask file that pairs with an image (it may not exist); DatasetError when none can be paired."""
        p = self.find_mask_path(image_path)
        if p is None:
            raise DatasetError(f"{image_path}: no '{self.images_dir}' folder in the path, so its mask can't be "
                               f"located (set images_dir in the data YAML)")
        return p

    # --- values --------------------------------------------------------------------------------------------------
    def lut(self) -> np.ndarray:
        """Lookup table raw mask value -> class id (or ignore_index), of dtype self.dtype: 256 entries, or 65536 when
        a class id or an id_map key is past 255."""
        if self._lut is None:
            big = self.nc > 256 or any(k > 255 for k in (self.id_map or {}))
            lut = np.full(MAX_MASK_VALUE + 1 if big else 256, self.ignore_index, dtype=self.dtype)
            if self.id_map is None:
                lut[: self.nc] = np.arange(self.nc)
            else:
                for raw, c in self.id_map.items():
                    lut[raw] = c
            self._lut = lut
        return self._lut

    def remap(self, mask: np.ndarray) -> np.ndarray:
        """Raw single-channel mask (uint8/uint16) -> class ids (self.dtype) with ignore_index where unknown."""
        lut = self.lut()
        if mask.dtype == np.uint8 and mask.size:
            return cv2.LUT(mask, lut[:256])  # several times faster than indexing, same values
        if len(lut) == 256:
            # a 16-bit mask for a table built for 8-bit values: anything above 255 is not a class
            return np.where(mask < 256, lut[np.minimum(mask, 255)], self.ignore_index).astype(lut.dtype)
        return lut[mask]

    def unknown_values(self, raw: np.ndarray) -> list[int]:
        """Raw values that are neither a class id nor ignore_index, so are silently ignored (e.g. Cityscapes labelIds
        where trainIds are expected). With an id_map every raw value has a meaning (unlisted -> ignore): none."""
        if self.id_map is not None:
            return []
        if raw.dtype == np.uint8 and raw.ndim == 2 and raw.size:
            if self._unknown8 is None:
                v = np.arange(256)
                self._unknown8 = ((v >= self.nc) & (v != self.ignore_index)).astype(np.uint8)
            if not cv2.countNonZero(cv2.LUT(raw, self._unknown8)):
                return []  # the usual case, without sorting every pixel
        return [int(v) for v in np.unique(raw) if v >= self.nc and v != self.ignore_index]
