"""Image classification on the shared engine (YOLOv5 v7.0's classify/ recipe).

Data is an ImageFolder tree; the model is a detection backbone cut at `cutoff` (10) with a Classify head, or a -cls
YAML/checkpoint; the loss is cross-entropy with label smoothing; the score is top-1/top-5 accuracy and fitness top-1.
Upstream trains classifiers without warmup, gradient accumulation or batch-scaled weight decay: CLASSIFY_HYP says so
to the engine through hyp keys (warmup_epochs 0, nbs 0 = the batch itself), not through task checks in the Trainer.
"""

from __future__ import annotations

import argparse
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from utils.data.loader import LoaderOptions
from utils.engine.task import ImageResult, Task, ValSettings
from utils.tasks.classify.metric import ClsMetric
from utils.tasks.classify.transforms import IMAGENET_MEAN, IMAGENET_STD
from utils.tasks.registry import Scripts, TaskEntry, register

# Upstream's fixed classify/train.py settings, plus our augmentation strengths (see utils/tasks/classify/transforms.py).
CLASSIFY_HYP = {"lr0": 0.001, "lrf": 0.01, "momentum": 0.9, "weight_decay": 5e-5, "warmup_epochs": 0.0,
                "warmup_momentum": 0.9, "warmup_bias_lr": 0.0, "nbs": 0, "cutoff": None, "dropout": None,
                "scale": [0.08, 1.0], "fliplr": 0.5, "jitter": 0.4}
