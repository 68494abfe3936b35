"""The `semantic:` section of a data YAML (per-pixel class masks) and the path rules that pair images with masks.

Contract: /work/briefs/SEMANTIC_DATA.md. An image path becomes its mask path by replacing the LAST `images_dir`
component with `masks_dir`, removing `image_suffix` from the end of the stem and appending `mask_suffix`. `masks_dir`
may also be a relative path (`../coco128-semantic/masks`: resolved from the folder that holds the replaced component,
then normalised) or an absolute one, so masks can live beside another dataset root. Raw mask values pass through
`id_map` (unlisted values -> ignore_index); without id_map a value is its own class id and anything that is not a
class becomes ignore_index, so a stray value can never index past the class count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.data.dataset_config import DatasetError

KNOWN_KEYS = ("masks_dir", "image_suffix", "mask_suffix", "names", "ignore_index", "id_map", "palette")
MAX_MASK_VALUE = 65535  # masks are uint8 or uint16 PNGs


def swap_dir(path: str | Path, old: str, new: str) -> str | None:
    """`path` with its last `old` folder component replaced by `new` (a name or a relative/absolute path); None
    when `path` has no such component."""
    parts = Path(os.path.normpath(str(path))).parts
    hits = [i for i, p in enumerate(parts[:-1]) if p == old]
    if not hits:
        return None
    i = hits[-1]
    return os.path.normpath(os.path.join(*parts[:i], new, *parts[i + 1:]))


def _int_keys(value, what: str, where: str) -> dict[int, object]:
    """A YAML mapping (or list, for names) -> {int: value}, rejecting non-integer keys with one clear line."""
    if isinstance(value, (list, tuple)):
        return dict(enumerate(value))
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: semantic '{what}' must be a mapping of integer ids")
    bad = [k for k in value if not isinstance(k, int) or isinstance(k, bool) or k < 0]
    if bad:
        raise DatasetError(f"{where}: semantic '{what}' keys must be non-negative integers, got {bad[0]!r}")
    return dict(sorted(value.items()))


def _colour(v, where: str, k: int) -> tuple[int, int, int]:
    ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in v)
    if not ok:
        raise DatasetError(f"{where}: semantic palette entry {k} must be [r, g, b] with values 0-255, got {v!r}")
    return int(v[0]), int(v[1]), int(v[2])


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

    @property
    def nc(self) -> int:
        """Number of semantic classes (segmentation head channels)."""
        return len(self.names)

    @classmethod
    def from_yaml_section(cls, section: dict, images_dir: str = "images", where: str = "data YAML") -> SemanticSpec:
        """Validate a `semantic:` mapping; every problem is a DatasetError naming `where` and the key."""
        if not isinstance(section, dict):
            raise DatasetError(f"{where}: 'semantic' must be a mapping (masks_dir, names, ...)")
        unknown = sorted(set(section) - set(KNOWN_KEYS))
        if unknown:
            raise DatasetError(f"{where}: unknown semantic key {unknown[0]!r} (known: {', '.join(KNOWN_KEYS)})")
        if not section.get("names"):
            raise DatasetError(f"{where}: semantic section needs 'names' (class id -> name)")
        names = {k: str(v) for k, v in _int_keys(section["names"], "names", where).items()}
        if list(names) != list(range(len(names))):
            raise DatasetError(f"{where}: semantic 'names' ids must be 0..{len(names) - 1} without gaps "
                               f"(map sparse mask values with 'id_map')")
        ignore = section.get("ignore_index", 255)
        if not isinstance(ignore, int) or isinstance(ignore, bool) or not 0 <= ignore <= MAX_MASK_VALUE:
            raise DatasetError(f"{where}: semantic 'ignore_index' must be an integer 0-{MAX_MASK_VALUE}, "
                               f"got {ignore!r}")
        if ignore in names:
            raise DatasetError(f"{where}: semantic 'ignore_index' {ignore} is also class '{names[ignore]}'")
        id_map = None
        if section.get("id_map") is not None:
            id_map = _int_keys(section["id_map"], "id_map", where)
            for raw, c in id_map.items():
                if raw > MAX_MASK_VALUE:
                    raise DatasetError(f"{where}: semantic id_map key {raw} exceeds {MAX_MASK_VALUE} (uint16 masks)")
                if not isinstance(c, int) or isinstance(c, bool) or (c not in names and c != ignore):
                    raise DatasetError(f"{where}: semantic id_map {raw}: {c!r} is neither a class id in 'names' "
                                       f"nor ignore_index {ignore}")
        palette = section.get("palette")
        if isinstance(palette, str):
            if palette != "cityscapes":
                raise DatasetError(f"{where}: unknown semantic palette {palette!r} (known: cityscapes, or a mapping)")
        elif palette is not None:
            entries = _int_keys(palette, "palette", where)
            palette = {k: _colour(v, where, k) for k, v in entries.items()}
        strings = {}
        for key, default in (("masks_dir", "masks"), ("image_suffix", ""), ("mask_suffix", ".png")):
            v = section.get(key, default)
            if not isinstance(v, str) or (key != "image_suffix" and not v):
                raise DatasetError(f"{where}: semantic '{key}' must be a non-empty string, got {v!r}")
            strings[key] = v
        return cls(names=names, ignore_index=ignore, id_map=id_map, palette=palette,
                   images_dir=str(images_dir or "images"), **strings)

    @classmethod
    def from_data(cls, data: dict) -> SemanticSpec | None:
        """The spec of a loaded data dict (check_dataset's output or a raw YAML dict); None without a section."""
        if data.get("semantic") is None:
            return None
        return cls.from_yaml_section(data["semantic"], data.get("images_dir") or "images",
                                     str(data.get("yaml_file") or "data YAML"))

    def mask_path(self, image_path: str | Path) -> str:
        """Mask file that pairs with an image (it may not exist: an image without a mask)."""
        p = swap_dir(image_path, self.images_dir, self.masks_dir)
        if p is None:
            raise DatasetError(f"{image_path}: no '{self.images_dir}' folder in the path, so its mask can't be "
                               f"located (set images_dir in the data YAML)")
        folder, stem = os.path.split(os.path.splitext(p)[0])
        if self.image_suffix and stem.endswith(self.image_suffix):
            stem = stem[: -len(self.image_suffix)]
        return os.path.join(folder, stem + self.mask_suffix)

    def lut(self) -> np.ndarray:
        """Lookup table raw mask value -> class id (or ignore_index), as long as the largest raw value allowed."""
        if self._lut is None:
            big = self.ignore_index > 255 or self.nc > 256 or any(k > 255 for k in (self.id_map or {}))
            size = MAX_MASK_VALUE + 1 if big else 256
            lut = np.full(size, self.ignore_index, dtype=np.uint16 if big else np.uint8)
            if self.id_map is None:
                lut[: self.nc] = np.arange(self.nc)
            else:
                for raw, c in self.id_map.items():
                    lut[raw] = c
            self._lut = lut
        return self._lut

    def remap(self, mask: np.ndarray) -> np.ndarray:
        """Raw single-channel mask (uint8/uint16) -> class ids with ignore_index where unknown."""
        lut = self.lut()
        if mask.dtype != np.uint8 and len(lut) == 256:
            # a 16-bit mask for a table built for 8-bit values: anything above 255 is not a class
            return np.where(mask < 256, lut[np.minimum(mask, 255)], self.ignore_index).astype(lut.dtype)
        return lut[mask]
