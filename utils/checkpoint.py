"""Our checkpoint format (loadable with torch.load(weights_only=True)), upstream conversion, and model loading.

A checkpoint is a dict of tensors and plain Python only:
  format 'mt-yolov5', version 1, task ('detect' | 'segment' | 'classify' | 'semantic'), model_yaml (dict),
  model (state_dict, FP16), names {int: str}, stride [float], nc int, ema (state_dict FP16 | None),
  updates int | None, optimizer (state dict | None), epoch int (-1 once training finished),
  best_fitness float | None, opt dict (paths as str), date str,
  optional train_state (RNG states as tensors, for --resume) and git dict;
  semantic models (detection + semantic segmentation) add nc_seg int and seg_names {int: str}.
Upstream YOLOv5 v5.0-v7.0 and Multi YOLO V5 files (pickled modules) are converted to this layout on load, with no
code from the file run (utils/checkpoint_readers.py decides a file's kind once and reads it).
"""

from __future__ import annotations

import io
import os
import random
import tempfile
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.checkpoint_readers import (  # noqa: F401  (FORMAT, VERSION, CheckpointError: part of this module's API)
    FORMAT,
    VERSION,
    CheckpointError,
    half_state_dict,
    read_weights,
    task_of_file,
)
from utils.log import LOGGER, quiet
from utils.upstream_pickle import to_plain


