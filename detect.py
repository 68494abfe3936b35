"""Run YOLOv5 detection (and detection + semantic models) on images, videos, folders, globs, lists and streams.

    python detect.py --weights runs/train/exp/weights/best.pt --source data/images
    python detect.py --weights yolov5s.pt --source video.mp4 --vid-stride 2 --save-txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utils.engine.cli import opt_with, run_main  # noqa: E402
from utils.engine.predictor import Predictor, add_predict_arguments  # noqa: E402
from utils.paths import ROOT  # noqa: E402
from utils.tasks.pick import task_classes, task_for_weights  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse detect.py flags (YOLOv5 v7.0 names and defaults)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_predict_arguments(p, task_classes("detect.py"), "yolov5s.pt", str(ROOT / "data/images"),
                          str(ROOT / "runs/detect"))
    return p.parse_args(argv)


def main(opt: argparse.Namespace) -> Path:
    """Predict over --source and return the run folder."""
    return Predictor(opt, task_for_weights("detect.py", opt)).run()


def run(**kwargs) -> Path:
    """Python API: detect.run(weights='best.pt', source='data/images')."""
    return main(opt_with(parse_opt, **kwargs))


if __name__ == "__main__":
    run_main(main, parse_opt())
