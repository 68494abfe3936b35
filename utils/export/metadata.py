"""What an exported model carries about itself (task, names, strides, input size, outputs), and how each container
stores it: TorchScript's extra file config.txt (JSON), ONNX metadata_props, an OpenVINO model's side-car YAML.

The keys upstream YOLOv5 v7.0 writes keep their meaning (`stride` = the largest stride as an int, `names`, `shape`),
so its loaders can read our files too; our own keys sit beside them.
"""

from __future__ import annotations

import ast
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml

from utils.export.formats import ExportError
from utils.tasks import registry

FORMAT = "mt-yolov5"
VERSION = 1
TS_EXTRA = "config.txt"  # the TorchScript extra file, as upstream names it
FOLDER_META = "metadata.yaml"  # beside the files of a folder format (ncnn, PaddlePaddle), as upstream names it


def model_task(model: torch.nn.Module) -> str:
    """The task a model solves: its own `task` attribute if it has one, else from its class name."""
    from utils.checkpoint import task_of

    return str(getattr(model, "task", None) or task_of(model))


def _task_hooks(kind: str, hook: str) -> dict[str, Any]:
    """A registered task's metadata hook for models of `kind` ({} when no task serves that kind)."""
    try:
        return dict(getattr(registry.for_kind(kind), hook))
    except registry.TaskLookupError:
        return {}


def build_metadata(model: torch.nn.Module, names: dict[int, str], imgsz: list[int], batch: int, dynamic: bool,
                   half: bool, outputs: list[str], eval_layout: list[int | None],
                   tensor_output: bool) -> dict[str, Any]:
    """The metadata dict for one export of `model` at input (batch, 3, *imgsz)."""
    strides = [float(s) for s in torch.as_tensor(getattr(model, "stride", [32.0])).flatten().tolist()]
    task = model_task(model)
    meta = {"format": FORMAT, "version": VERSION, "task": task, "stride": int(max(strides)), "strides": strides,
            "names": {int(k): str(v) for k, v in names.items()}, "imgsz": [int(x) for x in imgsz],
            "batch": int(batch), "shape": [int(batch), 3, *map(int, imgsz)], "dynamic": bool(dynamic),
            "half": bool(half), "outputs": list(outputs), "eval_layout": list(eval_layout),
            "tensor_output": bool(tensor_output), "date": datetime.now().isoformat(timespec="seconds")}
    head = model.model[-1] if hasattr(model, "model") and len(getattr(model, "model", [])) else None
    if getattr(head, "nm", None):
        meta["nm"] = int(head.nm)  # mask coefficients per detection, after the class scores
    meta.update(_task_hooks(task, "export_meta"))  # what the task's models carry (a classifier: its preprocessing)
    if getattr(model, "seg_names", None):  # detection + semantic: the class-map classes travel too
        meta["seg_names"] = {int(k): str(v) for k, v in model.seg_names.items()}
    return meta


def normalize(meta: dict[str, Any]) -> dict[str, Any]:
    """Metadata read back from any container: int class keys, strides as a list, defaults for upstream files."""
    meta = dict(meta)
    names = meta.get("names") or {}
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    meta["names"] = {int(k): str(v) for k, v in names.items()}
    if meta.get("seg_names"):
        meta["seg_names"] = {int(k): str(v) for k, v in meta["seg_names"].items()}
    if "strides" not in meta:
        meta["strides"] = [float(meta.get("stride", 32))]
    shape = meta.get("shape") or [1, 3, 640, 640]
    meta.setdefault("imgsz", list(shape[2:]))
    meta.setdefault("batch", shape[0])
    meta.setdefault("dynamic", False)
    meta.setdefault("task", "detect")
    # files without our keys (upstream's): the task says where the raw maps an export leaves out sit, and whether
    # the model gives one tensor
    upstream = {"eval_tail": 0, "tensor_output": False, **_task_hooks(meta["task"], "upstream_meta")}
    if "eval_layout" not in meta:
        meta.setdefault("eval_tail", upstream["eval_tail"])
    meta.setdefault("tensor_output", upstream["tensor_output"])
    meta.setdefault("half", False)
    return meta


def to_json(meta: dict[str, Any]) -> str:
    """TorchScript's config.txt (JSON keys are strings; normalize() turns class keys back into ints)."""
    return json.dumps(meta)


def from_json(text: str | bytes) -> dict[str, Any]:
    """Inverse of to_json."""
    return normalize(json.loads(text or "{}"))


def to_props(meta: dict[str, Any]) -> dict[str, str]:
    """ONNX metadata_props: JSON values, except `names` written as a Python dict literal, as upstream does."""
    return {k: str(v) if k in ("names", "seg_names") else json.dumps(v) for k, v in meta.items()}


def from_props(props: dict[str, str]) -> dict[str, Any]:
    """Inverse of to_props (also reads upstream's props: stride as an int, names as a dict literal)."""
    meta = {}
    for k, v in props.items():
        try:
            meta[k] = json.loads(v)
        except ValueError:
            try:
                meta[k] = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                meta[k] = v
    return normalize(meta)


def write_folder_meta(folder: Path, meta: dict[str, Any]) -> None:
    """metadata.yaml of a folder format's model; its batch is the one the folder's files take."""
    (folder / FOLDER_META).write_text(yaml.safe_dump(meta, sort_keys=False))


def read_folder_meta(folder: Path) -> dict[str, Any]:
    """The metadata.yaml of a folder format's model; one clear error when it is missing."""
    if not (folder / FOLDER_META).is_file():
        raise ExportError(f"{folder}: its {FOLDER_META} is missing (export it with export.py)")
    return normalize(yaml.safe_load((folder / FOLDER_META).read_text()))
