"""What hubconf.py's entry points do: load a checkpoint or build a named model, and wrap it in AutoShape."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn as nn

from models.build import build_model
from models.yolo import ClassificationModel, DetectionModel
from utils.checkpoint import intersect_state_dict, load_checkpoint, load_model, prepare_inference
from utils.device import select_device
from utils.downloads import attempt_download
from utils.hub.autoshape import AutoShape
from utils.log import LOGGER, quiet
from utils.paths import ROOT

CLS_CUTOFF = 10  # upstream's -cls models: a detection backbone cut at layer 10


def _device(device) -> torch.device:
    return device if isinstance(device, torch.device) else select_device("" if device is None else str(device))


def _build(name: str, channels: int, classes: int) -> nn.Module:
    """A randomly initialised model: models/<name>.yaml, or for '-cls' the detection backbone plus Classify."""
    base = name.removesuffix("-cls")
    cfg = ROOT / "models" / f"{base}.yaml"
    if not cfg.is_file():
        raise FileNotFoundError(f"{name}: no model definition {cfg}")
    if name.endswith("-cls"):
        return ClassificationModel(model=DetectionModel(cfg, ch=channels), nc=classes, cutoff=CLS_CUTOFF)
    return build_model(cfg, ch=channels, nc=classes)


def _transfer(model: nn.Module, weights: Path, classes: int) -> None:
    """Load the layers of a pretrained checkpoint that fit a model built for other channels or classes."""
    ck = load_checkpoint(weights)
    sd = ck["ema"] if ck.get("ema") is not None else ck["model"]
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    csd = intersect_state_dict(sd, model.state_dict(), exclude=("anchors",))  # anchors are the model's own
    model.load_state_dict(csd, strict=False)
    LOGGER.info(f"Transferred {len(csd)}/{len(model.state_dict())} items from {weights}")
    if len(ck.get("names", {})) == classes:  # the class names still apply
        model.names = {int(k): v for k, v in ck["names"].items()}


def create(name: str, pretrained: bool = True, channels: int = 3, classes: int | None = None, autoshape: bool = True,
           _verbose: bool = True, device=None) -> nn.Module:
    """Model `name` ('yolov5s', 'yolov5n6', 'yolov5s-seg', 'yolov5s-cls', ...): the official v7.0 weights when
    pretrained (fetched if missing; one-line FileNotFoundError offline), else random weights; AutoShape-wrapped
    unless autoshape=False (then pretrained gives the eval model, random the trainable one). classes defaults to
    the official models' count (80, 1000 for -cls); other channels/classes keep the pretrained layers that fit."""
    official_nc = 1000 if name.endswith("-cls") else 80
    classes = official_nc if classes is None else int(classes)
    with contextlib.nullcontext() if _verbose else quiet():
        dev = _device(device)
        if pretrained and channels == 3 and classes == official_nc:
            model = load_model(f"{name}.pt", device=dev)
        elif pretrained:
            weights = attempt_download(f"{name}.pt")
            model = _build(name, channels, classes)
            _transfer(model, weights, classes)
            model = prepare_inference(model, dev)
        else:
            model = _build(name, channels, classes)
            if not autoshape:
                return model.to(dev)
            model = prepare_inference(model, dev)
    return AutoShape(model) if autoshape else model


def custom(path: str | Path = "path/to/model.pt", autoshape: bool = True, _verbose: bool = True,
           device=None) -> nn.Module:
    """A trained checkpoint (ours or an upstream YOLOv5 v7.0 .pt) ready to predict, AutoShape-wrapped by default."""
    with contextlib.nullcontext() if _verbose else quiet():
        model = load_model(path, device=_device(device))
    return AutoShape(model) if autoshape else model
