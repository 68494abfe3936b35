"""Export orchestration: load weights, put the model in export form, write each requested format, check each file
against PyTorch, and report time, size and the largest difference."""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from pathlib import Path

import torch

from utils.export import metadata
from utils.export.check import RUNTIMES, max_difference, tolerance, unchecked
from utils.export.formats import FORMATS, HALF_WEIGHTS, ExportError, export_formats
from utils.export.prepare import describe_outputs, prepare_model
from utils.log import LOGGER, colorstr
from utils.tasks import registry

# Formats upstream YOLOv5 v7.0 exports that this toolkit does not: named so the error says so rather than "unknown".
UPSTREAM_ONLY = {"engine": "TensorRT", "saved_model": "TF SavedModel", "pb": "TF GraphDef",
                 "edgetpu": "TF Edge TPU", "tfjs": "TF.js"}
WHY_NOT = {"engine": " (it needs an NVIDIA GPU to build and check an engine; none was available)"}


def check_include(include: list[str] | tuple[str, ...] | str) -> list[str]:
    """Lower-cased, de-duplicated --include formats; one clear line for unknown or unavailable ones."""
    include = [include] if isinstance(include, str) else list(include)
    table = {f["argument"]: f for f in export_formats() if f["argument"] != "-"}
    out = []
    for x in (str(i).lower() for i in include):
        if x in UPSTREAM_ONLY:
            why = WHY_NOT.get(x, "")
            raise ExportError(f"--include {x}: {UPSTREAM_ONLY[x]} export is not supported here{why} "
                              f"(supported: {', '.join(table)})")
        if x not in table:
            raise ExportError(f"--include {x}: unknown format (supported: {', '.join(table)})")
        if not table[x]["available"]:
            raise ExportError(f"--include {x}: the {table[x]['package']} package is not installed "
                              f"(pip install {table[x]['package']})")
        if x not in out:
            out.append(x)
    if not out:
        raise ExportError("--include: no format given")
    return out


def check_options(imgsz, batch_size: int, device: torch.device, half: bool, dynamic: bool,
                  optimize: bool, include=(), int8: bool = False, data: str | Path = "") -> list[int]:
    """Reject flag combinations that cannot work, before any model is loaded; returns imgsz as [h, w]."""
    if half and device.type != "cuda" and (not include or set(include) - set(HALF_WEIGHTS)):
        raise ExportError("--half needs a CUDA --device (FP16 export runs on the GPU)"
                          + (f" except for {', '.join(HALF_WEIGHTS)}" if HALF_WEIGHTS else ""))
    if int8 and not data:
        raise ExportError("--int8 needs --data: its images calibrate the quantisation")
    if half and dynamic:
        raise ExportError("--half and --dynamic cannot be combined")
    if optimize and device.type != "cpu":
        raise ExportError("--optimize (mobile TorchScript) needs --device cpu")
    if batch_size < 1:
        raise ExportError(f"--batch-size {batch_size}: must be at least 1")
    imgsz = [int(x) for x in ([imgsz] if isinstance(imgsz, int) else imgsz)]
    imgsz = imgsz * 2 if len(imgsz) == 1 else imgsz
    if len(imgsz) != 2:
        raise ExportError(f"--imgsz {imgsz}: give one size or height and width")
    return imgsz


def _size_mb(path: Path, fmt: str) -> float:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else \
        [p for p in path.parent.rglob("*") if p.is_file()] if fmt == "openvino" else [path]
    return sum(p.stat().st_size for p in files) / 1e6


