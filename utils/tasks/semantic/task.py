"""Detection + semantic segmentation: one model gives boxes and a per-pixel class map, trained jointly.

Builds on detection: the same boxes, loss and AP, plus a semantic head whose cross-entropy joins the loss and whose
class maps are scored by a confusion matrix at each label's full resolution. The data YAML's `semantic:` section says
where the masks are and what their classes are (utils/data/semantic_spec.py); images labelled for only one head
train only that head.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.build import build_model
from models.yolo import load_yaml_cfg
from utils.data.dataset_config import semantic_spec
from utils.data.loader import LoaderOptions
from utils.data.semantic_spec import SemanticSpec
from utils.engine.task import ImageResult
from utils.errors import ConfigError
from utils.tasks.detect.task import DetectionTask
from utils.tasks.registry import Scripts, TaskEntry, register
from utils.tasks.semantic.loss import SEG_DEFAULTS
from utils.tasks.semantic.metric import SemanticDetectionMetric
from utils.tasks.semantic.rescale import logits_to_label_map

FITNESS_SEG = 0.5  # default share of mIoU in fitness (hyp key `fitness_seg`); the rest is detection's fitness


@dataclass(frozen=True)
class SemanticOptions:
    """What the detection + semantic task reads beyond detection's flags."""

    data: str = field(default="", metadata={"shared": True})  # the data YAML whose `semantic:` section it trains
    # and scores on ('' for prediction: the model carries its classes); a flag every script has, not its own
    submit: bool = False  # detect.py --submit: Cityscapes label-id PNGs for the benchmark server
    alpha: float = 0.5  # detect.py --alpha: opacity of the class-map overlay


class SemanticPrediction(NamedTuple):
    """One image's result."""

    det: torch.Tensor  # (n, 6) x1, y1, x2, y2, conf, cls in input pixels
    logits: torch.Tensor  # (nc_seg, h, w) class logits of the letterboxed input


