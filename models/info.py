"""Model summary line (layers, parameters, gradients, GFLOPs) and FLOP counting."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from utils.log import LOGGER


def _input_channels(model: nn.Module) -> int:
    yaml = getattr(model, "yaml", None)
    if isinstance(yaml, dict) and isinstance(yaml.get("ch"), int):
        return yaml["ch"]
    p = next(model.parameters())
    return p.shape[1] if p.ndim == 4 else 3


def count_gflops(model: nn.Module, imgsz: int | list[int] | tuple[int, int] = 640) -> float:
    """GFLOPs (2 x multiply-accumulates of convolutions and matmuls) of one forward pass at imgsz x imgsz.

    Counts at a stride-sized input and scales by area, so it is cheap even for large models. The count comes from
    forward hooks on the convolution and linear layers, with torch.utils.flop_counter's formulas: the counter itself
    costs 1.6 s a model here (a dispatch mode, and importing torch._dynamo), paid at every model build and load.
    """
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    stride = getattr(model, "stride", None)
    s = max(int(stride.max()), 32) if isinstance(stride, torch.Tensor) else 32
    p = next(model.parameters())
    x = torch.zeros(1, _input_channels(model), s, s, device=p.device, dtype=p.dtype)
    modes = {m: m.training for m in model.modules()}
    model.eval()  # a train-mode pass would update BatchNorm statistics
    total = [0]

    def count(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        total[0] += _layer_flops(m, inputs[0], out)

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, _COUNTED)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
        for m, mode in modes.items():
            m.training = mode
    return total[0] / 1e9 * (h / s) * (w / s)


_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
            nn.MultiheadAttention)


def _layer_flops(m: nn.Module, x: torch.Tensor, out: torch.Tensor) -> int:
    """2 x multiply-accumulates of one convolution or linear layer's call (flop_counter's formulas, bias excluded)."""
    if isinstance(m, nn.Linear):
        return 2 * (x.numel() // m.in_features) * m.in_features * m.out_features
    if isinstance(m, nn.MultiheadAttention):  # q/k/v and output projections, then q.k^T and attention x v
        e, (t, n, _) = m.embed_dim, x.shape if not m.batch_first else (x.shape[1], x.shape[0], x.shape[2])
        return 2 * t * n * e * e * 4 + 4 * n * t * t * e  # self-attention: source length = target length
    transposed = isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
    spatial = (x if transposed else out).shape[2:]
    c_out, c_in, *kernel = m.weight.shape
    return 2 * x.shape[0] * c_out * c_in * int(torch.Size(spatial).numel()) * int(torch.Size(kernel).numel())


def model_info(model: nn.Module, verbose: bool = False, imgsz: int | list[int] = 640) -> str:
    """Log and return the summary line, e.g. 'YOLOv5s summary: 214 layers, 7235389 parameters, ... GFLOPs'."""
    n_p = sum(p.numel() for p in model.parameters())
    n_g = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if verbose:
        LOGGER.info(f"{'layer':>5} {'name':>40} {'gradient':>9} {'parameters':>12} {'shape':>20} "
                    f"{'mu':>10} {'sigma':>10}")
        for i, (name, p) in enumerate(model.named_parameters()):
            name = name.replace("module_list.", "")
            sigma = p.std().item() if p.numel() > 1 else 0.0
            LOGGER.info(f"{i:5g} {name:>40} {str(p.requires_grad):>9} {p.numel():12g} {str(list(p.shape)):>20} "
                        f"{p.mean().item():10.3g} {sigma:10.3g}")
    try:
        fs = f", {count_gflops(model, imgsz):.1f} GFLOPs"
    except Exception:  # counting is informative only; a model it cannot trace still gets its summary
        fs = ""
    yaml_file = getattr(model, "yaml_file", None)
    name = Path(yaml_file).stem.replace("yolov5", "YOLOv5") if yaml_file else "Model"
    line = f"{name} summary: {len(list(model.modules()))} layers, {n_p} parameters, {n_g} gradients{fs}"
    LOGGER.info(line)
    return line
