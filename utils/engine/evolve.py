"""Hyperparameter evolution (train.py --evolve N): mutate the best parents, train, keep score in evolve.csv."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import yaml

from utils.engine.config import TrainConfig
from utils.engine.task import Task
from utils.log import LOGGER, colorstr
from utils.paths import find_file, increment_path

# key: (mutation gain, lower limit, upper limit); a gain of 0 keeps the value fixed
META = {
    "lr0": (1, 1e-5, 1e-1), "lrf": (1, 0.01, 1.0), "momentum": (0.3, 0.6, 0.98), "weight_decay": (1, 0.0, 0.001),
    "warmup_epochs": (1, 0.0, 5.0), "warmup_momentum": (1, 0.0, 0.95), "warmup_bias_lr": (1, 0.0, 0.2),
    "box": (1, 0.02, 0.2), "cls": (1, 0.2, 4.0), "cls_pw": (1, 0.5, 2.0), "obj": (1, 0.2, 4.0),
    "obj_pw": (1, 0.5, 2.0), "iou_t": (0, 0.1, 0.7), "anchor_t": (1, 2.0, 8.0), "anchors": (2, 2.0, 10.0),
    "fl_gamma": (0, 0.0, 2.0), "hsv_h": (1, 0.0, 0.1), "hsv_s": (1, 0.0, 0.9), "hsv_v": (1, 0.0, 0.9),
    "degrees": (1, 0.0, 45.0), "translate": (1, 0.0, 0.9), "scale": (1, 0.0, 0.9), "shear": (1, 0.0, 10.0),
    "perspective": (0, 0.0, 0.001), "flipud": (1, 0.0, 1.0), "fliplr": (0, 0.0, 1.0), "mosaic": (1, 0.0, 1.0),
    "mixup": (1, 0.0, 1.0), "copy_paste": (1, 0.0, 1.0),
}


def mutate(parent: dict, rng: np.random.Generator, mp: float = 0.8, sigma: float = 0.2) -> dict:
    """A child of `parent`: each mutable key scaled by a clipped gaussian factor, then clamped to its limits."""
    keys = [k for k in parent if k in META and META[k][0] > 0]
    g = np.array([META[k][0] for k in keys])
    v = np.ones(len(keys))
    while np.all(v == 1):  # insist on at least one change
        r = rng.random(len(keys)) < mp
        v = (g * r * rng.standard_normal(len(keys)) * rng.random() * sigma + 1).clip(0.3, 3.0)
    child = dict(parent)
    for k, f in zip(keys, v):
        lo, hi = META[k][1], META[k][2]
        child[k] = round(float(min(max(parent[k] * f, lo), hi)), 5)
    return child


def select_parent(csv: Path, keys: list[str], rng: np.random.Generator, top: int = 5) -> dict | None:
    """Fitness-weighted choice among the best `top` rows of evolve.csv (None while it is empty)."""
    if not csv.exists():
        return None
    rows = np.loadtxt(csv, ndmin=2, delimiter=",", skiprows=1)
    if not len(rows):
        return None
    fitness = rows[:, 0]
    order = np.argsort(-fitness)[:top]
    w = fitness[order] - fitness[order].min() + 1e-6
    pick = rows[rng.choice(order, p=w / w.sum())]
    return dict(zip(keys, pick[1:].tolist()))


def evolve(cfg: TrainConfig, task: Task) -> dict:
    """Run `cfg.evolve` generations of training with mutated hyperparameters; return the best hyperparameters."""
    from utils.engine.trainer import Trainer, hyp_path

    base = yaml.safe_load(find_file(hyp_path(cfg.hyp, task.check_data(cfg.data))).read_text())
    base.setdefault("anchors", 3)
    keys = list(base)
    project = Path(cfg.project).parent / "evolve" if Path(cfg.project).name == "train" else Path(cfg.project)
    evolve_dir = increment_path(project / cfg.name, exist_ok=cfg.exist_ok, mkdir=True)
    csv = evolve_dir / "evolve.csv"
    rng = np.random.default_rng(cfg.seed)
    random.seed(cfg.seed)
    best = (-1.0, base)
    for gen in range(cfg.evolve):
        parent = select_parent(csv, keys, rng) or base
        hyp = mutate(parent, rng) if gen or csv.exists() else dict(base)
        run_cfg = dataclasses.replace(cfg, evolve=0, project=str(evolve_dir), name=f"gen{gen}", noplots=True,
                                      noval=True, nosave=True, exist_ok=False)
        figures = Trainer(run_cfg, task, hyp=hyp).fit()
        fit = task.fitness(figures) if figures else 0.0
        if not csv.exists():
            csv.write_text(",".join(["fitness", *keys]) + "\n")
        with open(csv, "a") as f:
            f.write(",".join(f"{x:.6g}" for x in [fit, *[hyp[k] for k in keys]]) + "\n")
        if fit > best[0]:
            best = (fit, hyp)
            (evolve_dir / "hyp_evolve.yaml").write_text(
                f"# best of {gen + 1} generations, fitness {fit:.5f}\n" + yaml.safe_dump(hyp, sort_keys=False))
        LOGGER.info(f"{colorstr('evolve: ')}generation {gen + 1}/{cfg.evolve} fitness {fit:.5f} (best {best[0]:.5f})")
    try:
        from utils.plots import plot_evolve

        plot_evolve(csv)
    except Exception as e:  # noqa: BLE001 - the csv and yaml are the results; the plot is extra
        LOGGER.warning(f"WARNING ⚠️ evolve plot failed: {e}")
    LOGGER.info(f"Hyperparameter evolution finished: {csv}, best in {evolve_dir / 'hyp_evolve.yaml'}")
    return best[1]
