"""One evaluation loop for every task, used by the Trainer after each epoch and by val.py."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from utils.device import time_sync
from utils.engine.recipe import float_outputs
from utils.engine.task import Metric, Task
from utils.log import LOGGER

TQDM_BAR = "{l_bar}{bar:10}{r_bar}"
# On CPU a batch whose activations overflow the caches costs more per image than a small one: yolov5s at 640 ran at
# 96 ms per image in batches of 32 against 51 ms one image at a time (2 cores). Forwarding about half a megapixel at a
# time was the fastest split measured for yolov5n and yolov5s at 256-640 (1.5-1.9x faster than whole batches).
CPU_PIXELS_PER_FORWARD = 2**19


def _cat_outputs(parts: list[Any]) -> Any:
    """Join per-chunk model outputs (tensors, or tuples/lists of them) along the batch dimension."""
    first = parts[0]
    if first is None:  # e.g. the raw maps test-time augmentation does not return
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, 0)
    return type(first)(_cat_outputs([p[i] for p in parts]) for i in range(len(first)))


def forward_batch(model: torch.nn.Module, img: torch.Tensor, augment: bool = False) -> Any:
    """model(img), run in cache-sized chunks on CPU (same outputs, eval mode only)."""
    call = (lambda x: model(x, augment=True)) if augment else model
    chunk = max(1, CPU_PIXELS_PER_FORWARD // (img.shape[-2] * img.shape[-1]))
    if img.device.type != "cpu" or model.training or img.shape[0] <= chunk:
        return call(img)
    return _cat_outputs([call(x) for x in img.split(chunk)])


@dataclass
class EvalResult:
    figures: dict[str, float]  # the task's headline metrics, in its Metric.names order
    losses: np.ndarray | None  # mean validation loss items (None when no criterion was given)
    speed: tuple[float, float, float]  # ms per image: pre-process, inference, post-process
    metric: Metric | None = field(default=None, repr=False)


class Evaluator:
    """Runs a model over a loader, post-processes, scores with the task's Metric and prints its table."""

    def __init__(self, task: Task, dataloader: Any, names: dict[int, str], save_dir: Path = Path("."),
                 plots: bool = False, verbose: bool = False, half: bool = False, augment: bool = False,
                 post_kw: dict | None = None, metric_kw: dict | None = None, training: bool = False,
                 cpu_amp_dtype: torch.dtype | None = None):
        self.task, self.dataloader, self.names = task, dataloader, names
        self.save_dir, self.plots, self.verbose = Path(save_dir), plots, verbose
        self.half, self.augment, self.training = half, augment, training
        self.cpu_amp_dtype = cpu_amp_dtype  # the training recipe's autocast on CPU (as half on GPU), None = fp32
        self.post_kw, self.metric_kw = post_kw or {}, metric_kw or {}

    @torch.inference_mode()
    def __call__(self, model: torch.nn.Module, criterion: Any = None) -> EvalResult:
        """Evaluate `model` (put in eval mode here); with a criterion also report the mean validation losses."""
        device = next(model.parameters()).device
        half = self.half and device.type == "cuda"
        caller, was_training = model, model.training
        model.eval()
        if self.training and hasattr(model, "fuse"):
            # Validation during training runs a copy with BatchNorm folded into the convolutions, as the final
            # validation of best.pt does: the same figures up to float rounding, and one pass less per layer.
            # A copy, because the caller's model (the EMA) keeps training; halving it in place and back would also
            # round its weights to fp16 every epoch.
            model = copy.deepcopy(model).fuse(verbose=False)
        if half:
            model = (model if model is not caller else copy.deepcopy(model)).half()
        amp = self.cpu_amp_dtype if device.type == "cpu" else None
        metric = self.task.new_metric(self.names, self.save_dir, plots=self.plots, training=self.training,
                                      **self.metric_kw)
        loss_sum, seen, shape = None, 0, None
        dt = [0.0, 0.0, 0.0]
        pbar = tqdm(self.dataloader, desc=metric.header, bar_format=TQDM_BAR, leave=False,
                    disable=not LOGGER.isEnabledFor(20))
        for bi, raw in enumerate(pbar):
            t0 = time_sync(device)
            batch = self.task.preprocess(raw, device, half=half)
            t1 = time_sync(device)
            with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
                out = forward_batch(model, batch["img"], self.augment)
            out = float_outputs(out)
            t2 = time_sync(device)
            preds, train_out = self.task.split_eval_output(out)
            if criterion is not None and train_out is not None:
                items = criterion(train_out, batch)[1]
                loss_sum = items if loss_sum is None else loss_sum + items
            results = self.task.postprocess(preds, batch=batch, **self.post_kw)
            t3 = time_sync(device)
            metric.update(results, batch)
            if self.plots and bi < 3:
                self.task.plot_val_batch(batch, results, self.save_dir, bi, names=self.names)
            n = self.task.batch_size_of(batch)
            seen += n
            shape = tuple(batch["img"].shape)
            dt = [dt[0] + t1 - t0, dt[1] + t2 - t1, dt[2] + t3 - t2]
        if isinstance(getattr(self.dataloader, "sampler", None), DistributedSampler):
            metric.reduce()  # each rank saw a shard; during training only rank 0 validates, on the whole set
        figures = metric.compute()
        LOGGER.info(metric.summary(verbose=self.verbose))
        speed = tuple(x / max(seen, 1) * 1e3 for x in dt)
        if not self.training and shape is not None:
            LOGGER.info(f"Speed: {speed[0]:.1f}ms pre-process, {speed[1]:.1f}ms inference, "
                        f"{speed[2]:.1f}ms {metric.post_name} per image at shape {shape}")
        metric.finalize(self.save_dir, self.plots)
        if was_training:
            caller.train()
        nb = max(len(self.dataloader), 1)
        losses = (loss_sum.float().cpu().numpy() / nb) if loss_sum is not None else None
        return EvalResult(figures, losses, speed, metric)
