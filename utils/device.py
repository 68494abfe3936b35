"""Device selection and timing.

`select_device` must run before anything touches CUDA: CUDA_VISIBLE_DEVICES is only honoured if it is set before the
CUDA runtime initialises (the OneFlow port set it afterwards, so `--device 1` silently used GPU 0).
"""

from __future__ import annotations

import ctypes
import os
import platform
import time
from pathlib import Path

import torch

from utils.errors import DeviceError
from utils.log import LOGGER

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_MMAP_BELOW = 1 << 30  # allocations under this come from the heap...
KEEP_FREE_UP_TO = (1 << 31) - 1  # ...whose free top is returned to the OS only past this (mallopt takes an int)


def keep_freed_memory(device: torch.device) -> bool:
    """On a CPU device, keep freed tensor memory in the process for the next step or batch (glibc only); whether it
    was set. GPU tensors don't come from malloc, so other devices leave the allocator as it is.

    By default glibc serves blocks over its mmap threshold (at most 32 MB) with fresh mmaps and unmaps them on free,
    so every CPU training step with larger activations gets them back from the kernel as new zeroed pages: yolov5s at
    640 px, batch 8 took 430,000 page faults and 1.1 s of system time per 3.4 s step on a 2-core EPYC (Zen 4), and
    2.8 s per step with them kept; yolov5s inference at batch 32 (val.py's default) 1.2 million page faults and 3 s
    of system time per batch, 180 against 110 ms per image. Kept in the heap, the same buffers are reused as they
    are. The process keeps its peak memory until it ends, which a training or validation run reaches every batch.
    """
    if device.type != "cpu":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_MMAP_BELOW) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREE_UP_TO))
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): its allocator keeps its own policy
        return False


def select_device(device: str = "", batch_size: int = 0, newline: bool = True) -> torch.device:
    """Pick the device for '', 'cpu', '0' or '0,1' (sets CUDA_VISIBLE_DEVICES first); checks the batch splits."""
    device = str(device).strip().lower().replace("cuda:", "").replace("none", "")
    cpu, mps = device == "cpu", device == "mps"
    local_rank = int(os.getenv("LOCAL_RANK", -1))
    if cpu or mps:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    elif device and local_rank == -1:
        # Under torchrun each process picks cuda:LOCAL_RANK itself; narrowing visibility here would break that.
        os.environ["CUDA_VISIBLE_DEVICES"] = device
        if not (torch.cuda.is_available() and torch.cuda.device_count() >= len(device.split(","))):
            raise DeviceError(f"--device {device} requested but CUDA is not available or has too few devices "
                             f"(torch.cuda.is_available()={torch.cuda.is_available()}); use --device cpu")
    s = f"MT-YOLOv5 🚀 Python-{platform.python_version()} torch-{torch.__version__} "
    if not cpu and not mps and torch.cuda.is_available():
        n = torch.cuda.device_count()
        if n > 1 and batch_size > 0 and local_rank == -1 and batch_size % n:
            raise DeviceError(f"--batch-size {batch_size} is not a multiple of the GPU count {n}")
        for i in range(n):
            p = torch.cuda.get_device_properties(i)
            s += f"CUDA:{i} ({p.name}, {p.total_memory / 1024 ** 2:.0f}MiB)\n"
        dev = torch.device(f"cuda:{max(local_rank, 0)}")
    elif mps and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        s += "MPS\n"
        dev = torch.device("mps")
    else:
        s += f"CPU ({torch.get_num_threads()} threads)\n"
        dev = torch.device("cpu")
    LOGGER.info(s.rstrip() if not newline else s.rstrip())
    return dev


def time_sync(device: torch.device | None = None) -> float:
    """Wall time after waiting for queued GPU work, for honest per-stage timings."""
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def amp_dtype_for_capability(major: int) -> torch.dtype:
    """AMP dtype for a CUDA compute capability: bf16 from Ampere (8.x) on, fp16 on older GPUs."""
    # Pre-Ampere GPUs can emulate bf16 (torch.cuda.is_bf16_supported() says yes by default) but without bf16
    # tensor cores it is slower than fp32; fp16 with a GradScaler is the fast path there.
    return torch.bfloat16 if major >= 8 else torch.float16


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The AMP dtype for a device: bf16 where the GPU supports it natively, else fp16; None (no AMP) on CPU."""
    if device.type != "cuda":
        return None
    return amp_dtype_for_capability(torch.cuda.get_device_capability(device)[0])


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU model as the OS names it, with its family and model numbers where it gives them: the key of measured
    recipes and runtimes, and one name can cover several generations (a plain "AMD EPYC" is Zen 3 and Zen 4 alike)."""
    try:
        text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if fields.get("cpu family") and fields.get("model"):
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name
