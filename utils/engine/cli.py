"""What every entry point shares: user mistakes become one clear line and exit code 1, not a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from utils.errors import UserError
from utils.log import LOGGER


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean 'the input is wrong', as opposed to a bug in this program."""
    return (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def run_main(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an entry point, printing user errors as one line (ERROR: ...) and exiting 1."""
    try:
        return fn(*args, **kwargs)
    except user_errors() as e:
        LOGGER.error(f"ERROR: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        LOGGER.error("Interrupted")
        sys.exit(130)


def opt_with(parse_opt: Callable[[list[str]], Any], **kwargs: Any) -> Any:
    """A script's default flags overridden by keyword arguments: the Python API behind train.run(), val.run(), ..."""
    opt = parse_opt([])
    unknown = sorted(set(kwargs) - set(vars(opt)))
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(unknown)}")
    for k, v in kwargs.items():
        setattr(opt, k, v)
    return opt


def train(cfg: Any, task: Any, hyp: dict | None = None) -> dict:
    """What every train script does once its flags are parsed: evolve hyperparameters (--evolve) or train once."""
    if cfg.evolve:
        from utils.engine.evolve import evolve

        return evolve(cfg, task)
    from utils.engine.trainer import Trainer

    return Trainer(cfg, task, hyp=hyp).fit()


# one-yolov5 (the OneFlow port) turns its fused box IoU and multi-tensor optimizer steps on by flag; here both are
# always on (utils/boxes.bbox_iou is branch-free tensor code, utils/optim steps with foreach/fused kernels), so its
# commands run unchanged and the flags change nothing.
ONE_YOLOV5_FLAGS = {"bbox_iou_optim": "box IoU as one fused tensor expression",
                    "multi_tensor_optimizer": "multi-tensor (foreach/fused) optimizer steps"}


def add_one_yolov5_flags(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Accept one-yolov5's speed-up switches (--bbox_iou_optim, --multi_tensor_optimizer) on a train script."""
    for name, what in ONE_YOLOV5_FLAGS.items():
        p.add_argument(f"--{name}", f"--{name.replace('_', '-')}", action="store_true",
                       help=f"one-yolov5 compatibility: {what} (always on here)")
    return p


def note_one_yolov5_flags(opt: argparse.Namespace) -> None:
    """One line when one-yolov5's speed-up switches were given: they are always on here."""
    given = [f"--{k}" for k in ONE_YOLOV5_FLAGS if getattr(opt, k, False)]
    if given:
        LOGGER.info(f"{' '.join(given)}: always on here ({'; '.join(ONE_YOLOV5_FLAGS[g[2:]] for g in given)}), "
                    f"nothing to switch")
