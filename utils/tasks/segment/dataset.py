"""The instance-segmentation dataset: YoloDataset samples plus ground-truth masks built from their polygons."""

from __future__ import annotations

import numpy as np
import torch

from utils.tasks.detect.dataset import YoloDataset
from utils.tasks.segment.masks import polygons2masks, polygons2masks_overlap


class SegmentDataset(YoloDataset):
    """YoloDataset items plus `masks` at 1/downsample_ratio of the image.

    overlap: masks (1, h, w), pixel k = k-th label of the image (labels sorted by mask area, largest first);
    otherwise (n, h, w) binary, one per label.
    """

    mosaic_shuffle = False

    def __init__(self, *args, overlap: bool = True, downsample_ratio: int = 4, **kwargs):
        super().__init__(*args, **kwargs)
        self.overlap, self.downsample_ratio = overlap, max(int(downsample_ratio), 1)

    def item(self, index: int, sample) -> dict:
        hw, r = sample["img"].shape[:2], self.downsample_ratio
        segments, n = sample["segments"], len(sample["boxes"])
        if n and len(segments) == n:
            if self.overlap:
                masks, order = polygons2masks_overlap(hw, segments, downsample_ratio=r)
                masks = masks[None]
                sample = {**sample, "cls": sample["cls"][order], "boxes": sample["boxes"][order]}
            else:
                masks = polygons2masks(hw, segments, downsample_ratio=r)
        else:  # box-only labels (or none): nothing to supervise the masks with, so they stay empty
            masks = np.zeros((1 if self.overlap else n, hw[0] // r, hw[1] // r), np.uint8)
        return {**super().item(index, sample), "masks": torch.from_numpy(masks)}

    @staticmethod
    def collate_fn(batch: list[dict]) -> dict:
        """YoloDataset's batch plus masks concatenated on dim 0 (one per image, or one per label)."""
        return {**YoloDataset.collate_fn(batch), "masks": torch.cat([b["masks"] for b in batch], 0)}

    supports_quad = False

    @staticmethod
    def collate_fn4(batch):
        """The quad collate tiles images, which the mask maps do not follow: refuse instead of mislabelling."""
        raise ValueError("--quad is not supported for instance segmentation")
