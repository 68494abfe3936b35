"""AutoBatch: the largest batch that fits a target fraction of GPU memory, measured with trial steps."""

from __future__ import annotations

import numpy as np
import torch

from utils.log import LOGGER, colorstr

DEFAULT_BATCH = 16


def autobatch(model: torch.nn.Module, imgsz: int, device: torch.device, task=None, fraction: float = 0.8,
              default: int = DEFAULT_BATCH) -> int:
    """Fit memory(batch) ~ a + b*batch from a few real forward+backward steps and solve for `fraction` of the GPU."""
    prefix = colorstr("AutoBatch: ")
    if device.type != "cuda":
        LOGGER.info(f"{prefix}CUDA not detected, using default batch-size {default}")
        return default
    if torch.backends.cudnn.benchmark:
        LOGGER.info(f"{prefix}requires torch.backends.cudnn.benchmark=False, using default batch-size {default}")
        return default
    free, total = torch.cuda.mem_get_info(device)
    gb = 1 << 30
    LOGGER.info(f"{prefix}{torch.cuda.get_device_name(device)} {total / gb:.1f}G total, {free / gb:.1f}G free")
    sizes, mems = [], []
    model.train()
    for b in (1, 2, 4, 8, 16):
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            x = torch.rand(b, 3, imgsz, imgsz, device=device)
            with torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16):
                out = model(x)
                loss = sum(o.float().mean() for o in (out if isinstance(out, (list, tuple)) else [out])
                           if torch.is_tensor(o))
            loss.backward()
            model.zero_grad(set_to_none=True)
            sizes.append(b)
            mems.append(torch.cuda.max_memory_allocated(device) - base)
            del x, out, loss
        except torch.cuda.OutOfMemoryError:
            break
    torch.cuda.empty_cache()
    if len(sizes) < 2:
        LOGGER.warning(f"{prefix}WARNING ⚠️ too few trial steps succeeded, using default batch-size {default}")
        return default
    slope, intercept = np.polyfit(sizes, mems, 1)
    budget = free * fraction + torch.cuda.memory_allocated(device)
    b = int((budget - intercept) / slope) if slope > 0 else default
    if b < 1 or b > 1024:  # a fit that predicts nonsense is worse than the default
        LOGGER.warning(f"{prefix}WARNING ⚠️ batch-size estimate {b} is not plausible, using default {default}")
        return default
    LOGGER.info(f"{prefix}using batch-size {b} for {imgsz}px ({fraction * 100:.0f}% of free memory)")
    return b
