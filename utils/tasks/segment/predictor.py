"""segment/predict.py's per-image output: detection's boxes plus instance masks, drawn and saved as polygons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from utils.engine.task import ImageResult
from utils.tasks.detect.predictor import DetectRenderer
from utils.tasks.segment.masks import masks2segments


class SegmentRenderer(DetectRenderer):
    """Masks assembled for the original image (native with --retina-masks, else at input size, un-letterboxed)."""

    def render(self, result: ImageResult, im0: np.ndarray, stem: str) -> np.ndarray:
        """Masks blended under the boxes; --save-txt writes one polygon per mask instead of a box."""
        from utils.plots import Annotator, colors

        det0, masks = result.boxes, result.masks
        annotator = Annotator(im0, line_width=self.opt.line_thickness, example=str(self.names))
        if not len(det0):
            return annotator.result()
        det0 = torch.cat((det0[:, :4].round(), det0[:, 4:6]), 1)
        if self.opt.save_txt:
            self.write_polygons(det0, masks, im0.shape[:2], stem)
        if self.opt.save_crop:
            self.save_crops(det0, im0, stem)
        annotator.masks(masks.cpu().numpy(), [colors(int(c), True) for c in det0[:, 5].tolist()], alpha=0.5)
        self.draw_boxes(annotator, det0)
        return annotator.result()

    def write_polygons(self, det0: torch.Tensor, masks: torch.Tensor, shape0: tuple[int, int], stem: str) -> None:
        """One `cls x1 y1 x2 y2 ... [conf]` row per mask outline, normalised to the original image."""
        h, w = shape0
        file: Path = self.save_dir / "labels" / f"{stem}.txt"
        with open(file, "a") as f:
            for seg, row in zip(masks2segments(masks), det0.tolist()):
                if not len(seg):
                    continue
                xy = (seg / np.array((w, h), np.float32)).reshape(-1).tolist()
                line = (int(row[5]), *xy, row[4]) if self.opt.save_conf else (int(row[5]), *xy)
                f.write(("%g " * len(line)).rstrip() % line + "\n")
