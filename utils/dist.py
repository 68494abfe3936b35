"""torch.distributed helpers: the process's place in a torchrun job and the few collectives the engine needs."""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta

import torch
import torch.distributed as dist


def rank() -> int:
    """Global rank, -1 outside a distributed job (YOLOv5's convention)."""
    return int(os.getenv("RANK", -1))


def local_rank() -> int:
    """Rank on this machine, -1 outside a distributed job."""
    return int(os.getenv("LOCAL_RANK", -1))


def world_size() -> int:
    """Number of processes in the job (1 when not distributed)."""
    return int(os.getenv("WORLD_SIZE", 1))


def is_main() -> bool:
    """True on the process that logs, validates and writes checkpoints."""
    return rank() in (-1, 0)


def init(device: torch.device) -> None:
    """Join the process group torchrun described in the environment (NCCL on GPUs, gloo on CPU)."""
    if world_size() > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))


def cleanup() -> None:
    """Leave the process group so every rank exits instead of hanging."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for all ranks (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """Send a picklable object from `src` to all ranks and return it."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj) -> list:
    """Collect one picklable object per rank, in rank order."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@contextlib.contextmanager
def main_first():
    """Let rank 0 do a one-off job (dataset scan, cache, download) before the other ranks repeat it from disk."""
    if not is_main():
        barrier()
    yield
    if rank() == 0:
        barrier()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
