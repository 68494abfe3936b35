"""The instance-segmentation dataset: YoloDataset samples plus ground-truth masks built from their polygons."""

from __future__ import annotations

import numpy as np
import torch

from utils.data.loader import hwc_bgr_to_chw_rgb, stack_for_transfer
from utils.tasks.detect.dataset import YoloDataset
from utils.tasks.segment.masks import polygons2masks, polygons2masks_overlap


class SegmentDataset(YoloDataset):
    """Items are (image, labels (n, 6), path, shapes, masks) with masks at 1/downsample_ratio of the image.

    overlap: masks (1, h, w), pixel k = k-th label of the image (labels sorted by mask area, largest first);
    otherwise (n, h, w) binary, one per label.
    """

    mosaic_shuffle = False

    def __init__(self, *args, overlap: bool = True, downsample_ratio: int = 4, **kwargs):
        super().__init__(*args, **kwargs)
        self.overlap, self.downsample_ratio = overlap, max(int(downsample_ratio), 1)

    def __getitem__(self, index: int):
        index, (img, labels, segments, shapes) = self.get_sample_safe(self.indices[index])
        hw, r = img.shape[:2], self.downsample_ratio
        n = len(labels)
        if n and len(segments) == n:
            if self.overlap:
                masks, order = polygons2masks_overlap(hw, segments, downsample_ratio=r)
                masks, labels = masks[None], labels[order]
            else:
                masks = polygons2masks(hw, segments, downsample_ratio=r)
        else:  # box-only labels (or none): nothing to supervise the masks with, so they stay empty
            masks = np.zeros((1 if self.overlap else n, hw[0] // r, hw[1] // r), np.uint8)
        labels_out = torch.zeros((n, 6))
        if n:
            labels_out[:, 1:] = torch.from_numpy(np.ascontiguousarray(labels))
        return hwc_bgr_to_chw_rgb(img), labels_out, self.im_files[index], shapes, torch.from_numpy(masks)

    @staticmethod
    def collate_fn(batch):
        """Stack images, index targets by image, concatenate masks on dim 0 (one per image, or one per label)."""
        im, label, path, shapes, masks = zip(*batch)
        for i, lb in enumerate(label):
            lb[:, 0] = i
        return stack_for_transfer(im), torch.cat(label, 0), path, shapes, torch.cat(masks, 0)

    @staticmethod
    def collate_fn4(batch):
        """The quad collate tiles images, which the mask maps do not follow: refuse instead of mislabelling."""
        raise ValueError("--quad is not supported for instance segmentation")
