"""BatchNorm2d then SiLU in CPU training, as one native kernel (models/csrc/bn_silu.cpp).

On a CPU the two PyTorch modules read or write each activation about thirteen times per training step and keep two
tensors for the backward; the fused kernel reads or writes it nine times and keeps one (its input). Conv uses it
when `fused_applies` says so: training mode on the CPU, an fp32 or bf16 input either channels_last or contiguous,
a plain affine nn.BatchNorm2d with fp32 parameters, and nn.SiLU. Everywhere else (evaluation, CUDA, other strides,
SyncBatchNorm, tracing, export, torch.compile, a machine without a C++ compiler, `MTYOLO_NATIVE=0`, inside
`pytorch_kernels()`) the modules run as they are. The statistics, the running statistics' update and the gradients
are those of the two modules, to float rounding (tests/test_bn_silu.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn

from utils import native
from utils.log import LOGGER

SOURCE = Path(__file__).parent / "csrc" / "bn_silu.cpp"
_P, _I64, _F, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
_SHAPE_ARGS = [_I64, _I64, _I64, _INT]  # batch, channels, plane (H*W), channels_last
_FORWARD_ARGS = [_P, *_SHAPE_ARGS, _P, _P, _F, _F, _P, _P, _INT, _P, _P, _P]
_BACKWARD_ARGS = [_P, _P, *_SHAPE_ARGS, _P, _P, _P, _P, _INT, _P, _P, _P]
_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}


@functools.cache
def kernel_library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; None (said once) where it can't be had."""
    try:
        lib, how = native.load(SOURCE)
    except native.NativeUnavailable as e:
        LOGGER.info(f"Fused BatchNorm+SiLU CPU kernel not used ({e}): training runs PyTorch's kernels")
        return None
    for suffix in _SUFFIX.values():
        getattr(lib, f"bn_silu_forward_{suffix}").argtypes = _FORWARD_ARGS
        getattr(lib, f"bn_silu_backward_{suffix}").argtypes = _BACKWARD_ARGS
    if how.startswith("built"):
        LOGGER.info(f"Fused BatchNorm+SiLU CPU kernel {how}")
    return lib


_enabled = True  # False inside pytorch_kernels()


@contextlib.contextmanager
def pytorch_kernels() -> Iterator[None]:
    """Within this block Conv runs PyTorch's own BatchNorm and SiLU (the plain recipe benchmarks compare with)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _shape(x: torch.Tensor) -> tuple[int, int, int, int]:
    """The kernel's view of an N x C x H x W tensor: batch, channels, plane size, and 1 if channels_last."""
    n, c, h, w = x.shape
    return n, c, h * w, int(x.is_contiguous(memory_format=torch.channels_last))


class _BnSiluFunction(torch.autograd.Function):
    """silu(batch_norm(x)) with batch statistics; running statistics updated in place like nn.BatchNorm2d's."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor | None,
                running_var: torch.Tensor | None, momentum: float, eps: float) -> torch.Tensor:
        c = x.shape[1]
        out = torch.empty_like(x)  # in x's layout
        mean, invstd = x.new_empty(c, dtype=torch.float32), x.new_empty(c, dtype=torch.float32)
        getattr(kernel_library(), f"bn_silu_forward_{_SUFFIX[x.dtype]}")(
            x.data_ptr(), *_shape(x), weight.data_ptr(), bias.data_ptr(), eps, momentum, _ptr(running_mean),
            _ptr(running_var), torch.get_num_threads(), out.data_ptr(), mean.data_ptr(), invstd.data_ptr())
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, bias, mean, invstd = ctx.saved_tensors
        layout = torch.channels_last if _shape(x)[3] else torch.contiguous_format
        # A concatenation's gradient arrives as a strided channel slice, a loss's sometimes in the other layout
        grad = grad.to(x.dtype).contiguous(memory_format=layout)
        grad_x = torch.empty_like(x)
        grad_weight, grad_bias = torch.empty_like(weight), torch.empty_like(bias)
        getattr(kernel_library(), f"bn_silu_backward_{_SUFFIX[x.dtype]}")(
            grad.data_ptr(), x.data_ptr(), *_shape(x), mean.data_ptr(), invstd.data_ptr(), weight.data_ptr(),
            bias.data_ptr(), torch.get_num_threads(), grad_x.data_ptr(), grad_weight.data_ptr(), grad_bias.data_ptr())
        needs = ctx.needs_input_grad
        return (grad_x if needs[0] else None, grad_weight if needs[1] else None, grad_bias if needs[2] else None,
                None, None, None, None)


def fused_applies(x: torch.Tensor, bn: nn.Module, act: nn.Module) -> bool:
    """Whether act(bn(x)) can run as the fused kernel (see the module docstring); the cheap checks first."""
    return (_enabled and bn.training and type(bn) is nn.BatchNorm2d and type(act) is nn.SiLU
            and x.device.type == "cpu" and not torch.jit.is_tracing() and not torch.jit.is_scripting()
            and not torch.compiler.is_compiling() and x.dtype in _SUFFIX and x.dim() == 4
            and (x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous())
            and bn.affine and bn.weight.dtype == torch.float32 and x.shape[0] * x.shape[2] * x.shape[3] > 1
            and kernel_library() is not None)


def bn_silu(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """silu(bn(x)) in training mode through the fused kernel, with nn.BatchNorm2d's running-statistics update."""
    momentum = 0.0
    if bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    running = (bn.running_mean, bn.running_var) if bn.track_running_stats else (None, None)
    return _BnSiluFunction.apply(x, bn.weight, bn.bias, *running, momentum, bn.eps)
