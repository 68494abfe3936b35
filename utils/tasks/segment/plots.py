"""Batch mosaics with instance masks: masks are blended into the images, then plot_images draws the boxes."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from utils.boxes import xyxy2xywh
from utils.plots import colors, plot_images
from utils.tasks.segment.masks import gt_instance_masks

ALPHA = 0.5
PLOT_CONF = 0.25  # plot_images hides lower-confidence boxes; their masks are hidden too


def _blend(img: torch.Tensor, masks: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """img (3, H, W) 0-1 RGB with binary masks (n, h, w) painted in their class colours (masks resized to H, W)."""
    if not len(masks):
        return img
    h, w = img.shape[1:]
    if masks.shape[1:] != (h, w):
        masks = F.interpolate(masks[None].float(), (h, w), mode="nearest")[0]
    for m, c in zip(masks.bool(), classes):
        rgb = torch.tensor(colors(c), dtype=img.dtype, device=img.device)[:, None] / 255
        img[:, m] = img[:, m] * (1 - ALPHA) + rgb * ALPHA
    return img


def overlay_masks(imgs: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor, overlap: bool) -> torch.Tensor:
    """A copy of a batch (B, 3, H, W) with each image's ground-truth masks blended in."""
    out = imgs.detach().float().clone()
    for i in range(len(out)):
        sel = targets[:, 0] == i
        nl = int(sel.sum())
        if not nl:
            continue
        gt = gt_instance_masks(masks[[i]] if overlap else masks[sel.to(masks.device)], nl, overlap)
        _blend(out[i], gt, targets[sel, 1].int().tolist())
    return out


def plot_val_batch_masks(batch: dict, preds: list, save_dir: Path, index: int,
                         names: dict[int, str] | None = None) -> None:
    """val_batch{index}_labels.jpg and val_batch{index}_pred.jpg, boxes and masks."""
    img, targets = batch["img"], batch["targets"]
    labelled = overlay_masks(img, targets, batch["masks"], batch["overlap"])
    plot_images(labelled, targets, batch["paths"], save_dir / f"val_batch{index}_labels.jpg", names=names)
    shown = img.detach().float().clone()
    rows = []
    for i, pred in enumerate(preds):
        det, masks = pred.det, pred.masks
        keep = det[:, 4] > PLOT_CONF
        _blend(shown[i], masks[keep], det[keep, 5].int().tolist())
        rows.append(torch.cat((torch.full((len(det), 1), i, device=det.device), det[:, 5:6],
                               xyxy2xywh(det[:, :4]), det[:, 4:5]), 1))
    rows = torch.cat(rows, 0) if rows else torch.zeros((0, 7))
    plot_images(shown, rows, batch["paths"], save_dir / f"val_batch{index}_pred.jpg", names=names)

