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
from utils.engine.validate import validate  # noqa: E402
from utils.paths import ROOT  # noqa: E402
from utils.tasks.classify.task import ClassificationTask  # noqa: E402

# The shared validate() also reads detection switches; none of them apply to a classifier.
DETECTION_ONLY = {"conf_thres": 0.001, "iou_thres": 0.6, "max_det": 300, "task": "val", "single_cls": False,
                  "augment": False, "save_txt": False, "save_hybrid": False, "save_conf": False, "save_json": False}


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse classify/val.py flags (YOLOv5 v7.0 names and defaults)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=str, default="shapes-cls", help="dataset folder (or a name under datasets/)")
    p.add_argument("--weights", nargs="+", type=str, default=["yolov5s-cls.pt"], help="model.pt path(s)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=224, help="inference size (pixels)")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers (per RANK in DDP mode)")
    p.add_argument("--verbose", nargs="?", const=True, default=True, help="per-class rows")
    p.add_argument("--project", default=str(ROOT / "runs/val-cls"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference (CUDA only)")
    p.add_argument("--dnn", action="store_true", help="accepted for compatibility (ONNX through OpenCV is not used)")
    p.set_defaults(**DETECTION_ONLY)
    return p.parse_args(argv)


def main(opt: argparse.Namespace):
    """Validate and return the EvalResult (figures: top-1, top-5)."""
    opt.verbose = str(opt.verbose).lower() not in ("false", "0", "no")
    return validate(opt, ClassificationTask())


def run(**kwargs):
    """Python API: classify.val.run(weights='best.pt', data='path/to/folder', imgsz=64)."""
    return main(opt_with(parse_opt, **kwargs))


if __name__ == "__main__":
    run_main(main, parse_opt())
