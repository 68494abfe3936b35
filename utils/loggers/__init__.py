"""Experiment tracking behind one interface: the Trainer talks to `Loggers`, which fans out to the backends.

Backends (tensorboard.py, wandb.py) are optional: one that is not installed or not wanted is skipped with at most
one info line, and one that fails to start or to log warns once and is dropped; training never stops for a logger.
Nothing heavy is imported here, so a run that logs nothing pays nothing.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from utils.log import LOGGER
from utils.loggers.backend import IMAGE_SUFFIXES, Backend, run_images  # noqa: F401  (Backend, run_images: the API)


def _first_line(e: BaseException) -> str:
    """`Type: message` on one line (wandb's errors run to several)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


class Loggers:
    """The backends of one run; each call reaches every live backend, and a failing one is dropped after a warning."""

    def __init__(self, backends: list[Backend] | None = None, bbox_interval: int = 0):
        self.backends = list(backends or [])
        self.bbox_interval = bbox_interval

    @classmethod
    def create(cls, cfg: Any, save_dir: Path) -> Loggers:
        """The backends `cfg` and the environment ask for (TensorBoard when installed, W&B per WANDB_MODE/login)."""
        from utils.loggers import tensorboard, wandb

        backends = []
        for module in (tensorboard, wandb):
            try:
                backend = module.start(cfg, Path(save_dir))
            except Exception as e:  # noqa: BLE001 - a tracking service must never stop training
                LOGGER.warning(f"WARNING ⚠️ {module.__name__.split('.')[-1]} logger failed to start "
                               f"({_first_line(e)}); training goes on without it")
                continue
            if backend is not None:
                backends.append(backend)
        # --bbox-interval -1 (upstream's default): every tenth of training when a backend asks for images, else never
        interval = int(getattr(cfg, "bbox_interval", -1))
        if interval < 0:
            interval = max(int(cfg.epochs) // 10, 1) if any(b.wants_val_images for b in backends) else 0
        return cls(backends, bbox_interval=interval)

    def _call(self, hook: str, *args: Any, **kwargs: Any) -> None:
        for b in list(self.backends):
            try:
                getattr(b, hook)(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - one broken logger must not end a training run
                LOGGER.warning(f"WARNING ⚠️ {b.name} logger failed in {hook} ({_first_line(e)}); "
                               f"training goes on without it")
                self.backends.remove(b)
                with contextlib.suppress(Exception):
                    b.close(failed=True)

    def on_train_start(self, opts: dict, hyp: dict, data: dict) -> None:
        """Start every backend's run with the options, hyperparameters and dataset."""
        self._call("on_train_start", opts, hyp, data)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log one epoch's metrics (the results.csv row)."""
        self._call("on_epoch_end", epoch, {k: float(v) for k, v in metrics.items()})

    def log_images(self, name: str, paths: list[Path], epoch: int) -> None:
        """Log image files under one name."""
        paths = [Path(p) for p in paths if Path(p).suffix.lower() in IMAGE_SUFFIXES and Path(p).is_file()]
        if paths:
            self._call("log_images", name, paths, epoch)

    def on_fit_end(self, save_dir: Path, best: Path, figures: dict[str, float]) -> None:
        """Log the run's final plots, best.pt and figures."""
        self._call("on_fit_end", Path(save_dir), Path(best), dict(figures))

    def close(self) -> None:
        """Finish every backend; called from a `finally`, so an exception in flight marks the runs as failed."""
        failed = sys.exc_info()[1] is not None
        for b in self.backends:
            with contextlib.suppress(Exception):
                b.close(failed=failed)
        self.backends = []

    def wants_images(self, epoch: int) -> bool:
        """Whether this epoch's validation images go to the loggers (--bbox-interval)."""
        return bool(self.backends) and self.bbox_interval > 0 and (epoch + 1) % self.bbox_interval == 0

    @contextlib.contextmanager
    def val_images(self, evaluator: Any, epoch: int) -> Iterator[None]:
        """Around one validation: when this epoch's images are due, the evaluator plots its batches (the task draws
        labels and predictions) into a scratch folder, and those files are logged as 'Validation'."""
        if not self.wants_images(epoch):
            yield
            return
        plots, save_dir = evaluator.plots, evaluator.save_dir
        with tempfile.TemporaryDirectory(prefix="val_images_") as tmp:
            evaluator.plots, evaluator.save_dir = True, Path(tmp)
            try:
                yield
            finally:
                evaluator.plots, evaluator.save_dir = plots, save_dir
            self.log_images("Validation", sorted(Path(tmp).glob("val_batch*")), epoch)

