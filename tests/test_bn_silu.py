"""The fused BatchNorm+SiLU CPU training kernel (models/bn_silu.py, models/csrc/bn_silu.cpp): the same numbers as
nn.BatchNorm2d then nn.SiLU, used only where it applies, and a clear fallback where it can't be built."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import bn_silu as fused
from models.build import build_model
from models.common import Conv
from utils import native

needs_compiler = pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
                                    reason="no C++ compiler: the fused kernel falls back (tested below)")


@pytest.fixture
def kernel_cache(tmp_path, monkeypatch):
    """A fresh cache directory and a fresh load of the kernel, undone after the test."""
    monkeypatch.setenv("MTYOLO_CACHE_DIR", str(tmp_path / "cache"))
    fused.kernel_library.cache_clear()
    yield tmp_path / "cache"
    fused.kernel_library.cache_clear()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def _pair(c: int, momentum: float | None = 0.03) -> tuple[nn.BatchNorm2d, nn.BatchNorm2d]:
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(c, eps=1e-3, momentum=momentum)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.normal_(0, 0.2)
    bn.running_mean.normal_(0, 1)
    return bn, copy.deepcopy(bn)


def _both(x: torch.Tensor, c: int, momentum: float | None = 0.03, steps: int = 2,
          layout: torch.memory_format = torch.channels_last):
    """Two training steps through the modules and through the kernel: outputs, gradients and BatchNorms."""
    ref_bn, fused_bn = _pair(c, momentum)
    results = []
    for bn, run in ((ref_bn, lambda t: F.silu(ref_bn(t))), (fused_bn, lambda t: fused.bn_silu(t, fused_bn))):
        xs = x.detach().clone().contiguous(memory_format=layout).requires_grad_()
        for _ in range(steps):
            xs.grad = None
            y = run(xs)
            y.backward(torch.linspace(-1, 1, y.numel()).view_as(y).to(y.dtype))
        results.append((y, xs.grad, bn))
    return results


LAYOUTS = [torch.channels_last, torch.contiguous_format]


@needs_compiler
@pytest.mark.parametrize("shape", [(4, 16, 32, 32), (3, 17, 9, 7), (2, 3, 1, 5), (8, 64, 4, 4), (2, 5, 40, 40)])
@pytest.mark.parametrize("momentum", [0.03, None])
@pytest.mark.parametrize("layout", LAYOUTS, ids=["channels_last", "contiguous"])
def test_fp32_matches_batchnorm_then_silu(kernel_cache, shape, momentum, layout):
    x = torch.randn(shape) * 3 + 1
    (y0, g0, bn0), (y1, g1, bn1) = _both(x, shape[1], momentum, layout=layout)
    assert y1.is_contiguous(memory_format=layout) and g1.is_contiguous(memory_format=layout)
    assert _rel(y1, y0) < 1e-5 and _rel(g1, g0) < 1e-4
    assert _rel(bn1.weight.grad, bn0.weight.grad) < 1e-4 and _rel(bn1.bias.grad, bn0.bias.grad) < 1e-4
    assert torch.allclose(bn1.running_mean, bn0.running_mean, rtol=1e-5, atol=1e-6)
    assert torch.allclose(bn1.running_var, bn0.running_var, rtol=1e-5, atol=1e-6)
    assert int(bn1.num_batches_tracked) == int(bn0.num_batches_tracked) == 2


@needs_compiler
@pytest.mark.parametrize("layout", LAYOUTS, ids=["channels_last", "contiguous"])
def test_bf16_is_as_close_to_fp32_as_pytorch(kernel_cache, layout):
    # PyTorch rounds to bf16 between BatchNorm and SiLU and between their backwards; the kernel only at its outputs
    x = (torch.randn(4, 32, 16, 16) * 2).bfloat16()
    (y32, g32, _), _ = _both(x.float(), 32, layout=layout)
    (y0, g0, bn0), (y1, g1, bn1) = _both(x, 32, layout=layout)
    assert y1.dtype == g1.dtype == torch.bfloat16 and bn1.weight.grad.dtype == torch.float32
    assert _rel(y1, y32) <= _rel(y0, y32) * 1.25 + 1e-3
    assert _rel(g1, g32) <= _rel(g0, g32) * 1.25 + 1e-3
    assert _rel(bn1.weight.grad, bn0.weight.grad) < 2e-2 and _rel(bn1.running_var, bn0.running_var) < 1e-5


@needs_compiler
@pytest.mark.parametrize("layout", LAYOUTS, ids=["channels_last", "contiguous"])
def test_threads_agree(kernel_cache, layout):
    x = torch.randn(4, 24, 20, 20)
    before = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            outs.append(_both(x, 24, steps=1, layout=layout)[1])
    finally:
        torch.set_num_threads(before)
    (y1, g1, _), (y2, g2, _) = outs
    assert _rel(y2, y1) < 1e-6 and _rel(g2, g1) < 1e-5


def _uses_kernel(module: nn.Module, x: torch.Tensor, monkeypatch) -> bool:
    calls = []
    real = fused._BnSiluFunction.apply
    monkeypatch.setattr(fused._BnSiluFunction, "apply", lambda *a: calls.append(1) or real(*a))
    module(x)
    return bool(calls)


@needs_compiler
def test_conv_uses_the_kernel_only_where_it_applies(kernel_cache, monkeypatch):
    conv = Conv(3, 8, 3).to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 16, 16)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert _uses_kernel(conv.train(), cl, monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _uses_kernel(conv, cl, monkeypatch)
    plain = copy.deepcopy(conv).to(memory_format=torch.contiguous_format)
    assert _uses_kernel(plain, x.contiguous(), monkeypatch)  # contiguous layout: the kernel's plane path
    with fused.pytorch_kernels():
        assert not _uses_kernel(conv, cl, monkeypatch) and not _uses_kernel(plain, x, monkeypatch)
    assert _uses_kernel(conv, cl, monkeypatch)  # back on after the block
    strided = torch.rand(2, 8, 16, 16)[:, ::2]  # a channel slice: neither layout
    assert not fused.fused_applies(strided, conv.bn, conv.act)
    assert not _uses_kernel(conv.eval(), cl, monkeypatch)
    one_value = torch.rand(1, 8, 1, 1).contiguous(memory_format=torch.channels_last)
    assert not fused.fused_applies(one_value, conv.train().bn, conv.act)  # nn.BatchNorm2d's own error is clearer
    leaky = Conv(3, 8, 3, act=nn.LeakyReLU(0.1)).train().to(memory_format=torch.channels_last)
    assert not _uses_kernel(leaky, cl, monkeypatch)
    sync = Conv(3, 8, 3).train().to(memory_format=torch.channels_last)
    sync.bn = nn.SyncBatchNorm(8)
    assert not fused.fused_applies(cl, sync.bn, sync.act)


@needs_compiler
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # BatchNorm's own batch-size check, traced
def test_traced_training_graph_has_no_kernel(kernel_cache):
    conv = Conv(3, 8, 3).train().to(memory_format=torch.channels_last)
    graph = str(torch.jit.trace(conv, torch.rand(2, 3, 8, 8).contiguous(memory_format=torch.channels_last),
                                check_trace=False).inlined_graph)
    assert "batch_norm" in graph and "silu" in graph and "PythonOp" not in graph


@needs_compiler
@pytest.mark.parametrize("layout", LAYOUTS, ids=["channels_last", "contiguous"])
def test_model_training_step_matches_pytorch_kernels(kernel_cache, monkeypatch, layout):
    # a whole model: concatenation gradients arrive as strided slices, the head's as they come from the loss
    model = build_model("yolov5n-seg.yaml").train().to(memory_format=layout)
    twin = copy.deepcopy(model)
    x = torch.rand(2, 3, 64, 64).contiguous(memory_format=layout)

    def step(m):
        out = m(x)
        maps = [*out[0], out[1]]
        sum((t.float() * torch.linspace(-1, 1, t.numel()).view_as(t)).sum() for t in maps).backward()
        return {n: p.grad for n, p in m.named_parameters()}, {n: b.clone() for n, b in m.named_buffers()}

    grads, bufs = step(model)
    monkeypatch.setenv(native.NATIVE_ENV, "0")
    fused.kernel_library.cache_clear()
    ref_grads, ref_bufs = step(twin)
    worst = max(_rel(grads[n], ref_grads[n]) for n in grads if ref_grads[n].abs().max() > 0)
    assert worst < 1e-3
    assert all(torch.allclose(bufs[n].float(), ref_bufs[n].float(), rtol=1e-4, atol=1e-5) for n in bufs)


def test_turned_off_falls_back_with_one_line(kernel_cache, monkeypatch, log):
    monkeypatch.setenv(native.NATIVE_ENV, "0")
    assert fused.kernel_library() is None
    conv = Conv(3, 8, 3).train().to(memory_format=torch.channels_last)
    for _ in range(2):
        y = conv(torch.rand(2, 3, 8, 8).contiguous(memory_format=torch.channels_last))
    assert y.shape == (2, 8, 8, 8)
    lines = [r.getMessage() for r in log.records if "BatchNorm+SiLU" in r.getMessage()]
    assert len(lines) == 1 and "MTYOLO_NATIVE" in lines[0] and "PyTorch's kernels" in lines[0]


def test_no_compiler_or_a_failing_one_is_named(kernel_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(native.NativeUnavailable, match="no C\\+\\+ compiler"):
        native.load(fused.SOURCE)
    failing = tmp_path / "cxx"
    failing.write_text("#!/bin/sh\necho 'fatal: cannot compile here' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setenv("CXX", str(failing))
    with pytest.raises(native.NativeUnavailable, match="failed on bn_silu.cpp: fatal: cannot compile here"):
        native.load(fused.SOURCE)
    assert fused.kernel_library() is None
    assert not list((kernel_cache / "native").glob("*.so"))  # nothing half-written is left to load next time


@needs_compiler
def test_unwritable_cache_is_named(kernel_cache, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("MTYOLO_CACHE_DIR", str(blocker))
    with pytest.raises(native.NativeUnavailable, match="could not create .*not-a-folder"):
        native.load(fused.SOURCE)
    assert blocker.read_text().startswith("a file")  # left as it was


@needs_compiler
def test_built_once_then_loaded_from_the_cache(kernel_cache, tmp_path):
    lib, how = native.load(fused.SOURCE)
    assert how.startswith("built in") and lib.bn_silu_forward_f32
    assert native.load(fused.SOURCE)[1].startswith("cached in")
    assert len(list((kernel_cache / "native").glob("bn_silu-*.so"))) == 1
    changed = tmp_path / "bn_silu.cpp"
    changed.write_text(fused.SOURCE.read_text() + "\n// another version\n")
    assert native.library_path(changed, native.compiler()) != native.library_path(fused.SOURCE, native.compiler())
