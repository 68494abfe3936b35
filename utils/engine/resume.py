"""Finding the run to resume and carrying random-number state across an interruption."""

from __future__ import annotations

import glob
import os
from pathlib import Path


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
