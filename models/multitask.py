"""Detection + semantic segmentation in one model: the detector of a YAML plus the head of its `semantic:` section."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.semantic import SemanticHead
from models.yolo import DetectionModel, _cfg_and_file, parse_model, scale_img
from utils.errors import ModelConfigError
from utils.log import LOGGER


class SemanticDetectionModel(DetectionModel):
    """Detection + semantic segmentation: a DetectionModel plus the head of the YAML's `semantic:` section, which
    reads neck layers by index and runs after Detect.

    Outputs, seg logits always (B, nc_seg, H, W) at the input size:
      train: (Detect's per-level maps, seg logits, aux logits: a list, empty for heads without auxiliary outputs);
      eval: (decoded detections (B, N, 5+nc), Detect's per-level maps, seg logits);
      export (Detect.export set): (decoded detections, seg logits).
    """

    task = "semantic"  # checkpoints name the task that serves the model

    def __init__(self, cfg: str | Path | dict = "yolov5s-city.yaml", ch: int = 3, nc: int | None = None,
                 anchors: list | int | None = None, nc_seg: int | None = None):
        d, _ = _cfg_and_file(cfg)
        if nc_seg and nc_seg != d.get("nc_seg"):
            LOGGER.info(f"Overriding model.yaml nc_seg={d.get('nc_seg')} with nc_seg={nc_seg}")
            d["nc_seg"] = int(nc_seg)
        super().__init__(d, ch, nc, anchors)
        self.nc_seg = self.yaml["nc_seg"]
        self.seg_names = {i: f"class{i}" for i in range(self.nc_seg)}
        self._check_seg_size(ch)

    def _parse_layers(self, ch: int) -> tuple[nn.Sequential, list[int]]:
        """Detector layers (self.model) and the semantic section's layers (self.semantic, numbered after them)."""
        src, rows = self.yaml.get("yaml_file") or "model yaml", self.yaml.get("semantic")
        n = len(self.yaml["backbone"]) + len(self.yaml["head"])
        if not rows or not isinstance(rows, list):
            raise ModelConfigError(f"{src}: no semantic section (rows [from, number, module, args] after the head)")
        nc_seg = self.yaml.get("nc_seg")
        if not isinstance(nc_seg, int) or isinstance(nc_seg, bool) or nc_seg < 1:
            raise ModelConfigError(f"{src}: the semantic section needs nc_seg, the number of semantic classes "
                             f"(a positive integer in the YAML or from the data), got {nc_seg!r}")
        f = rows[0][0] if isinstance(rows[0], (list, tuple)) and rows[0] else None
        if any(j in (-1, n - 1) for j in (f if isinstance(f, list) else [f])):
            raise ModelConfigError(f"{src}: layer {n}: the semantic head reads neck layers by index, "
                                   f"not Detect's output")
        layers, save = parse_model(self.yaml, ch=[ch])
        if not isinstance(layers[-1], SemanticHead):
            raise ModelConfigError(f"{src}: the semantic section must end with a semantic head (SemanticPSP or "
                             f"SemanticBiSe), got {type(layers[-1]).__name__}")
        self.semantic = layers[n:]  # slicing keeps the layer numbers as keys: semantic.25.*
        return layers[:n], save

    def _check_seg_size(self, ch: int) -> None:
        s = int(self.stride.max())
        training = self.training
        self.eval()
        try:
            with torch.no_grad():
                seg = self._forward_both(torch.zeros(1, ch, 2 * s, 4 * s))[1]
        finally:
            self.train(training)
        if tuple(seg.shape[-2:]) != (2 * s, 4 * s):
            raise ModelConfigError(f"{self.yaml_file or 'model yaml'}: the semantic head gives {tuple(seg.shape[-2:])} "
                             f"logits for a {2 * s}x{4 * s} input; it must read the levels at strides 8, 16, 32")

    def forward(self, x: torch.Tensor, augment: bool = False, profile: bool = False, visualize=False):
        """Outputs by mode as in the class docstring; augment=True: (merged detections, None, merged seg logits)."""
        if augment:
            return self._forward_augment(x)
        det, seg, aux = self._forward_both(x, profile, visualize)
        if self.training:
            return det, seg, aux
        return (det[0], seg) if self.model[-1].export else (det[0], det[1], seg)

    def _forward_both(self, x: torch.Tensor, profile: bool = False, visualize=False):
        """(Detect's output, seg logits, aux logits)."""
        y, dt = [], ([] if profile else None)
        det = self._run_layers(self.model, x, y, dt, visualize)
        seg = self._run_layers(self.semantic, det, y, dt, visualize)
        seg, aux = seg if isinstance(seg, tuple) else (seg, [])
        return det, seg, aux

    def _forward_augment(self, x: torch.Tensor) -> tuple[torch.Tensor, None, torch.Tensor]:
        """Detections merged as DetectionModel does; seg class probabilities of the three passes mapped back onto
        the input and averaged, returned as log-probabilities (valid logits: softmax gives the mean probability)."""
        if self.training:
            raise RuntimeError("test-time augmentation needs the model in eval mode (model.eval())")
        img_size = x.shape[-2:]
        gs = int(self.stride.max())
        dets, prob = [], 0
        for si, fi in zip((1, 0.83, 0.67), (None, 3, None)):  # scales, flips (3 = left-right)
            xi = scale_img(x.flip(fi) if fi else x, si, gs=gs)
            det, seg, _ = self._forward_both(xi)
            dets.append(self._descale_pred(det[0], fi, si, img_size))
            prob = prob + descale_seg(seg, fi, si, img_size).float().softmax(1)
        seg = (prob / 3).clamp_min(torch.finfo(torch.float32).tiny).log().to(seg.dtype)
        return torch.cat(self._clip_augmented(dets), 1), None, seg


def descale_seg(seg: torch.Tensor, flips: int | None, scale: float, img_size) -> torch.Tensor:
    """Map per-pixel maps of an image that went through scale_img (after a flip of dim `flips`) back onto it."""
    h, w = img_size
    if scale != 1.0:
        seg = F.interpolate(seg[..., : int(h * scale), : int(w * scale)], size=(h, w), mode="bilinear",
                            align_corners=False)
    return seg.flip(flips) if flips else seg
