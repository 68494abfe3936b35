"""Where an epoch of training goes: the per-phase time of each epoch of a real train.py run.

    python benchmarks/epoch_profile.py                       # the main job (train.py's defaults), 2 epochs
    python benchmarks/epoch_profile.py --epochs 3 --cfg yolov5s.yaml --img 640 --batch-size 8

Any train.py flag may follow. The run goes to a temporary folder. Phases: data (waiting for the loader and the batch's
trip to the device), forward, loss, backward, optimizer, ema, plots (training mosaics), validation, logging
(results.csv and loggers), checkpoint (last.pt/best.pt writes) and other (the rest: progress bar, bookkeeping).
On CUDA every phase synchronises, so the figures are honest but the run is a little slower than a plain one.
The first epoch includes one-time costs (worker start-up, first-touch of memory, the label plots); read the last.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from utils.engine.config import TrainConfig, from_namespace  # noqa: E402
from utils.engine.phases import ordered  # noqa: E402
from utils.engine.trainer import Trainer  # noqa: E402
from utils.tasks.pick import task_for_training  # noqa: E402


def table(epochs: list[dict[str, float]]) -> str:
    """Seconds and share per phase, one column per epoch."""
    names = list(dict.fromkeys(n for rec in epochs for n, _ in ordered(rec)))
    names = [n for n in names if n != "other"] + ["other"]
    head = f"{'phase':>11}" + "".join(f"{f'epoch {i}':>18}" for i in range(len(epochs)))
    rows = [head]
    for n in [*names, "total"]:
        cells = []
        for rec in epochs:
            s = dict(ordered(rec)).get(n, rec.get(n, 0.0))
            cells.append(f"{s:8.2f} s {100 * s / max(rec['total'], 1e-9):5.1f}%")
        rows.append(f"{n:>11}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(rows)


def main(argv: list[str]) -> None:
    opt = train.parse_opt(["--epochs", "2", *argv])
    with tempfile.TemporaryDirectory() as tmp:
        opt.project = tmp
        cfg, task = task_for_training("train.py", from_namespace(opt, TrainConfig))
        trainer = Trainer(cfg, task, sync_phases=True)
        trainer.fit()
        epochs = trainer.clock.epochs
    train_s = [sum(s for n, s in ordered(r) if n not in ("validation", "logging", "checkpoint")) for r in epochs]
    print(f"\n{cfg.cfg or cfg.weights} {cfg.imgsz}px batch {cfg.batch_size} on {trainer.device} "
          f"({trainer.recipe.name}), {trainer.batches_per_epoch} batches per epoch\n")
    print(table(epochs))
    last = epochs[-1]
    print(f"\nlast epoch: validation {last.get('validation', 0.0):.2f} s = "
          f"{100 * last.get('validation', 0.0) / max(train_s[-1], 1e-9):.1f}% of the training part "
          f"({train_s[-1]:.2f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
