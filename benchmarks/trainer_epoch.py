"""Time one training epoch of our Trainer, the "ours" side of benchmarks/gpu_side_by_side.sh.

    python benchmarks/trainer_epoch.py --data D.yaml --cfg yolov5s.yaml --img 640 --batch 16 --device 0
    python benchmarks/trainer_epoch.py --seg --data D.yaml --cfg yolov5s-seg.yaml --batch 8 --device 0

The real train.py / segment/train.py set-up (Trainer.setup: recipe, loaders, loss) and the real epoch loop
(Trainer._train_epoch), under the same rules as benchmarks/peer_epoch.py on upstream's side: hyp.scratch-low, no
plots, the warm-up ramp skipped (steady-state accumulation to the nominal batch from the first batch), epoch 0 warms
up, epoch 1 is timed with its peak torch.cuda.max_memory_allocated. Validation and checkpoints are not part of it.
Prints one `RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from segment import train as segment_train  # noqa: E402
from utils.engine.config import TrainConfig, from_namespace  # noqa: E402
from utils.engine.trainer import Trainer  # noqa: E402
from utils.tasks.pick import task_for_training  # noqa: E402
from utils.tasks.segment.config import SegmentConfig  # noqa: E402


def sync(device: torch.device) -> float:
    """Wall time after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.time()


def make_trainer(opt: argparse.Namespace, project: str) -> Trainer:
    """A set-up Trainer for the detect or segment train script with the benchmark's flags."""
    hyp = str(ROOT / "data/hyps/hyp.scratch-low.yaml")  # upstream's default, which the peer side uses too
    argv = ["--data", opt.data, "--cfg", opt.cfg, "--weights", "", "--hyp", hyp,
            "--img", str(opt.img), "--batch-size", str(opt.batch), "--workers", str(opt.workers), "--device",
            opt.device, "--epochs", "2", "--noplots", "--project", project, "--exist-ok"]
    script, parse, config = ("segment/train.py", segment_train.parse_opt, SegmentConfig) if opt.seg else \
        ("train.py", train.parse_opt, TrainConfig)
    cfg, task = task_for_training(script, from_namespace(parse(argv), config))
    trainer = Trainer(cfg, task)
    trainer.setup()
    trainer.warmup_iters, trainer.last_opt_step = -1, -1  # steady state, as the peer side
    return trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--cfg", default="yolov5s.yaml")
    p.add_argument("--img", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--device", default="")
    p.add_argument("--seg", action="store_true", help="segment/train.py's task instead of train.py's")
    p.add_argument("--case", default="", help="a label copied into the RESULT line")
    opt = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(opt, tmp)
        dev = trainer.device
        trainer.clock.start_epoch()
        trainer._train_epoch(0)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        trainer.clock.start_epoch()
        t0 = sync(dev)
        trainer._train_epoch(1)
        epoch_s = sync(dev) - t0
        data_s = trainer.clock.current.get("data", 0.0)
        trainer.loggers.close()
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    print("RESULT " + json.dumps({"side": "ours", "case": opt.case, "epoch_s": epoch_s,
                                  "batches": trainer.batches_per_epoch, "images": len(trainer.dataset),
                                  "batch": opt.batch, "data_s": data_s, "peak_mem": peak,
                                  "recipe": trainer.recipe.name, "accumulate": trainer.accumulate,
                                  "device": str(dev)}), flush=True)


if __name__ == "__main__":
    main()
