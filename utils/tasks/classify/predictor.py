"""classify/predict.py's predictor: upstream's centre crop, softmax, top-5 classes per image written on it."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from utils.engine.predictor import Predictor
from utils.tasks.classify.transforms import IMAGENET_MEAN, IMAGENET_STD, center_crop


class ClassifyPredictor(Predictor):
    """Predictor whose results are class probabilities (one (nc,) tensor per image) instead of boxes."""

    post_name = "post-process"
    task = "classify"

    def __init__(self, opt: argparse.Namespace):
        data, opt.data = getattr(opt, "data", ""), ""  # the base class reads a data YAML; here --data is a folder
        super().__init__(opt)
        opt.data = data
        if data:
            from utils.tasks.classify.dataset import check_classify_data

            self.names = check_classify_data(data)["names"]

    def dataset(self):
        """The --source loader, each frame centre-cropped as in validation (CHW RGB uint8)."""
        from utils.data.sources import LoadImages, LoadStreams, is_stream_source

        size = self.imgsz[0]

        def transform(im0: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(center_crop(im0, size).transpose(2, 0, 1)[::-1])

        src, kw = str(self.opt.source), {"img_size": self.imgsz, "stride": self.stride, "transforms": transform,
                                          "vid_stride": self.opt.vid_stride}
        if is_stream_source(src):
            return LoadStreams(src, **kw), True
        return LoadImages(src, **kw), False

    def forward(self, im: torch.Tensor, visualize: Path | bool = False) -> torch.Tensor:
        """ImageNet-normalise the 0-1 batch (as upstream's ToTensor + Normalize), then the logits."""
        mean = torch.tensor(IMAGENET_MEAN, device=im.device, dtype=im.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=im.device, dtype=im.dtype).view(1, 3, 1, 1)
        return self.model((im - mean) / std, visualize=visualize)

    def postprocess(self, out: torch.Tensor) -> list[torch.Tensor]:
        """Logits -> per-image class probabilities."""
        return list(torch.softmax(out.float(), 1))

    def top5(self, prob: torch.Tensor) -> list[int]:
        """Indices of the (at most) five most probable classes, best first."""
        return prob.argsort(0, descending=True)[:5].tolist()

    def describe(self, prob: torch.Tensor) -> str:
        """'name p, name p, ...' for the five most probable classes."""
        return ", ".join(f"{self.names.get(j, j)} {prob[j]:.2f}" for j in self.top5(prob))

    def handle(self, prob: torch.Tensor, im: torch.Tensor, im0: np.ndarray, save_dir: Path, stem: str,
               p: Path) -> np.ndarray:
        """Write the top-5 lines on the image (and to labels/<stem>.txt with --save-txt); returns the drawing."""
        from utils.plots import Annotator

        lines = [f"{prob[j]:.2f} {self.names.get(j, j)}" for j in self.top5(prob)]
        if self.opt.save_txt:
            with open(save_dir / "labels" / f"{stem}.txt", "a") as f:
                f.write("\n".join(lines) + "\n")
        annotator = Annotator(im0, line_width=self.opt.line_thickness)
        if not self.opt.hide_labels:
            step = int(28 * annotator.fs) + 4  # cv2 writes one line at a time
            for k, line in enumerate(lines):
                annotator.text((32, 32 + k * step), line, txt_color=(255, 255, 255))
        return annotator.result()
