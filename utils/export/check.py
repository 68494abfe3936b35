"""The check every export goes through: run the file with its own runtime on the example input (and, for a dynamic
export, on a second batch and image size) and compare with PyTorch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from utils.export import coreml
from utils.export.formats import ExportError

TOLERANCE = 1e-3  # largest difference allowed on any output (fp32), relative above 1
# Relative to the largest output magnitude (at least 1): fp16 keeps about 3 significant digits; int8 as measured on
# the shapes fixture (TFLite int8: 15 px off at outputs up to 320 px, mAP50-95 0.792 -> 0.721).
RELATIVE_TOLERANCE = {"fp16": 1e-2, "int8": 0.1}
RUNTIMES = {"torchscript": "torch.jit", "onnx": "onnxruntime", "openvino": "OpenVINO", "tflite": "LiteRT",
            "ncnn": "ncnn", "paddle": "Paddle Inference", "coreml": "Core ML"}


def second_input(im: torch.Tensor, gs: int) -> torch.Tensor:
    """Another batch size and image size than `im` (both still stride multiples), to prove a dynamic export."""
    b, c, h, w = im.shape
    g = torch.Generator().manual_seed(1)
    return torch.rand(b + 2, c, h + gs, max(w - gs, gs), generator=g).to(im.device, im.dtype)


def max_difference(file: Path, model: torch.nn.Module, im: torch.Tensor, dynamic: bool, gs: int) -> float | None:
    """Largest difference |a - b| / max(|b|, 1) between the exported outputs and PyTorch's (relative for values above
    1: boxes are in pixels, where float32 kernels differing by 1e-5 relative move a 512 px coordinate by 5e-3);
    None when no runtime is installed."""
    from utils.export.backend import backend_kind, load_exported

    if backend_kind(file) == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        return None
    if backend_kind(file) == "coreml" and not coreml.RUNS_HERE:  # export_coreml checked its spec instead
        return None
    exported = load_exported(file, im.device)
    worst = 0.0
    for x in [im, second_input(im, gs)] if dynamic else [im]:
        with torch.no_grad():
            ref = model(x)
        ref = list(ref) if isinstance(ref, (list, tuple)) else [ref]
        got = exported.outputs(x)
        if len(got) != len(ref) or any(a.shape != b.shape for a, b in zip(got, ref)):
            raise ExportError(f"{file}: output shapes {[tuple(a.shape) for a in got]} differ from PyTorch's "
                              f"{[tuple(b.shape) for b in ref]} at input {tuple(x.shape)}")
        worst = max([worst, *((a.float() - b.float()).abs().div(b.float().abs().clamp_min(1)).max().item()
                              for a, b in zip(got, ref) if b.numel())])
    return worst


def unchecked(fmt: str) -> str:
    """Why an export's numbers were not compared with PyTorch (the one line export.py prints instead)."""
    if fmt == "coreml":
        return f"numbers not checked: {coreml.NOT_HERE} (checked here: the spec's input, outputs, shapes, metadata)"
    return f"not checked: {RUNTIMES[fmt]} is not installed"


def tolerance(model: torch.nn.Module, im: torch.Tensor, precision: str | None = None) -> float:
    """TOLERANCE for fp32; fp16 (an fp16 input, or precision='fp16') and int8 a fraction of the output scale."""
    precision = precision or ("fp16" if im.dtype == torch.float16 else None)
    if precision is None:
        return TOLERANCE
    with torch.no_grad():
        y = model(im)
    scale = max(float(t.float().abs().max()) for t in (y if isinstance(y, (list, tuple)) else [y]))
    return RELATIVE_TOLERANCE[precision] * max(scale, 1.0)
