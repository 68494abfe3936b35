"""Instance segmentation: detection plus 32 prototype-mask coefficients per box (YOLOv5 v7.0 recipe)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from utils.data.loader import LoaderOptions
from utils.engine.task import ValSettings
from utils.log import LOGGER
from utils.tasks.detect.task import DetectionTask
from utils.tasks.segment.metric import SegMetric

NM = 32  # mask coefficients per detection (the Segment head's nm)


class SegPrediction(NamedTuple):
    """One image's instance-segmentation result."""

    det: torch.Tensor  # (n, 6) x1, y1, x2, y2, conf, cls in input pixels
    masks: torch.Tensor | None  # (n, h, w) binary masks, or None when the caller assembles them
    coefs: torch.Tensor  # (n, 32) mask coefficients
    proto: torch.Tensor  # (32, h/4, w/4) the image's prototypes


class SegmentationTask(DetectionTask):
    """Boxes and instance masks from a Segment head, trained with box/seg/obj/cls losses, scored by box and mask AP.

    overlap: ground-truth masks as one index map per image (else one binary mask per object); mask_ratio: their
    downsampling; retina_masks: predicted masks at input resolution (else at prototype resolution, as upstream's val).
    A training config's --mask-ratio / --no-overlap override the constructor values when the loaders are built.
    """

    name = "segment"
    tta = False  # flipped/scaled passes would need their prototypes merged too: not done (upstream crashes)
    default_project = "runs/train-seg"
    loss_names = ("box_loss", "seg_loss", "obj_loss", "cls_loss")
    metric_names = SegMetric.names
    coco_iou_types = ("bbox", "segm")  # --save-json writes each mask as RLE; pycocotools scores boxes and masks
    fitness_weights = (0.0, 0.0, 0.1, 0.9, 0.0, 0.0, 0.1, 0.9)  # box P R mAP50 mAP50-95, then mask

    def __init__(self, overlap: bool = True, mask_ratio: int = 4, retina_masks: bool = False):
        self.overlap, self.mask_ratio, self.retina_masks = overlap, int(mask_ratio), retina_masks

    # ------------------------------------------------------------------------------------------ data
    def build_dataloader(self, path: Any, opts: LoaderOptions, hyp: dict, batch_size: int, stride: int, mode: str,
                         rank: int = -1, nc: int | None = None):
        if opts.mask_ratio is not None:
            self.mask_ratio = int(opts.mask_ratio)
        if opts.overlap is not None:
            self.overlap = bool(opts.overlap)
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

    def add_val_arguments(self, p: argparse.ArgumentParser) -> None:
        """Detection's val flags plus --retina-masks."""
        super().add_val_arguments(p)
        p.add_argument("--retina-masks", action="store_true", help="score masks at input resolution (default: 1/4)")

    def val_settings(self, opt: argparse.Namespace, data: dict, save_dir: Path) -> ValSettings:
        # --save-json: masks at input resolution, as upstream's (its RLE masks would be blocky from 1/4 resolution)
        self.retina_masks = opt.retina_masks or opt.save_json
        return super().val_settings(opt, data, save_dir)

    def add_predict_arguments(self, p: argparse.ArgumentParser) -> None:
        """detect.py's flags plus --retina-masks."""
        super().add_predict_arguments(p)
        p.add_argument("--retina-masks", action="store_true", help="whether to plot masks in native resolution")

    def predict_settings(self, opt: argparse.Namespace) -> dict:
        return {**super().predict_settings(opt), "masks": False}  # the renderer assembles them at drawing size

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
