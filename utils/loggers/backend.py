"""What a tracking backend implements, and the run's images every backend uploads (kept apart from Loggers so the
backends, which build on it, import nothing that imports them)."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class Backend:
    """One tracking service; every hook is optional. Errors may propagate: `Loggers` contains them."""

    name = "backend"
    wants_val_images = False  # asks for validation images at the default --bbox-interval

    def on_train_start(self, opts: dict, hyp: dict, data: dict) -> None:
        """The run begins: training options, hyperparameters as given, and the checked dataset description."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """One epoch's results.csv row, keyed by its column names."""

    def log_images(self, name: str, paths: list[Path], epoch: int) -> None:
        """A group of image files under one name (e.g. validation batches with predicted boxes)."""

    def on_fit_end(self, save_dir: Path, best: Path, figures: dict[str, float]) -> None:
        """Training is over: the run folder's plots, best.pt and the final validation figures."""

    def close(self, failed: bool = False) -> None:
        """Flush and release; `failed` when training ended with an exception."""


def run_images(save_dir: Path) -> list[Path]:
    """The plots a finished run leaves in its folder (results, curves, confusion matrix, label and batch mosaics)."""
    return sorted(p for p in Path(save_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