def _remove(path: Path, fmt: str) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif fmt == "openvino":
        shutil.rmtree(path.parent, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def export_model(model: torch.nn.Module, file: str | Path, include=("torchscript",), imgsz=(640, 640),
                 batch_size: int = 1, device: str | torch.device = "cpu", half: bool = False, dynamic: bool = False,
                 simplify: bool = False, opset: int = 12, optimize: bool = False,
                 names: dict[int, str] | None = None, int8: bool = False, data: str | Path = "") -> dict[str, Path]:
    """Export a live model to each format in `include`, next to `file`; returns {format: path}."""
    from utils.export.calibration import calibration_images
    from utils.export.coreml import export_coreml
    from utils.export.ncnn import export_ncnn
    from utils.export.onnx import export_onnx
    from utils.export.openvino import export_openvino
    from utils.export.paddle import export_paddle
    from utils.export.tflite import export_tflite
    from utils.export.torchscript import export_torchscript

    include, device, file = check_include(include), torch.device(device), Path(file)
    imgsz = check_options(imgsz, batch_size, device, half, dynamic, optimize, include, int8, data)
    weights_half, half = half, half and device.type == "cuda"  # --half of a HALF_WEIGHTS format keeps torch fp32
    gs = max(int(torch.as_tensor(getattr(model, "stride", 32)).max()), 32)
    new = [max(math.ceil(x / gs) * gs, gs) for x in imgsz]
    if new != imgsz:
        LOGGER.warning(f"WARNING ⚠️ --imgsz {imgsz} must be a multiple of max stride {gs}, updating to {new}")
    model = prepare_model(model, device, half=half, dynamic=dynamic)
    im = torch.rand(batch_size, 3, *new, generator=torch.Generator().manual_seed(0)).to(device)
    im = im.half() if half else im
    desc = describe_outputs(model, im)
    meta = metadata.build_metadata(model, names or dict(getattr(model, "names", {}) or {}), new, batch_size,
                                   dynamic, half, desc["outputs"], desc["eval_layout"], desc["tensor_output"])
    meta["output_shapes"] = desc["output_shapes"]
    shapes = ", ".join(str(tuple(s)) for s in desc["output_shapes"])
    LOGGER.info(f"\n{colorstr('PyTorch:')} starting from {file} with input {tuple(im.shape)}, output shape {shapes}"
                + (f" ({file.stat().st_size / 1e6:.1f} MB)" if file.is_file() else ""))
    results, failures = {}, []
    for fmt in include:
        name = next(r[0] for r in FORMATS if r[1] == fmt)
        prefix = colorstr(f"{name}:")
        LOGGER.info(f"\n{prefix} starting export with torch {torch.__version__}...")
        t0 = time.perf_counter()
        f = None
        try:
            if fmt == "torchscript":
                f = export_torchscript(model, im, file, meta, optimize=optimize, prefix=prefix)
            elif fmt == "onnx":
                f = export_onnx(model, im, file, meta, opset=opset, dynamic=dynamic, simplify=simplify, prefix=prefix)
            elif fmt == "openvino":
                f = export_openvino(model, im, file, meta, opset=opset, dynamic=dynamic, half=half)
            elif fmt == "tflite":
                f = export_tflite(model, im, file, meta, half=weights_half, int8=int8, dynamic=dynamic, prefix=prefix,
                                  calibration=lambda: calibration_images(data, new, meta.get("preprocess")))
            elif fmt == "ncnn":
                f = export_ncnn(model, im, file, meta, dynamic=dynamic)
            elif fmt == "paddle":
                f = export_paddle(model, im, file, meta, dynamic=dynamic, prefix=prefix)
            elif fmt == "coreml":
                f = export_coreml(model, im, file, meta, half=weights_half, dynamic=dynamic)
            dt = time.perf_counter() - t0
            t1 = time.perf_counter()
            d = max_difference(f, model, im, dynamic, gs)
            dc = time.perf_counter() - t1
            tol = tolerance(model, im, _precision(fmt, weights_half, int8))
            if d is not None and not d <= tol:  # `not <=` also catches NaN
                _remove(f, fmt)
                raise ExportError(f"{name} output differs from PyTorch by {d:.3g} (> {tol:g}); {f.name} removed")
        except Exception as e:  # noqa: BLE001 - one failed format must not stop the others; reported at the end
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            LOGGER.error(f"{prefix} export failure ❌ {time.perf_counter() - t0:.1f}s: {msg}")
            LOGGER.debug("export traceback", exc_info=True)
            failures.append(f"{name}: {msg}")
            continue
        checked = (f"largest difference vs PyTorch {d:.2e} ({RUNTIMES[fmt]}, {dc:.1f}s)" if d is not None
                   else unchecked(fmt))
        LOGGER.info(f"{prefix} export success ✅ {dt:.1f}s, saved as {f} ({_size_mb(f, fmt):.1f} MB); {checked}")
        results[fmt] = f
    if failures:
        raise ExportError("export failed: " + "; ".join(failures))
    return results


def _precision(fmt: str, half: bool, int8: bool) -> str | None:
    """What a HALF_WEIGHTS format stores ('fp16', 'int8'), which sets the tolerance of its check; None: the input's."""
    if fmt not in HALF_WEIGHTS:
        return None
    return "int8" if int8 else "fp16" if half else None


def names_from_data(data: str | Path) -> dict[int, str]:
    """Class names from a data YAML (its `names`); a classification folder's names come from its task (export.py)."""
    p = Path(data)
    if not p.is_file():
        raise FileNotFoundError(f"--data {data} not found")
    import yaml

    names = (yaml.safe_load(p.read_text(encoding="utf-8", errors="ignore")) or {}).get("names")
    if not names:
        raise ExportError(f"{data}: no 'names' to take class names from")
    return {int(k): str(v) for k, v in (names.items() if isinstance(names, dict) else enumerate(names))}


def export_weights(weights: str | Path = "yolov5s.pt", include=("torchscript",), imgsz=(640, 640),
                   batch_size: int = 1, device: str = "cpu", half: bool = False, inplace: bool = False,
                   optimize: bool = False, dynamic: bool = False, simplify: bool = False, opset: int = 12,
                   data: str | Path = "", names: dict[int, str] | None = None, int8: bool = False) -> dict[str, Path]:
    """export.py: load a checkpoint (ours or upstream's) and export it; returns {format: path}. Class names: `names`,
    else --data's, else the model's."""
    from utils.checkpoint import load_model
    from utils.device import select_device
    from utils.downloads import attempt_download

    t = time.perf_counter()
    include = check_include(include)  # before loading anything: a missing package is one line, at once
    file = attempt_download(weights[0] if isinstance(weights, (list, tuple)) else weights)
    dev = select_device(device)
    check_options(imgsz, batch_size, dev, half, dynamic, optimize, include, int8, data)
    model = load_model(file, device=dev, fuse=True, inplace=inplace)
    given = names or (names_from_data(data) if data else None)
    names = dict(given or model.names)
    if given:
        if len(names) != int(getattr(model, "nc", len(names))):
            raise ExportError(f"--data {data} names {len(names)} classes, {file} predicts {model.nc}")
    results = export_model(model, file, include, imgsz, batch_size, dev, half, dynamic, simplify, opset, optimize,
                           names, int8, data)
    task = metadata.model_task(model)
    last = list(results.values())[-1]
    lines = [f"\nExport complete ({time.perf_counter() - t:.1f}s)",
             f"Results saved to {colorstr('bold', str(file.parent.resolve()))}"]
    with contextlib.suppress(registry.TaskLookupError):
        scripts = registry.for_kind(task).scripts
        lines += [f"Predict:         python {scripts.predict} --weights {last}",
                  f"Validate:        python {scripts.val} --weights {last}"]
    LOGGER.info("\n".join(lines))
    return results
