"""Validate a YOLOv5 classifier on an ImageFolder split (root/test if present, else root/val).

    python classify/val.py --weights runs/train-cls/exp/weights/best.pt --data datasets/shapes-cls --img 64
    python classify/val.py --weights yolov5s-cls.pt --data ../datasets/imagenet --img 224
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.engine.cli import opt_with, run_main  # noqa: E402
from utils.engine.validate import add_val_arguments, validate  # noqa: E402
from utils.paths import ROOT  # noqa: E402
from utils.tasks.pick import task_classes, task_for_weights  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse classify/val.py flags (YOLOv5 v7.0 names and defaults)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_val_arguments(p, task_classes("classify/val.py"), "shapes-cls", "yolov5s-cls.pt", str(ROOT / "runs/val-cls"),
                      batch_size=128, imgsz=224)
    return p.parse_args(argv)


def main(opt: argparse.Namespace):
    """Validate and return the EvalResult (figures: top-1, top-5)."""
    return validate(opt, task_for_weights("classify/val.py", opt))


def run(**kwargs):
    """Python API: classify.val.run(weights='best.pt', data='path/to/folder', imgsz=64)."""
    return main(opt_with(parse_opt, **kwargs))


if __name__ == "__main__":
    run_main(main, parse_opt())
