"""Calibration images for quantised exports (--int8): images of --data, prepared as the model sees them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from utils.data.formats import is_image_file
from utils.data.imageio import letterbox
from utils.export.formats import ExportError

CALIBRATION_IMAGES = 100  # as upstream's representative dataset for TFLite int8


def _image_files(data: str | Path) -> list[Path]:
    """The training images of a data YAML, or of a classification folder (its train/ split if it has one)."""
    p = Path(data)
    if p.is_dir():
        root = p / "train" if (p / "train").is_dir() else p
        return sorted(f for f in root.rglob("*") if is_image_file(str(f)))
    from utils.data.dataset_config import check_dataset

    d = check_dataset(p)
    out = []
    for entry in d["train"] if isinstance(d["train"], list) else [d["train"]]:
        e = Path(entry)
        if e.is_dir():
            out += sorted(f for f in e.rglob("*") if is_image_file(str(f)))
        elif e.suffix == ".txt" and e.is_file():
            out += [e.parent / x.strip() if not Path(x.strip()).is_absolute() else Path(x.strip())
                    for x in e.read_text().splitlines() if x.strip()]
    return [f for f in out if is_image_file(str(f))]


def calibration_images(data: str | Path, imgsz: list[int], preprocess: dict | None = None,
                       n: int = CALIBRATION_IMAGES) -> list[np.ndarray]:
    """Up to `n` (1, 3, h, w) float32 inputs from the images of `data`: letterboxed RGB in 0-1 for detection-type
    models, or the classifier's preprocessing (centre crop, ImageNet statistics) when `preprocess` is given."""
    if not data:
        raise ExportError("--int8 needs --data: its images calibrate the quantisation")
    files = _image_files(data)[:n]
    if not files:
        raise ExportError(f"--data {data}: no training images to calibrate --int8 on")
    h, w = imgsz
    out = []
    for f in files:
        im = cv2.imread(str(f))
        if im is None:
            continue
        if preprocess:  # a classifier: the largest centred square, resized, normalised
            s = min(im.shape[:2])
            top, left = (im.shape[0] - s) // 2, (im.shape[1] - s) // 2
            im = cv2.resize(im[top:top + s, left:left + s], (w, h), interpolation=cv2.INTER_LINEAR)
            x = (im[..., ::-1] / 255.0 - np.array(preprocess["mean"])) / np.array(preprocess["std"])
        else:
            x = letterbox(im, (h, w), auto=False)[0][..., ::-1] / 255.0
        out.append(np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32))
    if not out:
        raise ExportError(f"--data {data}: none of its images could be read")
    return out
