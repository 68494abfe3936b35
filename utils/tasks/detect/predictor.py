"""detect.py's per-image output: boxes scaled to the original image, drawn, and written as labels and crops."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from utils.boxes import xyxy2xywh
from utils.engine.task import ImageResult


def add_detection_predict_arguments(p: argparse.ArgumentParser) -> None:
    """detect.py's own flags (YOLOv5 v7.0 names and defaults); segment/predict.py takes them too."""
    p.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-crop", action="store_true", help="save cropped prediction boxes")
    p.add_argument("--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3")
    p.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    p.add_argument("--line-thickness", default=3, type=int, help="bounding box thickness (pixels)")
    p.add_argument("--hide-labels", default=False, action="store_true", help="hide labels")
    p.add_argument("--hide-conf", default=False, action="store_true", help="hide confidences")
    p.add_argument("--save-as-video", action="store_true", help="also join the saved images into one video")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of --save-as-video")


def count_classes(classes: torch.Tensor, names: dict[int, str]) -> str:
    """'2 persons, 1 tie' for a tensor of class indices, '(no detections)' when empty."""
    counts = Counter(int(c) for c in classes.tolist())
    return ", ".join(f"{n} {names.get(c, c)}{'s' * (n > 1)}" for c, n in sorted(counts.items())) or "(no detections)"


class DetectRenderer:
    """Scales one image's detections (n, 6) [xyxy, conf, cls] to it, writes labels and crops, draws the boxes."""

    def __init__(self, opt: argparse.Namespace, names: dict[int, str], save_dir: Path):
        self.opt, self.names, self.save_dir = opt, names, save_dir

    def describe(self, result: ImageResult) -> str:
        """Counts per class."""
        return count_classes(result.boxes[:, 5], self.names)

    def close(self) -> None:
        """--save-as-video: the saved images, in natural order, as <run folder>/<run name>.mp4."""
        from utils.data.video import frames_in, frames_to_video

        if self.opt.save_as_video and not self.opt.nosave and frames_in(self.save_dir):  # video sources: already one
            from utils.log import LOGGER

            out = frames_to_video(self.save_dir, self.save_dir / f"{self.save_dir.name}.mp4", fps=self.opt.fps)
            LOGGER.info(f"Saved the frames as {out}")

    def render(self, result: ImageResult, im0: np.ndarray, stem: str) -> np.ndarray:
        """The task's ImageResult (boxes in original-image pixels): written (--save-txt, --save-crop) and drawn."""
        from utils.plots import Annotator

        annotator = Annotator(im0, line_width=self.opt.line_thickness, example=str(self.names))
        det = result.boxes
        if len(det):
            det = det.clone()
            det[:, :4] = det[:, :4].round()  # whole pixels, as upstream writes and draws them
            if self.opt.save_txt:
                self.write_labels(det, im0.shape, stem)
            if self.opt.save_crop:
                self.save_crops(det, im0, stem)
            self.draw_boxes(annotator, det)
        return annotator.result()

    def write_labels(self, det: torch.Tensor, shape0: tuple, stem: str) -> None:
        """`cls x y w h [conf]` rows normalised by the original image size, appended to labels/<stem>.txt."""
        gn = torch.tensor(shape0)[[1, 0, 1, 0]]
        with open(self.save_dir / "labels" / f"{stem}.txt", "a") as f:
            for *xyxy, conf, cls in reversed(det.tolist()):  # upstream's order: lowest confidence first
                xywh = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gn).view(-1).tolist()
                line = (int(cls), *xywh, conf) if self.opt.save_conf else (int(cls), *xywh)
                f.write(("%g " * len(line)).rstrip() % line + "\n")

    def save_crops(self, det: torch.Tensor, im0: np.ndarray, stem: str) -> None:
        """One crop per box under crops/<class name>/ (taken before anything is drawn)."""
        from utils.plots import save_one_box

        for *xyxy, _, cls in reversed(det.tolist()):
            name = self.names.get(int(cls), str(int(cls)))
            save_one_box(xyxy, im0, file=self.save_dir / "crops" / name / f"{stem}.jpg", BGR=True)

    def draw_boxes(self, annotator, det: torch.Tensor) -> None:
        """Boxes with 'name conf' labels (as --hide-labels / --hide-conf say), lowest confidence first."""
        from utils.plots import colors

        for *xyxy, conf, cls in reversed(det.tolist()):
            c = int(cls)
            name = self.names.get(c, str(c))
            label = None if self.opt.hide_labels else (name if self.opt.hide_conf else f"{name} {conf:.2f}")
            annotator.box_label(xyxy, label, color=colors(c, True))
