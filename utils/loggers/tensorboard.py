"""TensorBoard backend: results.csv's columns as scalars, plots as images, events in the run folder (as upstream)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from utils.log import LOGGER, colorstr
from utils.loggers.backend import Backend, run_images


def start(cfg: Any, save_dir: Path) -> Backend | None:
    """A TensorBoard writer for this run, or None (one info line) when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package
        LOGGER.info(f"{colorstr('TensorBoard: ')}not installed, not logging (pip install tensorboard)")
        return None
    return TensorBoardBackend(SummaryWriter, save_dir)


def _image_summary(tag: str, path: Path):
    """A TensorBoard image summary holding the file's own PNG/JPEG bytes.

    SummaryWriter.add_image decodes nothing but re-encodes every array as PNG through PIL: 0.26 s per plot here,
    5 s for a run's 17 result images, which is 2% of a 5-minute first run for pictures already encoded on disk.
    """
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    data = path.read_bytes()
    with Image.open(path) as im:  # reads the header only
        w, h = im.size
        channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}.get(im.mode, 3)
    image = Summary.Image(height=h, width=w, colorspace=channels, encoded_image_string=data)
    return Summary(value=[Summary.Value(tag=tag, image=image)])


class TensorBoardBackend(Backend):
    """Writes events.out.tfevents.* next to results.csv, so `tensorboard --logdir runs/train` shows every run."""

    name = "TensorBoard"

    def __init__(self, writer_cls: type, save_dir: Path):
        self.save_dir, self.writer_cls, self.writer, self.epoch = save_dir, writer_cls, None, 0

    def on_train_start(self, opts: dict, hyp: dict, data: dict) -> None:
        self.writer = self.writer_cls(str(self.save_dir))
        LOGGER.info(f"{colorstr('TensorBoard: ')}Start with 'tensorboard --logdir {self.save_dir.parent}', "
                    f"view at http://localhost:6006/")

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epoch = epoch
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, epoch)
        self.writer.flush()  # a crashed or still-running run is readable up to its last epoch

    def log_images(self, name: str, paths: list[Path], epoch: int) -> None:
        for p in paths:
            self.writer.file_writer.add_summary(_image_summary(f"{name}/{p.stem}", p), epoch)

    def on_fit_end(self, save_dir: Path, best: Path, figures: dict[str, float]) -> None:
        self.log_images("Results", run_images(save_dir), self.epoch)

    def close(self, failed: bool = False) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
