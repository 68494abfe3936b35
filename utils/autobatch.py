"""AutoBatch: the largest batch that fits a target fraction of GPU memory, measured with trial steps.

`--batch-size -1` calls `autobatch`. On CUDA it runs a few real training steps (forward under the trainer's AMP dtype,
channels_last, a loss, backward) on a copy of the model at growing batch sizes, fits peak memory as a line in the
batch size, and solves that line for the batch whose step fills `fraction` of the GPU. `estimate_batch` is the fit
and its guards, a pure function of the measurements. Anything implausible falls back to the default with a warning;
CPU and MPS fall back with a message.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Callable

import numpy as np
import torch

from utils.device import autocast_dtype
from utils.log import LOGGER, colorstr

DEFAULT_BATCH = 16
MAX_BATCH = 1024  # beyond this the fit has almost surely gone wrong (or the model is tiny); the default is safer
TRIAL_SIZES = (1, 2, 4, 8, 16)
PREFIX = colorstr("AutoBatch: ")


def estimate_batch(sizes: list[int], mems: list[float], budget: float, default: int = DEFAULT_BATCH,
                   failed_at: int | None = None, max_batch: int = MAX_BATCH) -> tuple[int, str]:
    """Batch whose step memory (fit mems ~ a + b * sizes) fills `budget` bytes; (default, reason) when implausible.

    `failed_at` is the smallest trial batch that ran out of memory: the answer stays below it whatever the fit says.
    The second value is '' for a fitted answer, else why the default was used.
    """
    if len(sizes) != len(mems):
        raise ValueError(f"estimate_batch: {len(sizes)} sizes but {len(mems)} memory figures")
    if len(sizes) < 2:
        return default, f"only {len(sizes)} trial step(s) succeeded, too few to fit"
    if not all(np.isfinite(mems)) or budget <= 0:
        return default, f"unusable measurements (memory {mems}, budget {budget:.3g} bytes)"
    slope, intercept = np.polyfit(np.asarray(sizes, dtype=float), np.asarray(mems, dtype=float), 1)
    if not slope > 0:  # memory that does not grow with the batch: the measurement is broken, not the model free
        return default, f"memory does not grow with the batch size (slope {slope:.3g} bytes per image)"
    b = int((budget - intercept) // slope)
    if failed_at is not None and b >= failed_at:
        # the fit was too optimistic: a batch this large already failed, so keep the largest one that ran
        b = max((s for s in sizes if s < failed_at), default=0)
    if b < 1 or b > max_batch:
        return default, f"batch-size estimate {b} is outside 1..{max_batch}"
    return b, ""


def _step_loss(out) -> torch.Tensor:
    """A scalar depending on every output tensor, standing in for the task loss (whose memory is small)."""
    outs = out if isinstance(out, (list, tuple)) else [out]
    return sum(o.float().mean() for o in outs if torch.is_tensor(o))


def trial_step(model: torch.nn.Module, batch: int, imgsz: int, device: torch.device,
               amp_dtype: torch.dtype | None) -> None:
    """One training step's worth of memory: forward under autocast, a loss, backward; gradients dropped after."""
    x = torch.rand(batch, 3, imgsz, imgsz, device=device).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = _step_loss(model(x))
    loss.backward()
    model.zero_grad(set_to_none=True)


def profile_memory(model: torch.nn.Module, imgsz: int, device: torch.device,
                   sizes: tuple[int, ...] = TRIAL_SIZES) -> tuple[list[int], list[float], int | None]:
    """Peak CUDA memory (bytes above the idle model) of a trial step per batch size; stops at the first OOM."""
    amp_dtype = autocast_dtype(device)
    ok, mems, failed_at = [], [], None
    trial_step(model, 1, imgsz, device, amp_dtype)  # warm-up: cuDNN/cuBLAS workspaces and handles, not per-batch
    for b in sizes:
        try:
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            trial_step(model, b, imgsz, device, amp_dtype)
            torch.cuda.synchronize(device)
            ok.append(b)
            mems.append(float(torch.cuda.max_memory_allocated(device) - base))
        except torch.cuda.OutOfMemoryError:
            failed_at = b
            model.zero_grad(set_to_none=True)
            break
        finally:
            torch.cuda.empty_cache()
    return ok, mems, failed_at


def autobatch(model: torch.nn.Module, imgsz: int, device: torch.device, task=None, fraction: float = 0.8,
              default: int = DEFAULT_BATCH,
              profile: Callable[..., tuple[list[int], list[float], int | None]] | None = None) -> int:
    """Largest batch whose training step fills `fraction` of GPU memory; `default` on CPU or when unsure.

    The model itself is left as it was: trial steps run on a copy (train-mode steps would move BN statistics).
    `task` is accepted for the trainer's call and not used yet; `profile` replaces `profile_memory` in tests.
    """
    if device.type != "cuda":
        LOGGER.info(f"{PREFIX}CUDA not detected, using default batch-size {default} (AutoBatch needs a GPU)")
        return default
    if not 0 < fraction <= 1:
        raise ValueError(f"autobatch: fraction {fraction} is not in (0, 1]")
    if torch.backends.cudnn.benchmark:
        # benchmark mode picks algorithms (and workspaces) per shape, so the trial memory would not predict training
        LOGGER.info(f"{PREFIX}requires torch.backends.cudnn.benchmark=False, using default batch-size {default}")
        return default
    gb = 1 << 30
    props = torch.cuda.get_device_properties(device)
    try:
        trial = deepcopy(model).train().to(memory_format=torch.channels_last)  # frozen layers stay frozen
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(device)
        # What lies outside a step (our model, the trial copy, the CUDA context, other processes) is already out
        # of `free`. Training then frees the copy but adds an optimizer state and an EMA copy, one weight-size net.
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        budget = fraction * total - (total - free) - weights
        LOGGER.info(f"{PREFIX}{props.name} {total / gb:.1f}G total, {free / gb:.1f}G free, "
                    f"target {fraction:.0%} of total")
        sizes, mems, failed_at = (profile or profile_memory)(trial, imgsz, device)
    except Exception as e:  # noqa: BLE001 - a failed measurement must not stop training: fall back
        LOGGER.warning(f"{PREFIX}WARNING ⚠️ trial steps failed ({type(e).__name__}: {str(e)[:200]}), "
                       f"using default batch-size {default}")
        return default
    finally:
        trial = None
        torch.cuda.empty_cache()
    b, why = estimate_batch(sizes, mems, budget, default=default, failed_at=failed_at)
    if why:
        LOGGER.warning(f"{PREFIX}WARNING ⚠️ {why}; using default batch-size {default}")
        return default
    slope, intercept = np.polyfit(sizes, mems, 1)
    LOGGER.info(f"{PREFIX}using batch-size {b} for {imgsz}px: {(intercept + slope * b) / gb:.2f}G per step "
                f"({slope / gb * 1024:.1f}M per image), {fraction:.0%} of {total / gb:.1f}G")
    return b
