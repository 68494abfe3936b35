"""One typed config for training: every train.py flag is a field here, and argparse is generated from it.

Fields keep YOLOv5 v7.0's flag names and defaults; `flags` adds the aliases (`--img`, `--img-size`). A task's train
script uses a subclass that adds the flags only it has (utils/tasks/segment/config.py, utils/tasks/classify/config.py),
so a shared flag means the same thing everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.errors import ConfigError
from utils.paths import ROOT


def _f(default: Any, help: str, *flags: str, **kw: Any) -> Any:
    """A config field with its help text and extra flag spellings."""
    meta = {"help": help, "flags": flags, **kw}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    weights: str = _f("", "initial weights: our checkpoint or an upstream YOLOv5 .pt ('' = train from scratch)")
    cfg: str = _f("", "model YAML (required when --weights is empty)")
    data: str = _f(str(ROOT / "data/shapes.yaml"), "dataset YAML (default: the built-in synthetic shapes set)")
    hyp: str = _f("", "hyperparameter YAML (default: the data YAML's 'hyp', else data/hyps/hyp.scratch-low.yaml)")
    epochs: int = _f(100, "total training epochs")
    batch_size: int = _f(16, "total batch size over all GPUs, -1 for AutoBatch")
    imgsz: int = _f(640, "train and val image size (pixels)", "--img", "--img-size")
    rect: bool = _f(False, "rectangular training batches (no mosaic)")
    resume: str = _f("", "resume the latest run, or the run of the given last.pt", nargs="?", const="True")
    nosave: bool = _f(False, "only save the final checkpoint")
    noval: bool = _f(False, "only validate after the final epoch")
    noautoanchor: bool = _f(False, "disable AutoAnchor")
    noplots: bool = _f(False, "save no plot files")
    evolve: int = _f(0, "evolve hyperparameters for N generations", nargs="?", const=300)
    cache: str = _f("", "cache images in 'ram' (default) or on 'disk'; 'val': only the validation images, in RAM; "
                        "'off': never (without the flag a set that needs under 1 GB and 10%% of free memory is cached "
                        "in RAM)", nargs="?", const="ram")
    close_mosaic: int = _f(-1, "train the last N epochs on single images, without mosaic (-1: the hyp file's "
                                "'close_mosaic', else 0)")
    image_weights: bool = _f(False, "sample training images weighted by their class rarity")
    device: str = _f("", "cuda device, e.g. 0 or 0,1,2,3, or cpu")
    multi_scale: bool = _f(False, "vary the image size +/- 50%% per batch")
    single_cls: bool = _f(False, "train multi-class data as a single class")
    optimizer: str = _f("", "optimizer (default: the hyp file's 'optimizer', else SGD)",
                        choices=["SGD", "Adam", "AdamW"])
    sync_bn: bool = _f(False, "SyncBatchNorm across GPUs (DDP only)")
    workers: int = _f(8, "max dataloader workers per process")
    project: str = _f(str(ROOT / "runs/train"), "save to project/name")
    name: str = _f("exp", "save to project/name")
    exist_ok: bool = _f(False, "reuse an existing project/name instead of incrementing")
    quad: bool = _f(False, "quad dataloader (4 images -> 1 at twice the size)")
    cos_lr: bool = _f(False, "cosine learning-rate schedule")
    label_smoothing: float = _f(0.0, "label smoothing epsilon")
    patience: int = _f(100, "early-stopping patience in epochs without improvement (0 = off)")
    freeze: list = _f([0], "freeze the first N layers (one value) or the listed layers", nargs="+", type=int)
    save_period: int = _f(-1, "save epochN.pt every N epochs (-1 = off)")
    seed: int = _f(0, "global training seed")
    local_rank: int = _f(-1, "set by torch.distributed.launch; torchrun uses LOCAL_RANK instead")
    compile: bool = _f(False, "torch.compile the model for training (falls back to eager with a warning)")
    max_train_seconds: float = _f(0.0, "stop after the epoch that passes this many seconds (0 = no limit)")
    # Experiment tracking (utils/loggers): TensorBoard when installed; W&B as WANDB_MODE and a login say (README).
    entity: str = _f("", "W&B entity (user or team) to log under ('' = the account's default)")
    upload_dataset: str = _f("", "W&B: log the dataset as an artifact ('val': only the val split)", "--upload_dataset",
                             nargs="?", const="True")
    bbox_interval: int = _f(-1, "log validation images with predicted boxes every N epochs (-1: a tenth of training "
                                "when W&B is on, else never; 0: never)", "--bbox_interval")
    upload_model: bool = _f(False, "W&B: log weights/best.pt as a model artifact at the end", "--upload_model")

    def check(self) -> TrainConfig:
        """Every numeric flag in range, checked once before anything is built (one clear error otherwise)."""
        rules = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1 or self.batch_size == -1,
             f"--batch-size must be at least 1 (or -1 for AutoBatch), got {self.batch_size}"),
            (self.imgsz >= 1, f"--img must be a positive number of pixels, got {self.imgsz}"),
            (self.workers >= 0, f"--workers must be 0 or more, got {self.workers}"),
            (self.patience >= 0, f"--patience must be 0 (off) or more, got {self.patience}"),
            (all(f >= 0 for f in self.freeze), f"--freeze takes layer indices >= 0, got {self.freeze}"),
            (0.0 <= self.label_smoothing < 1.0, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.max_train_seconds >= 0, f"--max-train-seconds must be 0 (off) or more, got {self.max_train_seconds}"),
            (self.evolve >= 0, f"--evolve takes a number of generations >= 0, got {self.evolve}"),
        ]
        for ok, message in rules:
            if not ok:
                raise ConfigError(message)
        return self

    def to_dict(self) -> dict:
        """Plain dict for opt.yaml and checkpoints (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


def add_arguments(parser: argparse.ArgumentParser, cls: type = TrainConfig, **defaults: Any) -> argparse.ArgumentParser:
    """Add one --flag per dataclass field (dashes for underscores), with `defaults` overriding field defaults."""
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        flags = (f"--{f.name.replace('_', '-')}", *meta.pop("flags", ()))
        if f.name == "local_rank":
            flags = ("--local_rank", "--local-rank")
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory())
        kw: dict[str, Any] = {"default": default, "help": meta.pop("help", ""), "dest": f.name}
        if isinstance(default, bool) and "nargs" not in meta:
            kw["action"] = "store_true"
        else:
            kw["type"] = meta.pop("type", type(default) if default is not None else str)
        kw.update(meta)
        parser.add_argument(*flags, **kw)
    return parser


def from_namespace(ns: argparse.Namespace, cls: type = TrainConfig) -> Any:
    """Build the typed config from parsed flags, ignoring flags the config does not know."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(ns).items() if k in names})
