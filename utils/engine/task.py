"""The Task contract: everything the shared engine needs to know about one kind of model.

The Trainer and the Evaluator own the loops (AMP, accumulation, EMA, DDP, checkpoints, timing, logging) and never
ask which task they run. A task answers the questions that differ: how to build its model, data and loss, how to
turn raw outputs into predictions, and how to score them. Detection (utils/tasks/detect/task.py) is the base task;
instance segmentation, semantic segmentation and classification plug in beside it by overriding these methods.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import nn

from utils.checkpoint import CheckpointError
from utils.tasks import registry

if TYPE_CHECKING:
    from utils.data.loader import LoaderOptions


class Metric:
    """Accumulates predictions against labels over a dataset; reduce() merges ranks before compute()."""

    names: tuple[str, ...] = ()  # the figures compute() returns, in results.csv order
    header: str = "Evaluating"  # the progress-bar title and the first line of the printed table
    post_name: str = "post-process"  # what the post-processing step is called in the speed line
    maps: np.ndarray | None = None  # per-class score after compute() (detection's mAP50-95), for image weights

    def update(self, preds: Any, batch: dict) -> None:
        """Add one batch of post-processed predictions and its labels."""
        raise NotImplementedError

    def reduce(self) -> None:
        """Gather the statistics of every DDP rank onto each rank; called only when the loader was sharded."""

    def compute(self) -> dict[str, float]:
        """The headline figures, keyed by `names`."""
        raise NotImplementedError

    def summary(self, verbose: bool = False) -> str:
        """The table printed after validation."""
        return " ".join(f"{k}={v:.4g}" for k, v in self.compute().items())

    def finalize(self, save_dir: Path, plots: bool) -> None:
        """Write curves and matrices once the figures are computed."""


class ImageResult(NamedTuple):
    """One image's predictions in its own pixels: what the predict scripts draw, the hub returns and the server sends.
    A task fills the fields it predicts."""

    boxes: torch.Tensor | None = None  # (n, 6) x1, y1, x2, y2, conf, cls
    masks: torch.Tensor | None = None  # (n, H, W) bool instance masks, one per box
    class_map: torch.Tensor | None = None  # (H, W) class ids (uint8 up to 256 classes)
    probs: torch.Tensor | None = None  # (nc,) class probabilities


@dataclass
class TrainContext:
    """What the Trainer shares with a task's hooks (declared here, so hooks never reach into the Trainer)."""

    cfg: Any  # the TrainConfig (or a task's subclass of it)
    model: nn.Module  # the model being trained (not DDP-wrapped)
    dataset: Any  # the training dataset (its labels, and `indices` that image weights resample)
    names: dict[int, str]  # class names
    nc: int  # number of classes
    hyp: dict  # hyperparameters, as given (before the task's scale_hyp)
    imgsz: int  # training image size
    save_dir: Path  # the run folder
    main: bool  # True on the process that logs and plots (rank 0 or single process)
    maps: np.ndarray | None = None  # per-class score of the last validation (Metric.maps), None before the first


@dataclass
class ValSettings:
    """How one standalone validation runs, as a task reads it from its val flags."""

    split: str = "val"  # which split of the data YAML to score
    loader_mode: str = "val"  # 'val' (rectangular batches) or 'speed' (square, for timing)
    post: dict = field(default_factory=dict)  # post-processing settings (NMS thresholds...)
    metric: dict = field(default_factory=dict)  # Metric options (save_txt, json_out...)
    single_cls: bool = False  # score every class as one
    augment: bool = False  # test-time augmentation (flips and scales)
    verbose: bool = False  # print a row per class
    plots: bool = True  # write curves, matrices and batch mosaics


