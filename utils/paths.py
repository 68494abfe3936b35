"""Project paths, run-folder numbering and file lookup."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository root
CACHE_ENV = "MTYOLO_CACHE_DIR"


def user_cache_dir() -> Path:
    """Where machine-specific measurements and exports are kept: $MTYOLO_CACHE_DIR, else ~/.cache/mt-yolov5."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mt-yolov5")
DATASETS_DIR = Path(os.getenv("YOLOv5_DATASETS_DIR", ROOT / "datasets"))
# Where datasets fetched by name land: upstream's ../datasets beside the repository (the generated sets stay in ours)
DOWNLOADS_DIR = Path(os.getenv("YOLOv5_DATASETS_DIR", ROOT.parent / "datasets"))


def increment_path(path: str | Path, exist_ok: bool = False, sep: str = "", mkdir: bool = False) -> Path:
    """Return path, or path2, path3, ... so that an existing run is never overwritten (unless exist_ok)."""
    path = Path(path)
    if path.exists() and not exist_ok:
        stem, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
        pattern = re.compile(re.escape(stem.name + sep) + r"(\d+)$")
        taken = [int(m.group(1)) for p in stem.parent.glob(stem.name + sep + "*")
                 if (m := pattern.match(p.with_suffix("").name if suffix else p.name))]
        n = max(taken, default=1) + 1
        path = Path(f"{stem}{sep}{n}{suffix}")
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path


def find_file(name: str | Path, search: tuple[str, ...] = ("models", "data", "data/hyps")) -> Path:
    """Resolve a user-given file: as given, relative to the repo root, or by name under the usual folders."""
    p = Path(name)
    if p.is_file():
        return p
    for base in (ROOT, *(ROOT / s for s in search)):
        if (base / p).is_file():
            return base / p
    hits = glob.glob(str(ROOT / "**" / p.name), recursive=True)
    hits = [h for h in hits if "/runs/" not in h and "/datasets/" not in h]
    if hits:
        return Path(hits[0])
    raise FileNotFoundError(f"{name}: file not found (looked in the current folder, {ROOT} and its "
                            f"{', '.join(search)} folders)")
