"""Train a YOLOv5 classifier on an ImageFolder dataset (root/{train,val}/{class}/*.jpg).

    python classify/train.py                                   # built-in synthetic shapes-cls set, offline, on CPU
    python classify/train.py --model yolov5s-cls.pt --data path/to/imagenette160 --epochs 10 --img 224
    python classify/train.py --model yolov5n.yaml --data ../datasets/cls --pretrained False --dropout 0.2
    torchrun --nproc_per_node 2 classify/train.py --data my_folder --batch-size 64 --device 0,1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.engine.cli import opt_with, run_main, train  # noqa: E402
from utils.engine.config import add_arguments, from_namespace  # noqa: E402
from utils.paths import ROOT  # noqa: E402
from utils.tasks.classify.config import ClassifyConfig, resolve  # noqa: E402
from utils.tasks.pick import task_for_training  # noqa: E402

# Upstream trains yolov5s-cls.pt on imagenette160 (a download); the no-argument run here must work offline on a 2-core
# CPU, so it trains a yolov5n backbone from scratch for 20 epochs on the generated shapes-cls set at 64 px (10 epochs
# reached only 63% top-1 there). Upstream's own defaults otherwise: Adam, lr0 0.001, decay 5e-5, label smoothing 0.1,
# linear LR to 0.01, runs/train-cls.
DEFAULTS = {"model": "yolov5n.yaml", "data": "shapes-cls", "imgsz": 64, "epochs": 20, "batch_size": 32,
            "optimizer": "Adam", "label_smoothing": 0.1, "project": str(ROOT / "runs/train-cls")}


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse classify/train.py flags (YOLOv5 v7.0 names)."""
    return add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), ClassifyConfig,
                         **DEFAULTS).parse_args(argv)


def main(opt: argparse.Namespace) -> dict:
    """Train with the parsed flags; returns the final validation figures (top-1, top-5)."""
    cfg, hyp = resolve(from_namespace(opt, ClassifyConfig))
    if cfg.evolve:
        raise SystemExit("classify/train.py: --evolve is not supported for classification (as upstream)")
    cfg, task = task_for_training("classify/train.py", cfg)
    return train(cfg, task, hyp=hyp)


def run(**kwargs) -> dict:
    """Python API: classify.train.run(data='path/to/folder', epochs=3, imgsz=64)."""
    return main(opt_with(parse_opt, **kwargs))


if __name__ == "__main__":
    run_main(main, parse_opt())
