"""Finding the run to resume and carrying random-number state across an interruption."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

from utils.checkpoint import load_checkpoint


def find_resume_checkpoint(resume: str, project: str) -> Path:
    """`--resume` alone picks the newest last.pt under the project folder; `--resume path` uses that file."""
    if resume not in ("True", "true", True):
        p = Path(resume)
        if not p.is_file():
            raise FileNotFoundError(f"--resume {resume}: file not found")
        return p
    candidates = glob.glob(f"{project}/**/last*.pt", recursive=True)
    if not candidates:
        raise FileNotFoundError(f"--resume: no last.pt found under {project}; pass the checkpoint path")
    return Path(max(candidates, key=os.path.getmtime))


def resume_options(cfg: Any, ckpt: dict, last: str | Path) -> Any:
    """The config a resumed run continues with: the one it was trained with, except where to run (device, workers,
    time limit), which may change; a task's config subclass keeps its own fields."""
    opt = {**ckpt.get("opt", {}), "resume": str(last), "weights": str(last)}
    for k in ("device", "workers", "max_train_seconds"):
        opt[k] = getattr(cfg, k)
    cls = type(cfg)
    return cls(**{k: v for k, v in opt.items() if k in cls.__dataclass_fields__})


def resumed_config(cfg: Any) -> Any:
    """`cfg` itself, or with --resume the resumed run's own config (what the train scripts build their task from)."""
    if not cfg.resume:
        return cfg
    last = find_resume_checkpoint(cfg.resume, cfg.project)
    return resume_options(cfg, load_checkpoint(last), last)
