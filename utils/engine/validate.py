"""Standalone validation (val.py, segment/val.py, classify/val.py): the engine's flags, then the task's own."""

from __future__ import annotations

import argparse
from pathlib import Path

from utils.checkpoint import first_weights, local_weights
from utils.data.loader import LoaderOptions
from utils.device import keep_freed_memory, select_device
from utils.engine.evaluator import EvalResult, Evaluator
from utils.engine.task import Task, add_task_arguments, check_model_task
from utils.errors import ConfigError
from utils.export.backend import load_backend, val_imgsz
from utils.log import LOGGER, colorstr
from utils.paths import increment_path


def add_val_arguments(p: argparse.ArgumentParser, task: Task | type | list, data: str, weights: str, project: str,
                      batch_size: int = 32, imgsz: int = 640) -> argparse.ArgumentParser:
    """The flags every validation takes (YOLOv5 v7.0 names), then the task's own (thresholds, saving, ...)."""
    p.add_argument("--data", type=str, default=data, help="dataset.yaml path (classification: a folder)")
    p.add_argument("--weights", nargs="+", type=str, default=[weights], help="model path(s)")
    p.add_argument("--batch-size", type=int, default=batch_size, help="batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=imgsz, help="inference size (pixels)")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers")
    p.add_argument("--project", default=project, help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference (CUDA only)")
    add_task_arguments(p, task, "add_val_arguments")
    return p


def check_val_options(opt: argparse.Namespace) -> None:
    """Numeric flags out of range are one clear error before anything loads."""
    if opt.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {opt.batch_size}")
    if opt.imgsz < 1:
        raise ConfigError(f"--imgsz must be a positive number of pixels, got {opt.imgsz}")
    if opt.workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {opt.workers}")


def tta_allowed(task: Task, augment: bool) -> bool:
    """--augment when the task supports test-time augmentation; otherwise one warning and plain inference."""
    if augment and not task.tta:
        LOGGER.warning(f"WARNING ⚠️ --augment (test-time augmentation) is not supported for the '{task.name}' task; "
                       f"running without it")
        return False
    return augment


def validate(opt: argparse.Namespace, task: Task) -> EvalResult:
    """Run one validation as val.py does and return its figures."""
    from utils.engine.trainer import check_img_size

    check_val_options(opt)
    device = select_device(opt.device, batch_size=opt.batch_size)
    keep_freed_memory(device)  # on a CPU, batch 32 at 640 px has activations of hundreds of MB: reuse them
    weights = first_weights(opt.weights)
    model = load_backend(local_weights(opt.weights), device=device, fuse=True)
    check_model_task(model, task, weights)
    data = task.check_data(opt.data)
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    settings = task.val_settings(opt, data, save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    names = {0: "item"} if settings.single_cls else data["names"]
    gs = max(int(model.stride.max()), 32) if hasattr(model, "stride") else 32
    imgsz, square = val_imgsz(model, check_img_size(opt.imgsz, gs))  # a static export: its own size, square
    if not data.get(settings.split):
        raise FileNotFoundError(f"{opt.data}: no '{settings.split}' split defined")
    loader_cfg = LoaderOptions(imgsz=imgsz, single_cls=settings.single_cls, workers=opt.workers).with_data(data)
    loader, _ = task.build_dataloader(data[settings.split], loader_cfg, {}, opt.batch_size, gs,
                                      mode="speed" if square else settings.loader_mode)
    ev = Evaluator(task, loader, names, save_dir, plots=settings.plots, verbose=settings.verbose, half=opt.half,
                   augment=tta_allowed(task, settings.augment), post_kw=settings.post,
                   metric_kw={"single_cls": settings.single_cls, **settings.metric})
    result = ev(model)
    task.after_val(result, settings, data, save_dir, weights)
    LOGGER.info(f"Results saved to {colorstr('bold', str(save_dir))}")
    return result
