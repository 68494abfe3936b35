"""classify/predict.py's per-image output: the five most probable classes, written on the image and to text."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from utils.engine.task import ImageResult


def top5(prob: torch.Tensor) -> list[int]:
    """Indices of the (at most) five most probable classes, best first."""
    return prob.argsort(0, descending=True)[:5].tolist()


class ClassifyRenderer:
    """One image's class probabilities (nc,) as 'p name' lines on the image and in labels/<stem>.txt."""

    line_thickness = 2  # upstream classify/predict.py has no --line-thickness

    def __init__(self, opt: argparse.Namespace, names: dict[int, str], save_dir: Path):
        self.opt, self.names, self.save_dir = opt, names, save_dir

    def describe(self, result: ImageResult) -> str:
        """'name p, name p, ...' for the five most probable classes."""
        prob = result.probs
        return ", ".join(f"{self.names.get(j, j)} {prob[j]:.2f}" for j in top5(prob))

    def close(self) -> None:
        """Nothing to finish."""

    def render(self, result: ImageResult, im0: np.ndarray, stem: str) -> np.ndarray:
        """Write the top-5 lines (and with --save-txt to labels/<stem>.txt); returns the drawing."""
        from utils.plots import Annotator

        prob = result.probs
        lines = [f"{prob[j]:.2f} {self.names.get(j, j)}" for j in top5(prob)]
        if self.opt.save_txt:
            with open(self.save_dir / "labels" / f"{stem}.txt", "a") as f:
                f.write("\n".join(lines) + "\n")
        annotator = Annotator(im0, line_width=self.line_thickness)
        step = int(28 * annotator.fs) + 4  # cv2 writes one line at a time
        for k, line in enumerate(lines):
            annotator.text((32, 32 + k * step), line, txt_color=(255, 255, 255))
        return annotator.result()
