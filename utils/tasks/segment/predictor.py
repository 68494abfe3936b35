"""Instance-segmentation inference (segment/predict.py): detect.py's Predictor with masks drawn and saved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from utils.boxes import scale_boxes
from utils.engine.predictor import Predictor
from utils.tasks.segment.masks import masks2segments, process_mask, process_mask_native, unletterbox
from utils.tasks.segment.task import NM


class SegmentPredictor(Predictor):
    """NMS with mask coefficients; each image's masks are assembled when its detections are handled."""

    task = "segment"

    def postprocess(self, out) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image: (n, 6 + 32) detections and that image's prototypes."""
        from utils.nms import non_max_suppression

        pred, proto = out[0], out[1]
        dets = non_max_suppression(pred, self.opt.conf_thres, self.opt.iou_thres, self.opt.classes,
                                   self.opt.agnostic_nms, max_det=self.opt.max_det, nm=NM)
        return list(zip(dets, proto))

    def describe(self, item: tuple[torch.Tensor, torch.Tensor]) -> str:
        """Counts per class, as detection."""
        return super().describe(item[0])

    def handle(self, item: tuple[torch.Tensor, torch.Tensor], im: torch.Tensor, im0: np.ndarray, save_dir: Path,
               stem: str, p: Path) -> np.ndarray:
        """Masks in the original image (retina: assembled there; else at input size, then un-letterboxed)."""
        from utils.plots import Annotator, colors

        det, proto = item
        if not len(det):
            return super().handle(det, im, im0, save_dir, stem, p)
        if self.opt.retina_masks:
            boxes0 = scale_boxes(im.shape[2:], det[:, :4].clone(), im0.shape).round()  # the base scales det itself
            masks = process_mask_native(proto, det[:, 6:], boxes0, im0.shape[:2])
        else:
            masks = process_mask(proto, det[:, 6:], det[:, :4], im.shape[2:], upsample=True)
            masks = unletterbox(masks, im0.shape[:2]).gt_(0.5)
        if self.opt.save_txt:
            self._save_polygons(det, masks, im0.shape[:2], save_dir / "labels" / f"{stem}.txt")
        ann = Annotator(im0)
        ann.masks(masks.cpu().numpy(), [colors(int(c), True) for c in det[:, 5].tolist()], alpha=0.5)
        save_txt, self.opt.save_txt = self.opt.save_txt, False  # boxes are drawn by the base; polygons saved here
        try:
            return super().handle(det[:, :6], im, ann.result(), save_dir, stem, p)
        finally:
            self.opt.save_txt = save_txt

    def _save_polygons(self, det: torch.Tensor, masks: torch.Tensor, shape0: tuple[int, int], file: Path) -> None:
        """One `cls x1 y1 x2 y2 ... [conf]` row per mask outline, normalised to the original image."""
        h, w = shape0
        with open(file, "a") as f:
            for seg, row in zip(masks2segments(masks), det[:, :6].tolist()):
                if not len(seg):
                    continue
                xy = (seg / np.array((w, h), np.float32)).reshape(-1).tolist()
                line = (int(row[5]), *xy, row[4]) if self.opt.save_conf else (int(row[5]), *xy)
                f.write(("%g " * len(line)).rstrip() % line + "\n")
