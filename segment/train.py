"""Train a YOLOv5 instance-segmentation model.

    python segment/train.py                                   # built-in synthetic shapes polygons, offline, on CPU
    python segment/train.py --data coco128-seg.yaml --cfg yolov5s-seg.yaml --weights '' --img 640
    python segment/train.py --weights yolov5s-seg.pt --data my-seg.yaml --epochs 100 --no-overlap
    torchrun --nproc_per_node 2 segment/train.py --data my-seg.yaml --batch-size 64 --device 0,1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.engine.cli import add_one_yolov5_flags, note_one_yolov5_flags, opt_with, run_main, train  # noqa: E402
from utils.engine.config import add_arguments, from_namespace  # noqa: E402
from utils.paths import ROOT  # noqa: E402
from utils.tasks.pick import task_for_training  # noqa: E402
from utils.tasks.segment.config import SegmentConfig  # noqa: E402

# Offline defaults for a 2-core machine, as train.py's (upstream: yolov5s-seg.pt on coco128-seg at 640, 100 epochs);
# every flag keeps its upstream name and meaning.
DEFAULTS = {"cfg": "yolov5n-seg.yaml", "data": str(ROOT / "data/shapes-seg.yaml"), "imgsz": 256, "epochs": 40,
            "batch_size": 16, "project": str(ROOT / "runs/train-seg")}


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse segment/train.py flags (YOLOv5 v7.0 names, --mask-ratio and --no-overlap included)."""
    p = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), SegmentConfig, **DEFAULTS)
    return add_one_yolov5_flags(p).parse_args(argv)


def main(opt: argparse.Namespace) -> dict:
    """Train (or evolve hyperparameters) with the parsed flags; returns the final validation figures."""
    note_one_yolov5_flags(opt)
    return train(*task_for_training("segment/train.py", from_namespace(opt, SegmentConfig)))


def run(**kwargs) -> dict:
    """Python API: segment.train.run(data='data/shapes-seg.yaml', epochs=3, imgsz=320)."""
    return main(opt_with(parse_opt, **kwargs))


if __name__ == "__main__":
    run_main(main, parse_opt())
