"""Instance segmentation: detection plus 32 prototype-mask coefficients per box (YOLOv5 v7.0 recipe)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from utils.data.loader import LoaderOptions
from utils.engine.task import ImageResult
from utils.errors import ConfigError
from utils.log import LOGGER
from utils.tasks.detect.task import DetectionTask
from utils.tasks.registry import Scripts, TaskEntry, register
from utils.tasks.segment.metric import SegMetric

NM = 32  # mask coefficients per detection (the Segment head's nm)


@dataclass(frozen=True)
class SegmentOptions:
    """Instance segmentation's own flags (segment/train.py: --mask-ratio, --no-overlap; val and predict:
    --retina-masks)."""

    mask_ratio: int = 4  # ground-truth masks at 1/mask_ratio of the input
    no_overlap: bool = False  # one binary mask per object instead of one index map per image
    retina_masks: bool = False  # predicted masks at input resolution (else at prototype resolution, as upstream's val)

    def __post_init__(self):
        if int(self.mask_ratio) < 1:
            raise ConfigError(f"--mask-ratio must be at least 1, got {self.mask_ratio}")


class SegPrediction(NamedTuple):
    """One image's instance-segmentation result."""

    det: torch.Tensor  # (n, 6) x1, y1, x2, y2, conf, cls in input pixels
    masks: torch.Tensor | None  # (n, h, w) binary masks, or None when the caller assembles them
    coefs: torch.Tensor  # (n, 32) mask coefficients
    proto: torch.Tensor  # (32, h/4, w/4) the image's prototypes