def task_of(model: torch.nn.Module) -> str:
    """The model's kind ('detect', 'segment', 'classify', ...), as its class declares it."""
    return getattr(model, "task", "detect")  # a plain module declares none: saved as YOLOv5's default kind


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in weights_only-loadable form (for exact resume)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    np_state = (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)
    return {"python": random.getstate(), "numpy": np_state,
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by rng_state()."""
    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_checkpoint(model: torch.nn.Module, ema: torch.nn.Module | None = None, updates: int | None = None,
                    optimizer: torch.optim.Optimizer | dict | None = None, epoch: int = -1,
                    best_fitness: float | None = None, opt: dict | None = None,
                    train_state: dict | None = None, half: bool = True) -> dict[str, Any]:
    """Build our checkpoint dict from live objects (weights FP16 unless half=False, paths in opt stored as str).

    Training keeps FP32 in last.pt so that --resume continues from exactly the weights it stopped with;
    strip_optimizer turns the final files into FP16.
    """
    cast = half_state_dict if half else (lambda sd: {k: v.detach().cpu().clone() for k, v in sd.items()})
    model = getattr(model, "module", model)  # unwrap DDP
    ck = {
        "format": FORMAT, "version": VERSION, "task": task_of(model),
        "model_yaml": to_plain(getattr(model, "yaml", None)),
        "model": cast(model.state_dict()),
        "names": {int(k): str(v) for k, v in dict(getattr(model, "names", {}) or {}).items()},
        "stride": [float(s) for s in torch.as_tensor(getattr(model, "stride", [])).flatten().tolist()],
        "nc": int(getattr(model, "nc", 0) or 0),
        "ema": cast(ema.state_dict()) if ema is not None else None,
        "updates": updates,
        "optimizer": optimizer.state_dict() if isinstance(optimizer, torch.optim.Optimizer) else optimizer,
        "epoch": int(epoch),
        "best_fitness": None if best_fitness is None else float(np.asarray(best_fitness).reshape(-1)[0]),
        "opt": to_plain(dict(opt or {})),
        "date": datetime.now().isoformat(),
    }
    if getattr(model, "nc_seg", None):
        ck["nc_seg"] = int(model.nc_seg)
        ck["seg_names"] = {int(k): str(v) for k, v in dict(getattr(model, "seg_names", {}) or {}).items()}
    if train_state is not None:
        ck["train_state"] = train_state
    return ck


def save_checkpoint(ckpt: dict, path: str | Path, *copies: str | Path) -> Path:
    """Write ckpt to `path`, and the same bytes to each of `copies` (serialised once), each file atomically."""
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    data = buffer.getbuffer()
    for p in (path, *copies):
        _write_atomic(Path(p), data)
    return Path(path)


def _write_atomic(path: Path, data: memoryview) -> None:
    """A temp file in the same folder, fsync, then os.replace over `path`: a crash leaves the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not possible on every OS/filesystem
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Our checkpoint dict from one of ours, an upstream YOLOv5 v5.0-v7.0 or a Multi YOLO V5 .pt (nothing in the
    file runs); CheckpointError for anything else."""
    return read_weights(path)


def first_weights(weights: str | Path | list | tuple) -> str:
    """The weights a script uses: --weights takes several (upstream's ensembles), we use the first."""
    return str(weights[0] if isinstance(weights, (list, tuple)) else weights)


def local_weights(weights: str | Path | list | tuple) -> str | list[str]:
    """--weights as local paths (each fetched if it is a known name not yet here): one entry gives a path, several a
    list (an ensemble)."""
    from utils.downloads import attempt_download

    paths = [str(attempt_download(w)) for w in (weights if isinstance(weights, (list, tuple)) else [weights])]
    return paths[0] if len(paths) == 1 else paths


def checkpoint_kind(weights: str | Path) -> str | None:
    """The kind of model a local weights file holds ('detect', 'semantic', ...); None when it is not a readable
    checkpoint here (a name still to download, an export): the scripts' loaders then say what is wrong."""
    path = Path(str(weights))
    if path.suffix != ".pt" or not path.is_file():
        return None
    try:
        return task_of_file(path)
    except (CheckpointError, OSError, RuntimeError):
        return None


def build_from_checkpoint(ck: dict[str, Any], source: str | Path = "<checkpoint>", use_ema: bool = True):
    """Rebuild the model described by a checkpoint dict and load its weights (float32, strict)."""
    from models.build import build_model

    yaml = ck.get("model_yaml")
    if not isinstance(yaml, dict):
        raise CheckpointError(f"{source}: checkpoint has no model_yaml to rebuild the model from")
    sd = ck["ema"] if use_ema and ck.get("ema") is not None else ck["model"]
    with quiet():  # users asked for weights, not for the layer table of a model they did not define
        model = build_model(dict(yaml), ch=int(yaml.get("ch", 3)), nc=ck.get("nc"), nc_seg=ck.get("nc_seg"))
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: weights do not match the model its yaml builds ({str(e)[:300]})") from None
    model.float()
    model.names = {int(k): v for k, v in ck.get("names", {}).items()} or {i: f"class{i}" for i in range(model.nc)}
    if hasattr(model, "seg_names"):
        model.seg_names = {int(k): v for k, v in (ck.get("seg_names") or {}).items()} or model.seg_names
    if ck.get("stride"):
        model.stride = torch.tensor(ck["stride"], dtype=torch.float32)
    if ck.get("task") and ck["task"] != task_of(model):
        model.task = str(ck["task"])  # a task of its own on a shared model class: the checkpoint names its kind
    return model


def load_model(weights: str | Path | list | tuple, device: str | torch.device = "cpu", fuse: bool = True,
               inplace: bool = True) -> torch.nn.Module:
    """Load a checkpoint (ours or upstream) as an eval-mode float model on `device`; a list uses its first entry."""
    from utils.downloads import attempt_download

    if isinstance(weights, (list, tuple)):
        if len(weights) > 1:
            warnings.warn(f"ensembles are not supported: using {weights[0]} only", stacklevel=2)
            LOGGER.warning(f"WARNING ⚠️ ensembles are not supported, using {weights[0]} only")
        weights = weights[0]
    path = attempt_download(weights)
    return prepare_inference(build_from_checkpoint(load_checkpoint(path), path), device, fuse, inplace)


def prepare_inference(model: torch.nn.Module, device: str | torch.device = "cpu", fuse: bool = True,
                      inplace: bool = True) -> torch.nn.Module:
    """Make a built model ready to predict: in-place activations, eval, no gradients, fused, channels_last."""
    for m in model.modules():
        # upstream's attempt_load switches activations and heads to in-place for inference
        if type(m).__name__ in ("Hardswish", "LeakyReLU", "ReLU", "ReLU6", "SiLU", "Detect", "Segment"):
            m.inplace = inplace
    model.eval()
    for p in model.parameters():  # inference only: no gradients (the fused summary says '0 gradients', as upstream)
        p.requires_grad_(False)
    if fuse and hasattr(model, "fuse"):
        model = model.fuse()
    # NHWC convolutions: measured 1.55x faster on CPU at 640 (77 vs 120 ms, yolov5s), and the layout GPUs prefer
    model.to(memory_format=torch.channels_last)
    return model.eval().to(device)


def strip_optimizer(f: str | Path = "best.pt", s: str | Path = "") -> Path:
    """Finalise a training checkpoint: model <- ema; optimizer/ema/updates/best_fitness None; epoch -1; FP16."""
    f = Path(f)
    ck = load_checkpoint(f)
    if ck.get("ema") is not None:
        ck["model"] = ck["ema"]
    ck.update(ema=None, optimizer=None, updates=None, best_fitness=None, epoch=-1)
    for k in ("train_state", "scaler"):  # resume-only state has no use in a finished checkpoint
        ck.pop(k, None)
    ck["model"] = half_state_dict(ck["model"])
    out = save_checkpoint(ck, s or f)
    mb = out.stat().st_size / 1e6
    LOGGER.info(f"Optimizer stripped from {f},{f' saved as {s},' if s else ''} {mb:.1f}MB")
    return out


def intersect_state_dict(da: dict, db: dict, exclude: tuple | list = ()) -> dict:
    """Entries of da whose key is in db with the same shape and contains none of the `exclude` substrings."""
    return {k: v for k, v in da.items()
            if k in db and not any(x in k for x in exclude) and v.shape == db[k].shape}
