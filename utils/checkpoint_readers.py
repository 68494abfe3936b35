"""Read any supported weights file into our checkpoint dict: the file's kind is decided once, from the class names
its pickle references (no code from the file runs), and one reader per kind converts it.

Kinds: 'ours' (format 'mt-yolov5', plain data, torch.load(weights_only=True)); 'upstream' (ultralytics YOLOv5
v5.0 to v7.0: pickled models.yolo.Model/DetectionModel/SegmentationModel/ClassificationModel); 'multiyolo'
(Multi YOLO V5: a v5.0 Model with a SegMask* semantic head before Detect).
Between releases, upstream changed attributes but not parameter names: v5.0's Detect kept an `anchor_grid` buffer
(dropped here: it is derived from anchors and strides), v5.0 names are a list, v6+ a dict; Focus and SPP layers
of v5.0 are registered blocks.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from models.multiyolo import from_multiyolo_yaml, multiyolo_state_dict
from utils.errors import UserError
from utils.upstream_pickle import (
    UpstreamPickleError,
    load_upstream,
    pickle_globals,
)

FORMAT = "mt-yolov5"
VERSION = 1
_UPSTREAM_TASKS = {"DetectionModel": "detect", "Model": "detect", "SegmentationModel": "segment",
                   "ClassificationModel": "classify"}


class CheckpointError(UserError, ValueError):
    """A weights file that is neither one of ours nor an upstream YOLOv5 checkpoint, or is inconsistent."""


def half_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached CPU copy of a state dict with floating tensors in FP16 (what upstream's .half() checkpoints hold)."""
    return {k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu().clone() for k, v in sd.items()}


def file_kind(path: Path) -> tuple[str, set[str]]:
    """('ours' | 'upstream' | 'multiyolo', the pickle's global names) of a torch zip file; CheckpointError otherwise."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a YOLOv5 checkpoint (not a torch zip file)")
    try:
        names = pickle_globals(path)
    except (zipfile.BadZipFile, UpstreamPickleError, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a YOLOv5 checkpoint ({str(e).splitlines()[0][:200]})") from None
    if any(n.startswith("models.yolo SegMask") for n in names):
        return "multiyolo", names
    if any(n.startswith(("models.", "utils.")) for n in names):
        return "upstream", names
    return "ours", names


def task_of_file(path: Path) -> str:
    """The task a weights file serves, read without loading its tensors where the pickle's class names tell it."""
    kind, names = file_kind(path)
    if kind == "multiyolo":
        return "semantic"
    if kind == "upstream":  # the most specific model class the pickle names (v5.0/v6.x's Model: detection)
        for cls in ("SegmentationModel", "ClassificationModel"):
            if f"models.yolo {cls}" in names:
                return _UPSTREAM_TASKS[cls]
        return "detect"
    return str(read_ours(path, mmap=True).get("task", "detect"))


def read_ours(path: Path, mmap: bool = False) -> dict[str, Any]:
    """One of our checkpoints, checked for format, version and required keys (mmap: tensors left on disk)."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch.load on arbitrary bytes can fail in many ways (KeyError, EOFError, ...)
        raise CheckpointError(f"{path}: not a YOLOv5 checkpoint ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an MT-YOLOv5 or upstream YOLOv5 checkpoint (no 'format': '{FORMAT}')")
    if int(ck.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ck['version']} is newer than supported ({VERSION})")
    missing = [k for k in ("model_yaml", "model", "nc") if k not in ck]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ck


def _drop_derived(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # v5.0's Detect registered anchor_grid (anchors x stride, in pixels) as a buffer; ours derives it when needed
    return {k: v for k, v in sd.items() if not k.endswith(".anchor_grid")}


def read_upstream(path: Path, multiyolo: bool = False) -> dict[str, Any]:
    """An upstream YOLOv5 v5.0-v7.0 (or, multiyolo=True, Multi YOLO V5) checkpoint converted to our dict."""
    try:
        up = load_upstream(path)
    except UpstreamPickleError as e:
        raise CheckpointError(str(e)) from None
    src = up["ema"] if up.get("ema") is not None else up["model"]
    yaml, task = src["yaml"], src["task"]
    convert: Callable[[dict], dict] = _drop_derived
    if multiyolo:
        if not isinstance(yaml, dict):
            raise CheckpointError(f"{path}: Multi YOLO V5 checkpoint without its model yaml")
        n_layers = len(yaml["backbone"]) + len(yaml["head"])
        yaml, task = from_multiyolo_yaml(yaml), "semantic"
        convert = lambda sd: multiyolo_state_dict(sd, n_layers)  # noqa: E731
    bf = up.get("best_fitness")
    bf = bf[0] if isinstance(bf, (list, tuple)) and bf else bf
    opt = up.get("opt") if isinstance(up.get("opt"), dict) else {}
    if src.get("hyp") and "hyp" not in opt:
        opt = {**opt, "hyp": src["hyp"]}
    ck = {
        "format": FORMAT, "version": VERSION, "task": task, "model_yaml": yaml,
        # state dicts map 1:1 (upstream --weights fine-tuning reads the raw 'model'); inference prefers 'ema'
        "model": half_state_dict(convert((up["model"] or src)["state_dict"])),
        "names": src["names"], "stride": src["stride"],
        "nc": src["nc"] if src["nc"] is not None else len(src["names"]),
        "ema": half_state_dict(convert(up["ema"]["state_dict"])) if up.get("ema") is not None else None,
        "updates": up.get("updates"),
        "optimizer": up.get("optimizer"),
        "epoch": int(up["epoch"]) if up.get("epoch") is not None else -1,
        "best_fitness": None if bf is None else float(bf),
        "opt": opt, "date": str(up.get("date") or ""), "source": "multiyolo" if multiyolo else "upstream",
    }
    if multiyolo:
        ck["nc_seg"] = int(yaml["nc_seg"])
    if isinstance(up.get("git"), dict):
        ck["git"] = up["git"]
    return ck


READERS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "ours": read_ours,
    "upstream": read_upstream,
    "multiyolo": lambda p: read_upstream(p, multiyolo=True),
}


def read_weights(path: str | Path) -> dict[str, Any]:
    """Our checkpoint dict from any supported weights file (kind decided once, then its reader)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    kind, _ = file_kind(path)
    return READERS[kind](path)


