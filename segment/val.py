"""Validate a trained YOLOv5 instance-segmentation model: box and mask AP on a dataset split.

    python segment/val.py --weights runs/train-seg/exp/weights/best.pt --data data/shapes-seg.yaml --img 320
    python segment/val.py --weights yolov5s-seg.pt --data coco128-seg.yaml --img 640
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
    """Parse segment/val.py flags (YOLOv5 v7.0 names and defaults, plus --retina-masks)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_val_arguments(p, task_classes("segment/val.py"),
                      str(ROOT / "data/shapes-seg.yaml"), "yolov5s-seg.pt", str(ROOT / "runs/val-seg"))
    return p.parse_args(argv)


def main(opt: argparse.Namespace):
    """Validate and return the EvalResult."""
    # Standalone validation builds one full-resolution binary mask per object, as upstream's segment/val.py does.
    # --save-json: masks at input resolution, as upstream's (RLE masks from 1/4 resolution would be blocky)
    return validate(opt, task_for_weights("segment/val.py", opt, no_overlap=True, mask_ratio=1,
                                          retina_masks=opt.retina_masks or opt.save_json))


def run(**kwargs):
    """Python API: segment.val.run(weights='best.pt', data='data/shapes-seg.yaml', imgsz=320)."""
    return main(opt_with(parse_opt, **kwargs))


if __name__ == "__main__":
    run_main(main, parse_opt())
