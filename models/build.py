"""Build the model class a YAML describes (detection, instance segmentation, classification, detection + semantic),
and the model CLI (python models/yolo.py --cfg yolov5s.yaml).

This sits above models/yolo.py and models/multitask.py: the detection + semantic model builds on DetectionModel, so
the function that chooses between them cannot live in yolo.py without an import cycle.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch

from models.heads import Classify, Detect, Segment
from models.multitask import SemanticDetectionModel
from models.yolo import BaseModel, ClassificationModel, DetectionModel, SegmentationModel, _head_class, load_yaml_cfg
from utils.errors import ModelConfigError
from utils.log import LOGGER
from utils.paths import ROOT


def model_class(cfg: str | Path | dict) -> type[BaseModel]:
    """The model class that matches the YAML: a semantic section (SemanticDetectionModel), else its head (Segment,
    Detect or Classify)."""
    d = load_yaml_cfg(cfg)
    head = _head_class(d)
    name = cfg if not isinstance(cfg, dict) else d.get("yaml_file", "model dict")
    if d.get("semantic"):
        if head is None or not issubclass(head, Detect) or issubclass(head, Segment):
            raise ModelConfigError(f"{name}: a semantic section needs a Detect head as the head's last layer")
        return SemanticDetectionModel
    for head_cls, model_cls in ((Segment, SegmentationModel), (Detect, DetectionModel),
                                (Classify, ClassificationModel)):
        if head is not None and issubclass(head, head_cls):
            return model_cls
    raise ModelConfigError(f"{name}: last layer must be Detect, Segment or Classify")


def model_kind(cfg: str | Path | dict) -> str:
    """The kind of model a YAML describes ('detect', 'segment', 'classify', 'semantic'), without building it."""
    return model_class(cfg).task


def build_model(cfg: str | Path | dict, ch: int = 3, nc: int | None = None, nc_seg: int | None = None) -> BaseModel:
    """Build the model class that matches the YAML (see model_class); nc_seg overrides the YAML's number of semantic
    classes."""
    cls = model_class(cfg)
    if cls is SemanticDetectionModel:
        return SemanticDetectionModel(cfg, ch=ch, nc=nc, nc_seg=nc_seg)
    if nc_seg is not None:
        name = cfg if not isinstance(cfg, dict) else cfg.get("yaml_file", "model dict")
        raise ModelConfigError(f"{name}: nc_seg={nc_seg} given but the model YAML has no semantic section "
                               f"(use e.g. yolov5s-city.yaml, or models.semantic.with_semantic_head)")
    if cls is ClassificationModel:
        return ClassificationModel(cfg, nc=nc, ch=ch)
    return cls(cfg, ch=ch, nc=nc)


def _select_device(device: str) -> torch.device:
    with contextlib.suppress(ImportError):
        from utils.device import select_device

        return select_device(device)
    return torch.device("cuda:0" if device not in ("", "cpu") and torch.cuda.is_available() else "cpu")


def main(argv: list[str] | None = None) -> None:
    """Command line: build a model, print its layer table and summary; optionally profile or build every YAML."""
    parser = argparse.ArgumentParser(description="Build a YOLOv5 model from YAML and print its summary")
    parser.add_argument("--cfg", type=str, default="yolov5s.yaml", help="model.yaml")
    parser.add_argument("--batch-size", type=int, default=1, help="total batch size for all GPUs")
    parser.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    parser.add_argument("--profile", action="store_true", help="profile model speed")
    parser.add_argument("--line-profile", action="store_true", help="profile model speed layer by layer")
    parser.add_argument("--test", action="store_true", help="test all yolo*.yaml")
    opt = parser.parse_args(argv)
    try:
        device = _select_device(opt.device)
        model = build_model(opt.cfg).to(device)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    im = torch.rand(opt.batch_size, 3, 640, 640, device=device)
    if opt.line_profile:
        model(im, profile=True)
    elif opt.profile:
        model.eval()
        with torch.no_grad():
            model(im)  # warm-up
            t = time.perf_counter()
            for _ in range(3):
                model(im)
        LOGGER.info(f"forward: {(time.perf_counter() - t) / 3 * 1000:.1f} ms at batch {opt.batch_size}x3x640x640")
    elif opt.test:
        for cfg in sorted((ROOT / "models").rglob("yolo*.yaml")):
            try:
                build_model(cfg)
            except Exception as e:  # report every broken YAML, keep going
                LOGGER.info(f"Error in {cfg}: {e}")
    else:
        model.fuse()

