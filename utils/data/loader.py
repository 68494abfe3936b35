"""What every task's data loading shares: finding images, the image -> tensor layout, and the seeded DataLoader."""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from utils import dist
from utils.data.formats import is_image_file

PIN_MEMORY = str(os.getenv("PIN_MEMORY", True)).lower() == "true"
NO_CACHE = ("off", "none", "false", "no")  # --cache values that turn even the automatic cache off
# Without --cache, a set whose resized images take at most this much (and at most AUTO_CACHE_SHARE of the available
# memory) is kept decoded in RAM: decoding was 57% of a training sample's CPU time on the built-in set (4.2 of 7.3 ms
# at 192 px) and on a CPU machine the loader's time comes out of the training step's.
AUTO_CACHE_BYTES = 1 << 30
AUTO_CACHE_SHARE = 0.1


@dataclass(frozen=True)
class LoaderOptions:
    """What a task's build_dataloader takes from the run's flags and the data YAML (batch size, stride, hyp and the
    mode come as arguments: they differ between the train and val loaders of one run)."""

    imgsz: int = 640
    single_cls: bool = False
    cache: str | None = None  # 'ram', 'disk', 'val', 'off' or None (not given: RAM when the set is small)
    rect: bool = False
    workers: int = 8
    image_weights: bool = False
    quad: bool = False
    seed: int = 0
    images_dir: str = "images"  # the data YAML's path rule (images_dir / labels_dir)
    labels_dir: str = "labels"

    @classmethod
    def from_config(cls, cfg: Any, data: dict | None = None) -> LoaderOptions:
        """From a TrainConfig (flags) and the checked data dict."""
        opts = cls(imgsz=int(cfg.imgsz), single_cls=bool(cfg.single_cls), cache=cfg.cache or None, rect=bool(cfg.rect),
                   workers=int(cfg.workers), image_weights=bool(cfg.image_weights), quad=bool(cfg.quad),
                   seed=int(cfg.seed))
        return opts.with_data(data or {})

    def cache_for(self, train: bool) -> str | None:
        """The cache of the train or val loader: v7.0's --cache val caches only the validation images, in RAM;
        without --cache, 'auto' (RAM when the set is small, see AUTO_CACHE_BYTES); --cache off never caches."""
        if self.cache is None:
            return "auto"
        if self.cache == "val":
            return None if train else "ram"
        return None if str(self.cache).lower() in NO_CACHE else self.cache

    def with_data(self, data: dict) -> LoaderOptions:
        """These options with the data YAML's path rule."""
        return dataclasses.replace(self, images_dir=data.get("images_dir") or "images",
                                   labels_dir=data.get("labels_dir") or "labels")


def find_images(path, prefix: str = "") -> list[str]:
    """Image files from a folder (recursive), a .txt list (relative entries resolve against its folder),
    a single image, or a list of these; sorted. Raises a one-line error naming the path."""
    files = []
    for p in path if isinstance(path, (list, tuple)) else [path]:
        p = Path(p)
        if p.is_dir():
            files += glob.glob(str(p / "**" / "*.*"), recursive=True)
        elif p.is_file() and p.suffix.lower() == ".txt":
            parent = str(p.parent) + os.sep
            lines = p.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            files += [x.strip().replace("./", parent, 1) if x.strip().startswith("./") else x.strip()
                      for x in lines if x.strip()]
        elif p.is_file():
            files.append(str(p))
        else:
            raise FileNotFoundError(f"{prefix}{p} does not exist")
    im_files = sorted(os.path.normpath(x) for x in files if is_image_file(x))
    if not im_files:
        raise FileNotFoundError(f"{prefix}No images found in {path}")
    return im_files


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (None when the OS does not say)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def hwc_bgr_to_chw_rgb(img: np.ndarray) -> torch.Tensor:
    """HWC BGR uint8 image -> contiguous CHW RGB tensor (the layout and channel order the model takes)."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        return torch.from_numpy(np.ascontiguousarray(img.transpose((2, 0, 1))[::-1]))
    out = torch.empty((3, *img.shape[:2]), dtype=torch.uint8)
    planes = out.numpy()
    # cv2.split writes into the three planes (same size and type, so no reallocation): ~10x faster than numpy's
    # strided transpose copy of an interleaved image
    cv2.split(img, [planes[2], planes[1], planes[0]])
    return out


def stack_for_transfer(tensors) -> torch.Tensor:
    """torch.stack; inside a DataLoader worker the batch goes straight into shared memory, as default_collate does,
    so sending it to the main process costs no second copy."""
    if torch.utils.data.get_worker_info() is None:
        return torch.stack(tensors, 0)
    t0 = tensors[0]
    storage = torch.UntypedStorage._new_shared(len(tensors) * t0.numel() * t0.element_size(), device=t0.device)
    out = torch.empty(0, dtype=t0.dtype, device=t0.device).set_(storage, 0, (len(tensors), *t0.shape))
    return torch.stack(tensors, 0, out=out)


# Niceness of the workers of a machine without CUDA, where they share the cores with the model's own compute threads.
# At the same priority a worker preempts one of those threads mid-operation and the other waits for it, so a worker's
# CPU second cost the training step about two (yolov5n 256 b16 on 2 cores: forward + backward 21.0 s per epoch with 2
# workers at nice 0, 13.0 s with loading in the training process, 14.5 s with workers at nice 19, which then fill
# the gaps between the step's operations instead). On a GPU machine the training process mostly waits, and workers
# that yield would starve the GPU, so they keep their priority there.
CPU_WORKER_NICENESS = 19


def seed_worker(worker_id: int, niceness: int = 0) -> None:
    """Give each DataLoader worker its own reproducible python/numpy random state (and lower its priority by
    `niceness`)."""
    # Workers already run in parallel (one sample each); OpenCV's own thread pool on top oversubscribes the cores.
    cv2.setNumThreads(0)
    if niceness:
        try:
            os.nice(niceness)
        except (OSError, AttributeError):  # a platform without nice (Windows) keeps the default priority
            pass
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def seeded_loader(dataset: Dataset, batch_size: int, workers: int, shuffle: bool, rank: int, seed: int,
                  collate_fn, persistent: bool = True) -> DataLoader:
    """YOLOv5's loader: workers capped by CPUs per GPU and batch, a seeded shuffle, a DistributedSampler under DDP."""
    batch_size = min(batch_size, len(dataset))
    nd = torch.cuda.device_count()
    nw = min((os.cpu_count() or 1) // max(nd, 1), batch_size if batch_size > 1 else 0, workers)
    sampler = None if rank == -1 else DistributedSampler(dataset, shuffle=shuffle)
    generator = torch.Generator()
    generator.manual_seed(6148914691236517205 + seed + dist.rank())  # each process its own stream
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, num_workers=nw,
                      sampler=sampler, pin_memory=PIN_MEMORY and torch.cuda.is_available(), collate_fn=collate_fn,
                      worker_init_fn=functools.partial(seed_worker, niceness=worker_niceness()), generator=generator,
                      persistent_workers=nw > 0 and persistent)


def worker_niceness() -> int:
    """How much DataLoader workers lower their priority: on a machine without CUDA they yield to the training step."""
    return 0 if torch.cuda.is_available() else CPU_WORKER_NICENESS