class SegmentationTask(DetectionTask):
    """Boxes and instance masks from a Segment head, trained with box/seg/obj/cls losses, scored by box and mask AP
    (its options: SegmentOptions)."""

    name = "segment"
    tta = False  # flipped/scaled passes would need their prototypes merged too: not done (upstream crashes)
    default_project = "runs/train-seg"
    loss_names = ("box_loss", "seg_loss", "obj_loss", "cls_loss")
    metric_names = SegMetric.names
    coco_iou_types = ("bbox", "segm")  # --save-json writes each mask as RLE; pycocotools scores boxes and masks
    fitness_weights = (0.0, 0.0, 0.1, 0.9, 0.0, 0.0, 0.1, 0.9)  # box P R mAP50 mAP50-95, then mask

    def __init__(self, options: SegmentOptions = SegmentOptions()):
        self.options = options
        self.overlap, self.mask_ratio, self.retina_masks = not options.no_overlap, int(options.mask_ratio), \
            options.retina_masks

    # ------------------------------------------------------------------------------------------ data
    def build_dataloader(self, path: Any, opts: LoaderOptions, hyp: dict, batch_size: int, stride: int, mode: str,
                         rank: int = -1, nc: int | None = None):
        if opts.quad:
            if mode == "train":
                LOGGER.warning("WARNING ⚠️ --quad is not supported for instance segmentation, ignoring it")
            opts = dataclasses.replace(opts, quad=False)
        return super().build_dataloader(path, opts, hyp, batch_size, stride, mode, rank=rank, nc=nc)

    def dataset_options(self, opts: LoaderOptions) -> dict:
        from utils.tasks.segment.dataset import SegmentDataset

        return {"dataset_cls": SegmentDataset,
                "dataset_kw": {"overlap": self.overlap, "downsample_ratio": self.mask_ratio}}

    def preprocess(self, batch: dict, device: torch.device, half: bool = False) -> dict:
        out = super().preprocess(batch, device, half)
        out["masks"] = batch["masks"].to(device, non_blocking=True).float()
        out["overlap"] = self.overlap
        return out

    # ------------------------------------------------------------------------------------------ loss and predictions
    def criterion(self, model: nn.Module, hyp: dict):
        from utils.tasks.segment.loss import SegmentationLoss

        loss = SegmentationLoss(model.model[-1], hyp, overlap=self.overlap)
        return lambda preds, batch: loss(preds, batch["targets"], batch["masks"])

    def split_eval_output(self, out: Any):
        """Eval output (decoded, proto, raw maps) -> ((decoded, proto), (raw maps, proto))."""
        return (out[0], out[1]), (out[2], out[1]) if len(out) > 2 else None

    def postprocess(self, preds: Any, batch: dict | None = None, masks: bool = True,
                    **kw: Any) -> list[SegPrediction]:
        """NMS with mask coefficients; per image its detections (n, 6) and, when `masks`, binary masks (n, h, w).

        Masks are at prototype resolution (at input resolution with retina_masks) in input coordinates; without
        `masks` (prediction) the renderer assembles them at the size it draws at, from coefs and proto.
        """
        from utils.tasks.segment.masks import process_mask

        pred, proto = preds
        dets = super().postprocess(pred, batch=batch, nm=NM, **kw)
        shape = tuple(batch["img"].shape[2:]) if batch is not None else None
        return [SegPrediction(d[:, :6], process_mask(p, d[:, 6:], d[:, :4], shape, upsample=self.retina_masks)
                              if masks else None, d[:, 6:], p) for d, p in zip(dets, proto)]

    @classmethod
    def add_val_arguments(cls, p: argparse.ArgumentParser) -> None:
        """Detection's val flags plus --retina-masks."""
        super().add_val_arguments(p)
        p.add_argument("--retina-masks", action="store_true", help="score masks at input resolution (default: 1/4)")

    @classmethod
    def add_predict_arguments(cls, p: argparse.ArgumentParser) -> None:
        """detect.py's flags plus --retina-masks."""
        super().add_predict_arguments(p)
        p.add_argument("--retina-masks", action="store_true", help="whether to plot masks in native resolution")

    def predict_settings(self, opt: argparse.Namespace) -> dict:
        return {**super().predict_settings(opt), "masks": False}  # the renderer assembles them at drawing size

    def to_original(self, pred: SegPrediction, input_hw: tuple[int, int], shape0: tuple[int, int],
                    content_hw: tuple[int, int] | None = None) -> ImageResult:
        """Boxes and bool masks on the original image: masks from the prototypes at native resolution with
        retina_masks, else at input size with the letterbox undone (as upstream's segment/predict.py)."""
        from utils.tasks.segment.masks import process_mask, process_mask_native, unletterbox

        content_hw = tuple(content_hw or input_hw)
        det0 = self.boxes_to_original(pred.det, content_hw, shape0)
        if not len(det0):
            return ImageResult(boxes=det0, masks=torch.zeros((0, *shape0), dtype=torch.bool, device=det0.device))
        if self.retina_masks:
            masks = process_mask_native(pred.proto, pred.coefs, det0[:, :4].round(), shape0).bool()
        else:
            masks = process_mask(pred.proto, pred.coefs, pred.det[:, :4], tuple(input_hw), upsample=True)
            masks = unletterbox(masks[:, :content_hw[0], :content_hw[1]], shape0).gt_(0.5).bool()
        return ImageResult(boxes=det0, masks=masks)

    def renderer(self, opt: argparse.Namespace, names: dict[int, str], save_dir: Path, model: Any) -> Any:
        from utils.tasks.segment.predictor import SegmentRenderer

        return SegmentRenderer(opt, names, save_dir)

    def new_metric(self, names: dict[int, str], save_dir: Path, plots: bool = False, **opts: Any) -> SegMetric:
        return SegMetric(names, save_dir, plots=plots, overlap=self.overlap, **opts)

    # ------------------------------------------------------------------------------------------ plots
    def plot_train_batch(self, batch: dict, fname: Path, names: dict[int, str] | None = None) -> None:
        from utils.plots import plot_images
        from utils.tasks.segment.plots import overlay_masks

        img = overlay_masks(batch["img"], batch["targets"], batch["masks"], batch["overlap"])
        plot_images(img, batch["targets"], batch["paths"], fname, names=names)

    def plot_val_batch(self, batch: dict, preds: list, save_dir: Path, index: int,
                       names: dict[int, str] | None = None) -> None:
        from utils.tasks.segment.plots import plot_val_batch_masks

        plot_val_batch_masks(batch, preds, save_dir, index, names=names)


register(TaskEntry(name="segment", task=SegmentationTask, options=SegmentOptions,
                   scripts=Scripts("segment/train.py", "segment/val.py", "segment/predict.py"),
                   upstream_meta={"eval_tail": 1}, upstream_outputs=2))
