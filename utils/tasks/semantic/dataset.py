"""Detection + semantic segmentation data: one dataset yields image, boxes and per-pixel class mask together.

Built on YoloDataset, so every augmentation moves the mask with the image (utils/data/augment.py). Per image (the
semantic data contract): has_boxes = its label file exists, has_semantic = its mask file exists; an image with only
one label kind trains only that head, and mosaic/mixup partners are drawn among images labelled like it. A mask that
can't be used (unreadable, wrong size, not single-channel) skips that sample with one warning naming the file.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.data.masks import MaskError, read_mask
from utils.data.semantic_spec import SemanticSpec
from utils.log import LOGGER
from utils.tasks.detect.dataset import SampleLoadError, YoloDataset

MISSING_NAMED = 5  # images without a mask named in the log line (the rest are counted)


class SemanticDataset(YoloDataset):
    """YoloDataset items plus semantic ((H, W) uint8, or int64 past 255 classes), has_semantic and has_boxes.

    semantic: the data YAML's `semantic:` section as check_dataset returns it (or a raw one), or a SemanticSpec; its
    mask path rule uses this dataset's images_dir.
    """

    cache_bytes_factor = 4 / 3  # a cached uint8 mask beside each 3-channel image

    def __init__(self, *args, semantic: dict | SemanticSpec, **kwargs):
        self.spec = semantic if isinstance(semantic, SemanticSpec) else SemanticSpec.from_dict(semantic)
        self.ignore_index = self.spec.ignore_index
        self.mask_fill = self.ignore_index
        super().__init__(*args, **kwargs)

    def labels_optional(self) -> bool:
        return True

    def prepare(self) -> None:
        """Mask paths and label kinds, once the image order is final."""
        self.spec = dataclasses.replace(self.spec, images_dir=self.images_dir)  # one path rule for labels and masks
        self.mask_files: list[str | None] = [self.spec.find_mask_path(f) for f in self.im_files]
        no_rule = [f for f, m in zip(self.im_files, self.mask_files) if m is None]
        if no_rule:
            LOGGER.warning(f"{self.prefix}WARNING ⚠️ {len(no_rule)} images have no '{self.images_dir}' folder in "
                           f"their path (e.g. {no_rule[0]}), so no mask can be paired with them")
        self.has_semantic = np.array([m is not None and os.path.isfile(m) for m in self.mask_files], dtype=bool)
        self.has_boxes = np.array([os.path.isfile(f) for f in self.label_files])
        self.sems: list = [None] * self.n
        kinds = self.has_boxes.astype(int) * 2 + self.has_semantic
        self._pools = {k: [i for i in range(self.n) if kinds[i] == k] for k in np.unique(kinds)}
        self._kinds = kinds
        n_sem, n_box, n = int(self.has_semantic.sum()), int(self.has_boxes.sum()), self.n
        LOGGER.info(f"{self.prefix}{n_sem}/{n} images with a semantic mask, {n_box}/{n} with box labels, "
                    f"{int((self.has_semantic & self.has_boxes).sum())} with both")
        without = [Path(f).name for f, m in zip(self.im_files, self.has_semantic) if not m]
        if 0 < len(without) < n:
            first = ", ".join(without[:MISSING_NAMED]) + (f" and {len(without) - MISSING_NAMED} more"
                                                          if len(without) > MISSING_NAMED else "")
            LOGGER.info(f"{self.prefix}{len(without)} image(s) without a semantic mask (they train boxes only): "
                        f"{first}")
        if not n_sem:
            example = next((m for m in self.mask_files if m), None)
            LOGGER.warning(f"{self.prefix}WARNING ⚠️ no semantic masks found for {self.path}"
                           + (f": expected e.g. {example}" if example else ""))
        elif self.spec.id_map is None:
            self._check_ids()

    def _check_ids(self, k: int = 16) -> None:
        """Warn once when the first masks hold values that are neither a class nor ignore_index (e.g. Cityscapes
        labelIds given where trainIds are expected): without an id_map they can only be ignored."""
        for i in np.flatnonzero(self.has_semantic)[:k]:
            try:
                m = cv2.imdecode(np.fromfile(self.mask_files[i], dtype=np.uint8), cv2.IMREAD_UNCHANGED)
            except OSError:
                continue
            bad = [] if m is None or m.ndim != 2 else self.spec.unknown_values(m)
            if bad:
                LOGGER.warning(f"{self.prefix}WARNING ⚠️ {self.mask_files[i]}: mask values {bad[:10]} are no class id "
                               f"(0-{self.spec.nc - 1}) and not ignore_index {self.ignore_index}: they are "
                               f"ignored (an id_map in the data YAML's semantic section maps raw values to classes)")
                return

    def labelled(self, i: int) -> tuple[bool, bool]:
        return bool(self.has_boxes[i]), bool(self.has_semantic[i])

    def mosaic_pool(self, i: int) -> list[int]:
        if len(self._pools) == 1:
            return self.indices  # one kind of image (the usual case): draws exactly as detection does
        return self._pools[self._kinds[i]]

    def load_semantic(self, i: int, hw0: tuple[int, int], hw: tuple[int, int]) -> np.ndarray:
        """Image i's class-id mask resized (nearest) to hw; all ignore_index when it has none."""
        if self.sems[i] is not None and self.sems[i].shape == tuple(hw):
            return self.sems[i]
        if not self.has_semantic[i]:
            return np.full(hw, self.ignore_index, self.spec.dtype)
        f = self.mask_files[i]
        try:
            raw = read_mask(f, hw0)
        except MaskError as e:
            raise SampleLoadError(f, str(e), image=self.im_files[i]) from None
        m = self.spec.remap(raw)
        if m.shape != tuple(hw):
            m = cv2.resize(m, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
        return m

    def _cache_in_ram(self, i: int) -> int:
        nbytes = super()._cache_in_ram(i)
        self.sems[i] = self.load_semantic(i, self.im_hw0[i], self.im_hw[i])
        return nbytes + self.sems[i].nbytes

    def item(self, index: int, sample) -> dict:
        sem = sample["semantic"]
        sem = torch.from_numpy(sem) if sem.dtype == np.uint8 else torch.from_numpy(sem.astype(np.int64))
        return {**super().item(index, sample), "semantic": sem,
                "has_semantic": bool(sample.get("has_semantic", False)), "has_boxes": bool(sample.get("has_boxes"))}

    @staticmethod
    def collate_fn(batch: list[dict]) -> dict:
        """YoloDataset's batch plus semantic (B, H, W), has_semantic (B,) and has_boxes (B,) bool."""
        from utils.data.loader import stack_for_transfer

        return {**YoloDataset.collate_fn(batch), "semantic": stack_for_transfer([b["semantic"] for b in batch]),
                "has_semantic": torch.tensor([b["has_semantic"] for b in batch], dtype=torch.bool),
                "has_boxes": torch.tensor([b["has_boxes"] for b in batch], dtype=torch.bool)}

    supports_quad = False

    @staticmethod
    def collate_fn4(batch):
        """The quad collate tiles images; refuse rather than mislabel the masks."""
        raise ValueError("--quad is not supported with semantic masks")
