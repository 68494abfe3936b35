"""Validation plots of class maps: each image beside its label and its prediction, in the set's colours."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from utils.data.semantic_spec import SemanticSpec
from utils.tasks.semantic.palette import colourise, palette_for

MAX_ROWS = 4  # images per mosaic, one row each: image | label | prediction


def plot_class_maps(batch: dict, logits: list[torch.Tensor], spec: SemanticSpec, fname: Path) -> None:
    """Write a mosaic of (image, label, prediction) rows at the network input size for the first images."""
    colors = palette_for(spec.nc, spec.palette)
    rows = []
    for i in range(min(MAX_ROWS, len(logits))):
        img = (batch["img"][i].float().clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy()[..., ::-1]
        label = colourise(batch["semantic"][i], colors, bgr=True)
        pred = logits[i].float()
        if pred.shape[-2:] != img.shape[:2]:
            pred = torch.nn.functional.interpolate(pred[None], size=img.shape[:2], mode="bilinear")[0]
        rows.append(np.concatenate((img, label, colourise(pred.argmax(0), colors, bgr=True)), 1))
    if rows:
        fname.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(fname), np.concatenate(rows, 0))
