"""detect.py's output for a detection + semantic model: boxes over a translucent class map, the colour map itself,
and (--submit) Cityscapes label-id PNGs for the benchmark server."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from utils.engine.task import ImageResult
from utils.errors import ConfigError
from utils.tasks.detect.predictor import DetectRenderer
from utils.tasks.semantic.labels import is_cityscapes
from utils.tasks.semantic.palette import colourise, overlay, palette_for


class SemanticRenderer(DetectRenderer):
    """Class map mapped back through the letterbox to the original image (any aspect ratio), then the boxes."""

    def __init__(self, opt: argparse.Namespace, names: dict[int, str], save_dir: Path, model: Any):
        super().__init__(opt, names, save_dir)
        self.seg_names = dict(model.seg_names)
        self.cityscapes = is_cityscapes(self.seg_names)
        self.colors = palette_for(len(self.seg_names), "cityscapes" if self.cityscapes else None)
        if opt.submit and not self.cityscapes:
            raise ConfigError("--submit writes Cityscapes label ids, but this model's semantic classes are not the 19 "
                              "Cityscapes train-id classes")
        if not 0 <= opt.alpha <= 1:
            raise ConfigError(f"--alpha must be in [0, 1], got {opt.alpha}")

    def render(self, result: ImageResult, im0: np.ndarray, stem: str) -> np.ndarray:
        """Class map at the original size: submitted, saved in colour under maps/, blended under the boxes."""
        class_map = result.class_map
        if self.opt.submit:
            from utils.tasks.semantic.submission import write_submission

            write_submission(class_map, f"{stem}.png", self.save_dir / "submit")
        if self.opt.nosave:
            return super().render(result, im0, stem)
        colour = colourise(class_map, self.colors, bgr=True)
        (self.save_dir / "maps").mkdir(exist_ok=True)
        cv2.imwrite(str(self.save_dir / "maps" / f"{stem}.png"), colour)
        return super().render(result, overlay(im0, colour, self.opt.alpha), stem)