class Task:
    """Base class of the task contract; methods that every task must answer raise NotImplementedError."""

    name: str = "task"
    serves: tuple[str, ...] = ()  # the model kinds (BaseModel.task) its scripts accept; () means just `name`
    tta: bool = True  # whether --augment (test-time augmentation) applies; False: a warning, then plain inference
    post_name: str = "post-process"  # what postprocess() is called in the predict scripts' speed line
    default_project: str = "runs/train"
    loss_names: tuple[str, ...] = ()  # short names of the loss items the criterion returns, in order
    metric_names: tuple[str, ...] = ()  # results.csv names of the Metric's figures, in order

    # --- data description --------------------------------------------------------------------------
    def check_data(self, data: str | dict) -> dict:
        """Resolve and verify the dataset description (absolute split paths, names, nc)."""
        raise NotImplementedError

    # --- model -----------------------------------------------------------------------------------
    def build_model(self, cfg: str | dict, nc: int, hyp: dict | None = None) -> nn.Module:
        """A fresh model for `nc` classes from a model YAML (name, path or dict)."""
        raise NotImplementedError

    def hyp_defaults(self) -> dict:
        """Hyperparameters of this task's own, with the values used when a hyp file does not set them."""
        return {}

    def scale_hyp(self, hyp: dict, model: nn.Module, nc: int, imgsz: int) -> dict:
        """Adapt loss gains to the model and data, as YOLOv5 does before training (returns a new dict)."""
        return dict(hyp)

    # --- data ------------------------------------------------------------------------------------
    def build_dataloader(self, path: Any, opts: LoaderOptions, hyp: dict, batch_size: int, stride: int, mode: str,
                         rank: int = -1, nc: int | None = None) -> tuple[torch.utils.data.DataLoader, Any]:
        """The loader and dataset for `mode` 'train' (augmented, shuffled), 'val' (rectangular) or 'speed'."""
        raise NotImplementedError

    def preprocess(self, batch: Any, device: torch.device, half: bool = False) -> dict:
        """Collated batch -> dict on the device with at least 'img' (float, 0-1) and the labels the loss needs."""
        raise NotImplementedError

    def batch_size_of(self, batch: dict) -> int:
        """Number of images in a preprocessed batch."""
        return batch["img"].shape[0]

    def instances(self, batch: dict) -> int:
        """Number of labelled objects in a batch (shown in the progress bar); known on the host, no sync."""
        return 0

    def lr_mults(self, hyp: dict) -> dict[str, float]:
        """{parameter-name prefix: LR multiplier} for parts of the model that train at their own rate (none here)."""
        return {}

    # --- loss and predictions --------------------------------------------------------------------
    def criterion(self, model: nn.Module, hyp: dict) -> Any:
        """A callable (train_outputs, batch) -> (loss to backprop (1,), detached loss items (k,)).

        Under DDP each rank's gradients are averaged, so the loss is what one rank contributes to that average
        (detection's global-batch sums are multiplied by the world size in the loss itself).
        """
        raise NotImplementedError

    def split_eval_output(self, out: Any) -> tuple[Any, Any]:
        """Eval-mode model output -> (what postprocess takes, what the criterion takes)."""
        return out, None

    def postprocess(self, preds: Any, batch: dict | None = None, **kw: Any) -> Any:
        """Raw predictions -> final per-image results (e.g. NMS); `batch` carries labels for hybrid modes."""
        return preds

    def val_post_kw(self, data: dict, training: bool) -> dict:
        """Post-processing settings for validation (e.g. NMS thresholds), during training or for the final pass."""
        return {}

    def new_metric(self, names: dict[int, str], save_dir: Path, plots: bool = False, **opts: Any) -> Metric:
        """A fresh Metric for one evaluation run."""
        raise NotImplementedError

    def fitness(self, figures: dict[str, float]) -> float:
        """Single number to pick best.pt and drive early stopping (higher is better)."""
        raise NotImplementedError

    # --- standalone validation (val.py and the task's own val script) ---------------------------
    @classmethod
    def add_val_arguments(cls, p: argparse.ArgumentParser) -> None:
        """Add the task's own val flags (the engine adds data, weights, batch, size, device and run-folder flags)."""

    def val_settings(self, opt: argparse.Namespace, data: dict, save_dir: Path) -> ValSettings:
        """Turn the parsed val flags into the split, post-processing and metric settings."""
        return ValSettings()

    def after_val(self, result: Any, settings: ValSettings, data: dict, save_dir: Path, weights: str) -> None:
        """Work after the figures are computed (detection: write and score the COCO JSON)."""

    # --- prediction (the task's predict script) ----------------------------------------------------
    @classmethod
    def add_predict_arguments(cls, p: argparse.ArgumentParser) -> None:
        """Add the task's own predict flags (the engine adds weights, source, size, device, saving and video)."""

    def data_names(self, data: str) -> dict[int, str]:
        """Class names from the predict script's --data (the model's own names are the default)."""
        return self.check_data(data)["names"]

    def predict_settings(self, opt: argparse.Namespace) -> dict:
        """postprocess() settings for prediction (e.g. NMS thresholds) from the parsed flags."""
        return {}

    def source_transform(self, imgsz: list[int], stride: int) -> Any:
        """HWC BGR frame -> CHW RGB uint8 array the model takes; None: the source's own letterbox."""
        return None

    def normalize(self, img: torch.Tensor) -> torch.Tensor:
        """Inference input in 0-1 -> what the model takes (classification: ImageNet mean/std)."""
        return img

    def to_original(self, result: Any, input_hw: tuple[int, int], shape0: tuple[int, int],
                    content_hw: tuple[int, int] | None = None) -> ImageResult:
        """One image's postprocess() result -> its predictions in the original image's pixels (shape0 = (h, w)).

        input_hw is the model input's size; content_hw the part of it this image's letterbox fills (the hub pads
        images of other sizes in one batch to the right and bottom), input_hw when None. The one place boxes are
        scaled back and masks and class maps are resized, for the predict scripts, the hub and the server alike.
        """
        raise NotImplementedError

    def renderer(self, opt: argparse.Namespace, names: dict[int, str], save_dir: Path, model: Any) -> Any:
        """The object that describes, draws and writes one image's results (see engine/predictor.Renderer); `model`
        is the loaded model, for what the renderer needs to know about it (e.g. its semantic classes)."""
        raise NotImplementedError

    # --- hooks (optional) -------------------------------------------------------------------------
    def on_train_start(self, ctx: TrainContext) -> None:
        """Task-specific preparation once model and data exist (AutoAnchor, label plots)."""

    def on_epoch_start(self, ctx: TrainContext, epoch: int) -> None:
        """Per-epoch data tweaks (image weights, closing mosaic)."""

    def plot_train_batch(self, batch: Any, fname: Path, names: dict[int, str] | None = None) -> None:
        """Save a mosaic of a training batch with its labels."""

    def plot_val_batch(self, batch: dict, preds: Any, save_dir: Path, index: int,
                       names: dict[int, str] | None = None) -> None:
        """Save label and prediction mosaics of a validation batch."""


def check_model_task(model: nn.Module, task: Task, weights: str | Path) -> None:
    """One clear error when the weights hold another kind of model than the script's task runs."""
    kind = getattr(model, "task", None)  # exported (non-nn.Module) backends may not say
    if kind is not None and kind not in (task.serves or (task.name,)):
        raise CheckpointError(f"{weights}: a '{kind}' model, but this script runs '{task.name}' models; "
                              f"use {registry.scripts_for(kind)}")


def add_task_arguments(p: argparse.ArgumentParser, tasks: Any, method: str) -> None:
    """Call each task's `method` (add_val_arguments or add_predict_arguments) on the parser. A script that runs
    several tasks (detect.py: detection and detection + semantic) gets the flags of all; a task that builds on
    another of them adds that one's flags itself (through super()), so the base is not asked twice."""
    tasks = list(tasks) if isinstance(tasks, (list, tuple)) else [tasks]
    classes = [t if isinstance(t, type) else type(t) for t in tasks]
    for t, cls in zip(tasks, classes):
        if not any(other is not cls and issubclass(other, cls) for other in classes):
            getattr(t, method)(p)
