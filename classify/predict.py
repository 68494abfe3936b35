"""Classify images, videos, folders, globs, lists and streams with a YOLOv5 classifier; top-5 classes per image.

    python classify/predict.py --weights runs/train-cls/exp/weights/best.pt --source data/images --img 64
    python classify/predict.py --weights yolov5s-cls.pt --source img.jpg --save-txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.engine.cli import opt_with, run_main  # noqa: E402
from utils.paths import ROOT  # noqa: E402
from utils.tasks.classify.predictor import ClassifyPredictor  # noqa: E402

# Switches the shared Predictor reads that classification has no flag for.
FIXED = {"conf_thres": 0.25, "iou_thres": 0.45, "max_det": 1000, "classes": None, "agnostic_nms": False,
         "save_conf": False, "save_crop": False, "line_thickness": 2, "hide_labels": False, "hide_conf": False}


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse classify/predict.py flags (YOLOv5 v7.0 names and defaults)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", nargs="+", type=str, default=["yolov5s-cls.pt"], help="model path(s)")
    p.add_argument("--source", type=str, default=str(ROOT / "data/images"), help="file/dir/URL/glob/screen/0(webcam)")
    p.add_argument("--data", type=str, default="", help="(optional) dataset folder for class names")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[224], help="inference size h,w")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--view-img", action="store_true", help="show results")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    p.add_argument("--augment", action="store_true", help="accepted for compatibility (no TTA for classifiers)")
    p.add_argument("--visualize", action="store_true", help="visualize features")
    p.add_argument("--update", action="store_true", help="accepted for compatibility (nothing to update)")
    p.add_argument("--project", default=str(ROOT / "runs/predict-cls"), help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference (CUDA only)")
    p.add_argument("--dnn", action="store_true", help="accepted for compatibility (OpenCV DNN is not used)")
    p.add_argument("--vid-stride", type=int, default=1, help="video frame-rate stride")
    p.set_defaults(**FIXED)
    return p.parse_args(argv)


def main(opt: argparse.Namespace) -> Path:
    """Classify every image of --source and return the run folder."""
    return ClassifyPredictor(opt).run()


def run(**kwargs) -> Path:
    """Python API: classify.predict.run(weights='best.pt', source='data/images', imgsz=[64])."""
    return main(opt_with(parse_opt, **kwargs))


if __name__ == "__main__":
    run_main(main, parse_opt())