# What a classifier expects in front of it, written into its exports: the centre crop, RGB in 0-1, then ImageNet's
# statistics.
CLASSIFY_PREPROCESS = {"crop": "center", "channels": "RGB", "scale": 1 / 255,
                       "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


class ClassificationTask(Task):
    """One label per image: logits from a Classify head, cross-entropy loss, top-1/top-5 accuracy."""

    name = "classify"
    tta = False  # upstream accepts --augment for classifiers and ignores it; we say so
    default_project = "runs/train-cls"
    loss_names = ("loss",)
    metric_names = ClsMetric.names

    def check_data(self, data: str | dict) -> dict:
        from utils.tasks.classify.dataset import check_classify_data

        return check_classify_data(data)

    def build_model(self, cfg: str | dict, nc: int, hyp: dict | None = None) -> nn.Module:
        """A -cls YAML as written, or a detection YAML cut at hyp['cutoff'] (10) as upstream; dropout from hyp."""
        from models.heads import Classify
        from models.yolo import ClassificationModel, _head_class, load_yaml_cfg

        hyp = hyp or {}
        d = deepcopy(load_yaml_cfg(cfg))
        if _head_class(d) is Classify:
            # a -cls YAML may carry its class count as a number (upstream checkpoints do): resize the head to nc, as
            # upstream's reshape_classifier_output does when fine-tuning on other classes
            row = (d.get("head") or d["backbone"])[-1]
            row[3] = [nc, *list(row[3])[1:]]
            model = ClassificationModel(d, nc=nc)
        else:
            model = ClassificationModel(d, nc=nc, cutoff=int(hyp.get("cutoff") or 10))
        if hyp.get("dropout") is not None:
            for m in model.modules():
                if isinstance(m, nn.Dropout):
                    m.p = float(hyp["dropout"])
        return model

    def build_dataloader(self, path: Any, opts: LoaderOptions, hyp: dict, batch_size: int, stride: int, mode: str,
                         rank: int = -1, nc: int | None = None):
        from utils.tasks.classify.dataset import create_classify_dataloader

        train = mode == "train"
        return create_classify_dataloader(
            path, opts.imgsz, batch_size, augment=train, hyp=hyp, cache=opts.cache_for(train),
            rank=rank if train else -1, workers=opts.workers if train else opts.workers * 2, shuffle=train,
            seed=opts.seed, prefix="train: " if train else "val: ")

    def preprocess(self, batch: Any, device: torch.device, half: bool = False) -> dict:
        from utils.tasks.classify.transforms import normalize

        imgs, labels = batch
        img = normalize(imgs.to(device, non_blocking=True))
        return {"img": img.half() if half else img, "cls": labels.to(device, non_blocking=True)}

    def instances(self, batch: dict) -> int:
        return int(batch["img"].shape[0])

    def criterion(self, model: nn.Module, hyp: dict):
        ce = nn.CrossEntropyLoss(label_smoothing=float(hyp.get("label_smoothing", 0.0)))

        def loss(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
            # a mean, as upstream's: DDP's gradient average over ranks makes it the mean over the global batch
            value = ce(logits.float(), batch["cls"])
            return value, value.detach()[None]

        return loss

    def split_eval_output(self, out: Any) -> tuple[Any, Any]:
        return out, out  # the logits give both the predictions and the validation loss

    def postprocess(self, preds: torch.Tensor, batch: dict | None = None, probs: bool = False, **kw: Any):
        """Logits -> the top-5 (at most nc) class indices per image, best first, as upstream's argsort;
        with `probs` (prediction) each image's class probabilities instead."""
        if probs:
            return list(torch.softmax(preds.float(), 1))
        return preds.argsort(1, descending=True)[:, :5]

    @classmethod
    def add_val_arguments(cls, p: argparse.ArgumentParser) -> None:
        """classify/val.py's own flags (YOLOv5 v7.0)."""
        p.add_argument("--verbose", nargs="?", const=True, default=True, help="per-class rows (--verbose False: none)")
        p.add_argument("--dnn", action="store_true", help="accepted for compatibility (OpenCV DNN is not used)")

    def val_settings(self, opt: argparse.Namespace, data: dict, save_dir: Path) -> ValSettings:
        return ValSettings(verbose=str(opt.verbose).lower() not in ("false", "0", "no"))

    # ------------------------------------------------------------------------------------------ prediction
    def data_names(self, data: str) -> dict[int, str]:
        from utils.tasks.classify.dataset import check_classify_data

        return check_classify_data(data, autodownload=False)["names"]  # names only: never download a set for them

    @classmethod
    def add_predict_arguments(cls, p: argparse.ArgumentParser) -> None:
        """classify/predict.py's compatibility flags (upstream's; nothing to do here)."""
        p.add_argument("--update", action="store_true", help="accepted for compatibility (nothing to update)")
        p.add_argument("--dnn", action="store_true", help="accepted for compatibility (OpenCV DNN is not used)")

    def predict_settings(self, opt: argparse.Namespace) -> dict:
        return {"probs": True}

    def source_transform(self, imgsz: list[int], stride: int) -> Any:
        """Validation's centre crop of each frame, as CHW RGB uint8."""
        from utils.tasks.classify.transforms import center_crop

        size = imgsz[0]

        def transform(im0: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(center_crop(im0, size).transpose(2, 0, 1)[::-1])

        return transform

    def normalize(self, img: torch.Tensor) -> torch.Tensor:
        """ImageNet mean/std on the 0-1 batch, as upstream's ToTensor + Normalize."""
        mean = torch.tensor(IMAGENET_MEAN, device=img.device, dtype=img.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=img.device, dtype=img.dtype).view(1, 3, 1, 1)
        return (img - mean) / std

    def to_original(self, probs: torch.Tensor, input_hw: tuple[int, int], shape0: tuple[int, int],
                    content_hw: tuple[int, int] | None = None) -> ImageResult:
        """Class probabilities belong to the whole image: nothing to map."""
        return ImageResult(probs=probs)

    def renderer(self, opt: argparse.Namespace, names: dict[int, str], save_dir: Path, model: Any) -> Any:
        from utils.tasks.classify.predictor import ClassifyRenderer

        return ClassifyRenderer(opt, names, save_dir)

    def new_metric(self, names: dict[int, str], save_dir: Path, plots: bool = False, **opts: Any) -> ClsMetric:
        return ClsMetric(names, save_dir, plots=plots, **opts)

    def fitness(self, figures: dict[str, float]) -> float:
        return float(figures.get(self.metric_names[0], 0.0))  # top-1, as upstream

    def plot_train_batch(self, batch: dict, fname: Path, names: dict[int, str] | None = None) -> None:
        from utils.plots import plot_images

        mean = torch.tensor(IMAGENET_MEAN, device=batch["img"].device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=batch["img"].device).view(1, 3, 1, 1)
        img = (batch["img"].float() * std + mean).clamp(0, 1)
        paths = [(names or {}).get(int(c), str(int(c))) for c in batch["cls"].tolist()]  # the label as the caption
        plot_images(img, None, paths, fname)


register(TaskEntry(name="classify", task=ClassificationTask,
                   scripts=Scripts("classify/train.py", "classify/val.py", "classify/predict.py"),
                   export_meta={"preprocess": CLASSIFY_PREPROCESS}, upstream_meta={"tensor_output": True},
                   hub_size=224))
