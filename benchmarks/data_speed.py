"""Dataloader speed: training images/s per worker, the time split per stage of one sample, and N-worker throughput.

    python benchmarks/data_speed.py                           # coco128 (../shared/datasets) or shapes, 640, 2 workers
    python benchmarks/data_speed.py --data data/shapes.yaml --img 320 --samples 200
    python benchmarks/data_speed.py --cache ram                # images decoded once, kept resized in RAM
    python benchmarks/data_speed.py --workers 0 --profile      # cProfile of the in-process samples too

One process (dataset[i] called directly, OpenCV single-threaded as in a DataLoader worker) gives images/s per
worker, by the wall clock and by CPU time (steadier on a shared machine); the stage split wraps the stage functions
from outside the library and counts each call's own CPU time (time in wrapped callees is charged to the callee), so
the stages add up to the sample. The loader figure is a DataLoader with --workers processes and the training batch
collate, after its first batch (worker start-up), by the wall clock and per CPU-second of the workers and the main
process (read from /proc).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import os
import pstats
import random
import sys
import time
import types
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import utils.data.augment as augment  # noqa: E402
import utils.tasks.detect.dataset as dataset_mod  # noqa: E402
from utils.data.dataset_config import check_dataset  # noqa: E402
from utils.log import quiet  # noqa: E402
from utils.tasks.detect.dataset import YoloDataset, create_dataloader  # noqa: E402

COCO128 = ROOT.parent / "shared" / "datasets" / "coco128" / "coco128.yaml"
STAGES = ("decode", "resize", "mosaic", "warp", "labels", "hsv", "flips", "to-tensor", "other")


class StageTimer:
    """Self time per stage: a call's CPU time (this thread's, so other programs on a shared machine don't count)
    minus the time spent in wrapped calls made inside it."""

    def __init__(self) -> None:
        self.self_s: dict[str, float] = defaultdict(float)
        self._child = [0.0]  # time spent in wrapped callees of each open call

    def wrap(self, stage: str, fn):
        """fn wrapped so its own time is charged to `stage`."""
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self._child.append(0.0)
            t = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.thread_time() - t
                child = self._child.pop()
                self.self_s[stage] += dt - child
                self._child[-1] += dt
        return timed


def patch_stages(ds: YoloDataset, timer: StageTimer) -> list:
    """Wrap the stage functions where the pipeline looks them up; returns what restore_stages needs."""
    saved = []

    def put(obj, name: str, stage: str) -> None:
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, timer.wrap(stage, getattr(obj, name)))

    put(dataset_mod, "imread", "decode")
    put(ds, "load_image", "resize")  # its own time: the resize (and cache look-up) around imread
    put(dataset_mod, "load_mosaic", "mosaic")  # own time: canvas fill and tile copies
    put(augment, "copy_paste", "mosaic")
    put(augment, "random_perspective", "labels")  # own time: the matrix, box warp and box_candidates
    put(dataset_mod, "random_perspective", "labels")
    put(augment, "xywhn2xyxy", "labels")
    put(augment, "xyn2xy", "labels")
    put(augment, "xyxy2xywhn", "labels")
    put(dataset_mod, "augment_hsv", "hsv")
    put(dataset_mod, "flip_lr", "flips")
    put(dataset_mod, "flip_ud", "flips")
    put(dataset_mod, "mixup", "other")
    put(ds, "get_sample", "other")  # own time: random draws and glue
    put(ds, "__getitem__", "to-tensor")  # own time: CHW RGB copy and the label tensor
    # the warp is a cv2 call inside random_perspective: give augment a cv2 whose warps are timed
    cv2_proxy = types.SimpleNamespace(**{k: getattr(cv2, k) for k in dir(cv2) if not k.startswith("__")})
    cv2_proxy.warpAffine = timer.wrap("warp", cv2.warpAffine)
    cv2_proxy.warpPerspective = timer.wrap("warp", cv2.warpPerspective)
    saved.append((augment, "cv2", augment.cv2))
    augment.cv2 = cv2_proxy
    return saved


def restore_stages(ds: YoloDataset, saved: list) -> None:
    """Undo patch_stages."""
    for obj, name, fn in reversed(saved):
        if obj is ds:
            delattr(ds, name)  # the bound method comes back from the class
        else:
            setattr(obj, name, fn)


def per_sample_rate(ds: YoloDataset, order: list[int]) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second) of dataset[i] over `order`, in this process."""
    t, c = time.perf_counter(), time.process_time()
    for i in order:
        ds[i]
    return len(order) / (time.perf_counter() - t), len(order) / (time.process_time() - c)


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds used so far by these processes (Linux /proc; None elsewhere)."""
    try:
        total = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="", help="data YAML; default coco128 from ../shared/datasets, else shapes")
    p.add_argument("--img", type=int, default=640)
    p.add_argument("--hyp", default=str(ROOT / "data/hyps/hyp.scratch-low.yaml"))
    p.add_argument("--samples", type=int, default=128, help="samples per in-process measurement")
    p.add_argument("--repeats", type=int, default=3, help="in-process measurements (the best is reported)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the loader figure (0: skip)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=24, help="timed loader batches (after the first)")
    p.add_argument("--cache", choices=("ram", "disk"), default=None)
    p.add_argument("--cv2-threads", type=int, default=0, help="cv2.setNumThreads in this process (0: as in workers)")
    p.add_argument("--profile", action="store_true", help="print the top of a cProfile of the in-process samples")
    p.add_argument("--seed", type=int, default=0)
    opt = p.parse_args()

    data_yaml = opt.data or (COCO128 if COCO128.is_file() else ROOT / "data/shapes.yaml")
    hyp = yaml.safe_load(Path(opt.hyp).read_text())
    with quiet():
        data = check_dataset(data_yaml)
        ds = YoloDataset(data["train"], opt.img, opt.batch, augment=True, hyp=hyp, cache_images=opt.cache)
    cv2.setNumThreads(opt.cv2_threads)
    random.seed(opt.seed)
    np.random.seed(opt.seed)
    order = [random.randrange(len(ds)) for _ in range(opt.samples)]
    print(f"{Path(data_yaml).name}: {len(ds)} train images, {opt.img}px, mosaic {hyp['mosaic']}, mixup {hyp['mixup']},"
          f" perspective {hyp['perspective']}, cache {opt.cache}; torch {torch.__version__}, OpenCV {cv2.__version__}"
          f" ({cv2.getNumThreads()} threads here), numpy {np.__version__}")

    per_sample_rate(ds, order[:8])  # warm the page cache and allocator
    runs = [per_sample_rate(ds, order) for _ in range(opt.repeats)]
    wall, cpu = max(r[0] for r in runs), max(r[1] for r in runs)
    print(f"one worker (in process): {wall:.1f} images/s wall (runs: {', '.join(f'{r[0]:.1f}' for r in runs)}), "
          f"{cpu:.1f} images per CPU-second ({1e3 / cpu:.2f} CPU-ms per image)")

    timer = StageTimer()
    saved = patch_stages(ds, timer)
    try:
        t = time.thread_time()
        for i in order:
            ds.__getitem__(i)  # the instance attribute (the wrapper); ds[i] would look up the class
        total = time.thread_time() - t
    finally:
        restore_stages(ds, saved)
    batch = [ds[i] for i in order[:opt.batch]]
    ts = []
    for _ in range(20):
        t = time.thread_time()
        YoloDataset.collate_fn(batch)
        ts.append(time.thread_time() - t)
    collate_ms = float(np.median(ts)) / len(batch) * 1e3
    ms = {k: timer.self_s.get(k, 0.0) / len(order) * 1e3 for k in STAGES}
    ms["untracked"] = total / len(order) * 1e3 - sum(ms.values())
    ms["collate"] = collate_ms
    whole = sum(ms.values())
    print(f"CPU time split per image ({whole:.2f} ms with stage timers): "
          + ", ".join(f"{k} {v:.2f} ms ({v / whole:.0%})" for k, v in ms.items()))

    if opt.profile:
        pr = cProfile.Profile()
        pr.enable()
        for i in order:
            ds[i]
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(15)
        print(s.getvalue())

    if opt.workers:
        with quiet():
            loader, _ = create_dataloader(data["train"], opt.img, opt.batch, 32, hyp=hyp, augment=True,
                                          cache=opt.cache, workers=opt.workers, shuffle=True, seed=opt.seed)
        n, t, c0, it = 0, 0.0, None, iter(loader)
        pids = [os.getpid()] + [w.pid for w in getattr(it, "_workers", [])]
        for k in range(opt.batches + 1):
            try:
                ims = next(it)["img"]
            except StopIteration:
                it = iter(loader)  # persistent workers: a new epoch reuses them
                ims = next(it)["img"]
            if k == 0:  # worker start-up and the first batch are not throughput
                t, c0 = time.perf_counter(), cpu_seconds(pids)
            else:
                n += len(ims)
        rate = n / (time.perf_counter() - t)
        c1 = cpu_seconds(pids)
        cpu_txt = f", {n / (c1 - c0):.1f} images per CPU-second of workers + main" if c0 is not None and c1 else ""
        print(f"DataLoader, {loader.num_workers} workers, batch {opt.batch}: {rate:.1f} images/s wall "
              f"({rate / max(loader.num_workers, 1):.1f} per worker, {rate / wall:.2f}x one in-process worker)"
              f"{cpu_txt}; this machine has {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
