"""The fastest CPU runtime for a .pt: PyTorch itself, or its ONNX Runtime or OpenVINO export when that runs faster.

On a CPU the installed runtimes can beat eager PyTorch by a wide margin for the same fp32 arithmetic (yolov5n at 256:
ONNX Runtime 7 ms against 20 ms; yolov5s at 640: 110 against 154 ms, 2-core AMD EPYC), and which one wins depends on
the machine and the model. So, as the trainer measures its CPU recipe, the predictor measures its runtime: it exports
the weights once with --dynamic (any image size, so detect.py's rectangular letterboxing is kept) into a folder
beside them, each export checked against PyTorch as export.py checks it, times PyTorch and each export on an image of
the prediction size, runs the fastest and says so in one line. Exports and the choice are kept in
`<weights stem>_cpu_runtimes/` and redone when the weights change. `MTYOLO_CPU_RUNTIME=pytorch` (or onnx, openvino)
forces one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from utils.device import cpu_name
from utils.export.backend import input_memory_format, load_exported
from utils.export.exporter import export_model
from utils.log import LOGGER, quiet
from utils.paths import user_cache_dir

RUNTIME_ENV = "MTYOLO_CPU_RUNTIME"
RUNTIMES = ("pytorch", "onnx", "openvino")


def available_runtimes() -> list[str]:
    """PyTorch, and the export runtimes whose packages are installed."""
    out = ["pytorch"]
    for name, module in (("onnx", "onnxruntime"), ("openvino", "openvino")):
        try:
            __import__(module)
            out.append(name)
        except ImportError:
            pass
    return out


def weights_fingerprint(weights: Path) -> str:
    """Changes whenever the weights file does (size and modification time)."""
    st = weights.stat()
    return hashlib.sha1(f"{weights.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]



def runtime_folder(weights: Path, fingerprint: str) -> Path:
    """Beside the weights (`<stem>_cpu_runtimes/`), or in the user cache when their folder is read-only."""
    if os.access(weights.parent, os.W_OK):
        return weights.parent / f"{weights.stem}_cpu_runtimes"
    return user_cache_dir() / "cpu_runtimes" / f"{weights.stem}-{fingerprint}"


def time_models(models: dict[str, nn.Module], imgsz: list[int], rounds: int = 3) -> dict[str, float]:
    """Seconds per image of each model: the best of `rounds` interleaved calls after a warm-up call each."""
    x = torch.rand(1, 3, *imgsz)
    inputs = {name: x.contiguous(memory_format=input_memory_format(m)) for name, m in models.items()}
    best = dict.fromkeys(models, float("inf"))
    with torch.inference_mode():
        for name, m in models.items():
            m(inputs[name])
        for _ in range(rounds):
            for name, m in models.items():
                time.sleep(0.05)  # a runtime's worker threads may still be busy from the last run: let them stop first
                t = time.perf_counter()
                m(inputs[name])
                best[name] = min(best[name], time.perf_counter() - t)
    return best


def _export(model: nn.Module, weights: Path, folder: Path, runtime: str, imgsz: list[int]) -> Path:
    """The checked --dynamic export of `model` for `runtime` in `folder` (made once, then reused)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (f"{weights.stem}.onnx" if runtime == "onnx" else f"{weights.stem}_openvino_model")
    if not target.exists():
        with quiet():
            export_model(model, folder / weights.name, include=[runtime], imgsz=imgsz, dynamic=True,
                         names=dict(model.names))
    return target


def fastest_cpu_model(model: nn.Module, weights: Path, imgsz: list[int]) -> nn.Module:
    """`model` (a .pt loaded for CPU prediction), or the export of it that runs fastest on this CPU."""
    forced = os.environ.get(RUNTIME_ENV, "auto").strip() or "auto"
    if forced not in ("auto", *RUNTIMES):
        raise ValueError(f"{RUNTIME_ENV}={forced!r}: use auto, {', '.join(RUNTIMES)}")
    if forced == "pytorch":
        return model
    fingerprint = weights_fingerprint(weights)
    folder = runtime_folder(weights, fingerprint)
    choice_file = folder / "choice.json"
    key = f"{cpu_name()}|torch {torch.__version__}|{torch.get_num_threads()} threads|{imgsz[0]}x{imgsz[1]}"
    try:
        saved = json.loads(choice_file.read_text())
    except (OSError, ValueError):
        saved = {}
    if saved.get("weights") != fingerprint:  # new weights (or none yet): earlier exports are of another model
        shutil.rmtree(folder, ignore_errors=True)
        saved = {"weights": fingerprint, "choices": {}}
    choices = saved["choices"]
    loaded: dict[str, nn.Module] = {}
    try:
        if forced != "auto":
            runtime, summary = forced, f"set by {RUNTIME_ENV}"
        elif key in choices:
            runtime, summary = choices[key]["runtime"], choices[key]["summary"] + ", measured earlier"
        else:
            loaded = {"pytorch": model}
            for rt in available_runtimes()[1:]:
                loaded[rt] = load_exported(_export(model, weights, folder, rt, imgsz))
            times = time_models(loaded, imgsz)
            runtime = min(times, key=times.get)
            summary = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in times.items())
            choices[key] = {"runtime": runtime, "summary": summary}
            choice_file.write_text(json.dumps(saved, indent=1))
        if runtime == "pytorch":
            LOGGER.info(f"CPU runtime: PyTorch, the fastest here ({summary})")
            return model
        exported = loaded[runtime] if runtime in loaded else load_exported(_export(model, weights, folder, runtime,
                                                                                  imgsz))
    except Exception as e:  # noqa: BLE001 - any export or runtime failure: PyTorch still predicts correctly
        LOGGER.warning(f"WARNING ⚠️ CPU runtime: staying on PyTorch ({type(e).__name__}: {str(e)[:200]})")
        return model
    LOGGER.info(f"CPU runtime: {runtime} ({summary} per {imgsz[0]}x{imgsz[1]} image on {cpu_name()}; "
                f"export in {folder})")
    return exported