class SemanticTask(DetectionTask):
    """Boxes from the Detect head and class maps from the semantic head of a SemanticDetectionModel."""

    name = "semantic"
    post_name = "NMS+seg"
    loss_names = ("box_loss", "obj_loss", "cls_loss", "seg_loss")
    metric_names = SemanticDetectionMetric.names

    def __init__(self, options: SemanticOptions = SemanticOptions()):
        self.options = options
        self.fitness_seg = FITNESS_SEG

    @cached_property
    def spec(self) -> SemanticSpec:
        """The semantic classes, ignore index and mask paths, from the data YAML the task was built with."""
        spec = semantic_spec(self.options.data) if self.options.data else None
        if spec is None:
            raise ConfigError(f"{self.options.data or 'no --data'}: a detection + semantic model needs per-pixel "
                              f"masks, but the data YAML has no 'semantic:' section (see data/shapes-semantic.yaml), "
                              f"or train a plain detector")
        return spec

    # ------------------------------------------------------------------------------------------ data and model
    def check_data(self, data: str | dict) -> dict:
        d = super().check_data(data)
        if d.get("semantic") is None:
            raise ConfigError(f"{data}: a detection + semantic model needs per-pixel masks, but the data YAML has no "
                              f"'semantic:' section (see data/shapes-semantic.yaml), or train a plain detector")
        return d

    def build_model(self, cfg: str | dict, nc: int, hyp: dict | None = None) -> nn.Module:
        d = load_yaml_cfg(cfg)
        if not d.get("semantic"):
            raise ConfigError(f"{cfg if isinstance(cfg, str) else 'model'}: no semantic head in the model YAML "
                              f"(use e.g. yolov5n-city.yaml)")
        anchors = (hyp or {}).get("anchors")
        if anchors:
            d["anchors"] = round(anchors)
        model = build_model(d, ch=3, nc=nc, nc_seg=self.spec.nc)
        model.seg_names = dict(self.spec.names)
        return model

    def scale_hyp(self, hyp: dict, model: nn.Module, nc: int, imgsz: int) -> dict:
        self.fitness_seg = float(hyp.get("fitness_seg", FITNESS_SEG))
        if not 0 <= self.fitness_seg <= 1:
            raise ConfigError(f"hyp fitness_seg must be in [0, 1] (the share of mIoU in fitness), "
                              f"got {self.fitness_seg}")
        return super().scale_hyp(hyp, model, nc, imgsz)

    def hyp_defaults(self) -> dict:
        """seg, seg_aux, ohem_thresh, seg_lr_mult and fitness_seg (hyp.shapes.yaml explains the values)."""
        return {**SEG_DEFAULTS, "fitness_seg": FITNESS_SEG}

    def lr_mults(self, hyp: dict) -> dict[str, float]:
        """The semantic head (parameters semantic.*) trains at seg_lr_mult x the LR (see hyp.cityscapes.yaml)."""
        return {"semantic.": float(hyp.get("seg_lr_mult", SEG_DEFAULTS["seg_lr_mult"]))}

    def dataset_options(self, opts: LoaderOptions) -> dict:
        from utils.tasks.semantic.dataset import SemanticDataset

        return {"dataset_cls": SemanticDataset, "dataset_kw": {"semantic": self.spec}}

    def preprocess(self, batch: dict, device: torch.device, half: bool = False) -> dict:
        out = super().preprocess(batch, device, half)
        out["semantic"] = batch["semantic"].to(device, non_blocking=True).long()
        out["has_semantic"] = batch["has_semantic"].to(device, non_blocking=True)
        out["has_boxes"] = batch["has_boxes"].to(device, non_blocking=True)
        return out

    # ------------------------------------------------------------------------------------------ loss and predictions
    def criterion(self, model: nn.Module, hyp: dict):
        from utils.tasks.semantic.loss import SemanticDetectionLoss

        return SemanticDetectionLoss(model.model[-1], hyp, self.spec.ignore_index)

    def split_eval_output(self, out: Any):
        """Eval output (detections, raw maps, logits) -> ((detections, logits), (raw maps, logits, no aux)).

        An exported model gives (detections, [], logits) and test-time augmentation (detections, None, logits): no
        raw maps, so no validation loss.
        """
        det, seg = out[0], out[-1]
        raw = out[1] if len(out) == 3 and out[1] else None
        return (det, seg), ((raw, seg, []) if raw is not None else None)

    def postprocess(self, preds: Any, batch: dict | None = None, **kw: Any) -> list[SemanticPrediction]:
        """NMS on the boxes; each image keeps its class logits for the metric or the renderer."""
        det, seg = preds
        return [SemanticPrediction(d, s) for d, s in zip(super().postprocess(det, batch=batch, **kw), seg)]

    def new_metric(self, names: dict[int, str], save_dir: Path, plots: bool = False,
                   **opts: Any) -> SemanticDetectionMetric:
        return SemanticDetectionMetric(names, save_dir, plots=plots, spec=self.spec, **opts)

    def fitness(self, figures: dict[str, float]) -> float:
        """(1 - fitness_seg) x detection's fitness + fitness_seg x mIoU."""
        return (1 - self.fitness_seg) * super().fitness(figures) + self.fitness_seg * figures.get("metrics/mIoU", 0.0)

    def plot_val_batch(self, batch: dict, preds: list, save_dir: Path, index: int,
                       names: dict[int, str] | None = None) -> None:
        from utils.tasks.semantic.plots import plot_class_maps

        super().plot_val_batch(batch, [p.det for p in preds], save_dir, index, names=names)
        plot_class_maps(batch, [p.logits for p in preds], self.spec, save_dir / f"val_batch{index}_seg.jpg")

    # ------------------------------------------------------------------------------------------ prediction
    @classmethod
    def add_predict_arguments(cls, p: argparse.ArgumentParser) -> None:
        """detect.py's flags plus the class-map outputs (they apply to detection + semantic models only)."""
        super().add_predict_arguments(p)
        p.add_argument("--submit", action="store_true",
                       help="Cityscapes: write <city>_<seq>_<frame>_pred.png label-id maps for the benchmark server")
        p.add_argument("--alpha", type=float, default=0.5, help="opacity of the class-map overlay")

    def to_original(self, pred: SemanticPrediction, input_hw: tuple[int, int], shape0: tuple[int, int],
                    content_hw: tuple[int, int] | None = None) -> ImageResult:
        """Boxes and the class map on the original image (logits mapped back through the letterbox exactly)."""
        logits, content_hw = pred.logits, tuple(content_hw or input_hw)
        if content_hw != tuple(input_hw):  # padded in a batch: the image's own part of the input, at input scale
            if tuple(logits.shape[1:]) != tuple(input_hw):
                logits = F.interpolate(logits[None].float(), size=tuple(input_hw), mode="bilinear",
                                       align_corners=False)[0]
            logits = logits[:, :content_hw[0], :content_hw[1]]
        class_map = logits_to_label_map(logits, content_hw, shape0)
        class_map = class_map.to(torch.uint8 if logits.shape[0] <= 256 else torch.int32)
        return ImageResult(boxes=self.boxes_to_original(pred.det, content_hw, shape0), class_map=class_map)

    def renderer(self, opt: argparse.Namespace, names: dict[int, str], save_dir: Path, model: Any) -> Any:
        from utils.tasks.semantic.predictor import SemanticRenderer

        return SemanticRenderer(opt, names, save_dir, model)



register(TaskEntry(name="semantic", task=SemanticTask, options=SemanticOptions,
                   scripts=Scripts("train.py", "val.py", "detect.py")))
