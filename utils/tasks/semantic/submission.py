"""Cityscapes benchmark submissions: one single-channel PNG of label ids per test image, at full resolution.

The server and cityscapesscripts' evalPixelLevelSemanticLabeling find a prediction by its name: any
`<city>_<seq>_<frame>*.png` anywhere under the results folder, one per image. We write
`<out_dir>/<city>_<seq>_<frame>_pred.png` (flat, so a name can never appear twice); zip the folder to submit.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from utils.data.dataset_config import DatasetError
from utils.tasks.semantic.labels import train_ids_to_ids

CS_NAME = re.compile(r"^([^_/]+)_(\d+)_(\d+)(?:_|\.|$)")


def submission_name(image_path: str | Path) -> str:
    """'berlin_000000_000019_leftImg8bit.png' -> 'berlin_000000_000019_pred.png'."""
    m = CS_NAME.match(Path(image_path).name)
    if not m:
        raise DatasetError(f"{image_path}: not a Cityscapes file name (<city>_<seq>_<frame>_leftImg8bit.png), "
                           f"the benchmark could not match its prediction")
    return f"{m[1]}_{m[2]}_{m[3]}_pred.png"


def write_submission(pred_train_ids, image_path: str | Path, out_dir: str | Path) -> Path:
    """Save a (H0, W0) train-id prediction as a label-id PNG named for the benchmark; returns its path."""
    p = pred_train_ids
    p = p.detach().cpu().numpy() if isinstance(p, torch.Tensor) else np.asarray(p)
    if p.ndim != 2:
        raise ValueError(f"prediction for {image_path} must be (H, W) train ids, got shape {p.shape}")
    name = submission_name(image_path)
    if Path(image_path).is_file():
        with Image.open(image_path) as im:
            w, h = im.size
        if (h, w) != p.shape:
            raise ValueError(f"prediction for {image_path} is {p.shape[1]}x{p.shape[0]} but the image is {w}x{h}: "
                             f"map it back to full resolution first")
    out = Path(out_dir) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), train_ids_to_ids(p)):
        raise OSError(f"could not write {out}")
    return out
