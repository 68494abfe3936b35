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
from utils.engine.predictor import Predictor, add_predict_arguments  # noqa: E402
from utils.paths import ROOT  # noqa: E402
from utils.tasks.pick import task_classes, task_for_weights  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse classify/predict.py flags (YOLOv5 v7.0 names and defaults)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_predict_arguments(p, task_classes("classify/predict.py"), "yolov5s-cls.pt", str(ROOT / "data/images"),
                          str(ROOT / "runs/predict-cls"), imgsz=224)
    return p.parse_args(argv)


def main(opt: argparse.Namespace) -> Path:
    """Classify every image of --source and return the run folder."""
    return Predictor(opt, task_for_weights("classify/predict.py", opt)).run()


def run(**kwargs) -> Path:
    """Python API: classify.predict.run(weights='best.pt', source='data/images', imgsz=[64])."""
    return main(opt_with(parse_opt, **kwargs))


if __name__ == "__main__":
    run_main(main, parse_opt())
