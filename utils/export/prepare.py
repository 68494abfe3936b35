"""Putting a model into export form: a frozen eval copy whose heads return only what an export holds."""

from __future__ import annotations

from copy import deepcopy

import torch
from torch import nn


def _heads(model: nn.Module) -> list[nn.Module]:
    """Modules with an `export` switch (Detect, Segment, and any head that follows the same convention)."""
    return [m for m in model.modules() if isinstance(getattr(type(m), "export", None), bool)]


def set_export(model: nn.Module, export: bool) -> None:
    """Switch every head between its eval output (with raw maps) and its export output."""
    for m in _heads(model):
        m.export = export


def prepare_model(model: nn.Module, device: torch.device, half: bool = False, dynamic: bool = False) -> nn.Module:
    """A frozen eval copy on `device` with heads in export form; `dynamic` makes them rebuild grids every call so a
    trace follows the input size instead of freezing the grids of the example input."""
    model = deepcopy(model).to(device).eval()
    model.to(memory_format=torch.contiguous_format)  # load_model's channels_last weights would be baked into a trace
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(getattr(type(m), "dynamic", None), bool):
            m.dynamic = dynamic
    set_export(model, True)
    return model.half() if half else model


def describe_outputs(model: nn.Module, im: torch.Tensor) -> dict:
    """Output names and shapes of the export form, and how its eval form differs (run on the example input).

    eval_layout maps each eval output to the export output it matches (by shape, in order), or None for one the
    export leaves out (detection's raw per-level maps, wherever they sit in the tuple); tensor_output says the
    model returns a bare tensor (classification logits) rather than a tuple.
    """
    with torch.no_grad():
        set_export(model, False)
        full = model(im)
        set_export(model, True)
        for _ in range(2):  # dry runs: grids are built at the example size before any trace sees them
            out = model(im)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    if not all(isinstance(t, torch.Tensor) for t in outs):
        raise ValueError(f"{type(model).__name__}: its export-mode forward must return tensors, got "
                         f"{[type(t).__name__ for t in outs]}")
    return {"outputs": [f"output{i}" for i in range(len(outs))], "output_shapes": [list(t.shape) for t in outs],
            "eval_layout": eval_layout(full, outs), "tensor_output": isinstance(out, torch.Tensor)}


def eval_layout(full, outs: list[torch.Tensor]) -> list[int | None]:
    """For each eval output, the index of the export output of the same shape (taken in order), else None."""
    layout, j = [], 0
    for y in (full if isinstance(full, (list, tuple)) else [full]):
        if isinstance(y, torch.Tensor) and j < len(outs) and y.shape == outs[j].shape:
            layout.append(j)
            j += 1
        else:
            layout.append(None)
    if j != len(outs):
        raise ValueError(f"export outputs {[tuple(t.shape) for t in outs]} do not appear, in order, among the "
                         f"eval outputs")
    return layout


def dynamic_axes(output_shapes: list[list[int]]) -> dict[str, dict[int, str]]:
    """ONNX dynamic axes: batch, height and width of the input; batch plus the size-dependent axes of each output
    (detections per image for (B, N, no), height and width for (B, C, H, W))."""
    axes = {"images": {0: "batch", 2: "height", 3: "width"}}
    for i, shape in enumerate(output_shapes):
        a = {0: "batch"}
        if len(shape) == 3:
            a[1] = "anchors" if i == 0 else f"anchors{i}"
        elif len(shape) == 4:
            a.update({2: f"height{i}", 3: f"width{i}"})
        axes[f"output{i}"] = a
    return axes
