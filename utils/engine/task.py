"""The Task contract: everything the shared engine needs to know about one kind of model.

The Trainer and the Evaluator own the loops (AMP, accumulation, EMA, DDP, checkpoints, timing, logging) and never
ask which task they run. A task answers the questions that differ: how to build its model, data and loss, how to
turn raw outputs into predictions, and how to score them. Detection (utils/tasks/detect/task.py) is the base task;
instance segmentation, semantic segmentation and classification plug in beside it by overriding these methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from utils.data.loader import LoaderOptions


class Metric:
    """Accumulates predictions against labels over a dataset; reduce() merges ranks before compute()."""

    names: tuple[str, ...] = ()  # the figures compute() returns, in results.csv order

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


class Task:
    """Base class of the task contract; methods that every task must answer raise NotImplementedError."""

    name: str = "task"
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

    # --- hooks (optional) -------------------------------------------------------------------------
    def on_train_start(self, trainer: Any) -> None:
        """Task-specific preparation once model and data exist (AutoAnchor, label plots)."""

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        """Per-epoch data tweaks (image weights, closing mosaic)."""

    def plot_train_batch(self, batch: Any, fname: Path, names: dict[int, str] | None = None) -> None:
        """Save a mosaic of a training batch with its labels."""

    def plot_val_batch(self, batch: dict, preds: Any, save_dir: Path, index: int,
                       names: dict[int, str] | None = None) -> None:
        """Save label and prediction mosaics of a validation batch."""


def to_numpy_figures(figures: dict[str, float], names: tuple[str, ...]) -> np.ndarray:
    """Figures in a fixed order, for results.csv and fitness."""
    return np.array([figures.get(n, 0.0) for n in names], dtype=np.float64)
