"""segment/train.py's flags: the shared TrainConfig plus instance segmentation's own (kept in the run's opt.yaml, so a
resumed run builds its masks as it began)."""

from __future__ import annotations

from dataclasses import dataclass

from utils.engine.config import TrainConfig, _f
from utils.tasks.segment.task import SegmentOptions


@dataclass
class SegmentConfig(TrainConfig):
    mask_ratio: int = _f(SegmentOptions.mask_ratio, "ground-truth mask downsample ratio")
    no_overlap: bool = _f(SegmentOptions.no_overlap, "one binary mask per object instead of an index map per image")
