"""Validate a trained YOLOv5 detector (or detection + semantic model) on a dataset split.

    python val.py --weights runs/train/exp/weights/best.pt --data data/shapes.yaml --img 320
    python val.py --weights yolov5s.pt --data coco128.yaml --img 640 --save-json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utils.engine.cli import opt_with, run_main  # noqa: E402
from utils.engine.validate import add_val_arguments, validate  # noqa: E402
from utils.paths import ROOT  # noqa: E402
from utils.tasks.pick import task_classes, task_for_weights  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse val.py flags (YOLOv5 v7.0 names and defaults)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_val_arguments(p, task_classes("val.py"), str(ROOT / "data/shapes.yaml"), "yolov5s.pt", str(ROOT / "runs/val"))
    return p.parse_args(argv)


def main(opt: argparse.Namespace):
    """Validate and return the EvalResult (a detection + semantic model also scores its class maps)."""
    return validate(opt, task_for_weights("val.py", opt))


def run(**kwargs):
    """Python API: val.run(weights='best.pt', data='data/shapes.yaml', imgsz=320)."""
    return main(opt_with(parse_opt, **kwargs))


if __name__ == "__main__":
    run_main(main, parse_opt())
