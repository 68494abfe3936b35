"""Finding the run to resume and carrying random-number state across an interruption."""

from __future__ import annotations

import glob
import os
import random
from pathlib import Path

import numpy as np
import torch


def find_resume_checkpoint(resume: str, project: str) -> Path:
    """`--resume` alone picks the newest last.pt under the project folder; `--resume path` uses that file."""
    if resume not in ("True", "true", True):
        p = Path(resume)
        if not p.is_file():
            raise SystemExit(f"--resume {resume}: file not found")
        return p
    candidates = glob.glob(f"{project}/**/last*.pt", recursive=True)
    if not candidates:
        raise SystemExit(f"--resume: no last.pt found under {project}; pass the checkpoint path")
    return Path(max(candidates, key=os.path.getmtime))


def rng_state() -> dict:
    """Random states as plain tensors and lists, so the checkpoint still loads with weights_only=True."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Put back the random states saved by rng_state."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    p = state["python"]
    random.setstate((p[-2], tuple(p[:-2]), p[-1]))
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
