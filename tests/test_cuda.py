"""GPU paths: AMP (bf16 and fp16 with a GradScaler), fused optimizers, EMA, NMS, channels_last, AutoBatch, training.

Tests marked `cuda` skip without a GPU. The logic behind them that does not need one (the AMP dtype rule, the
AutoBatch fit and its guards, the CPU fallbacks) is tested here on any machine.
"""

from __future__ import annotations

import csv
import math
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch

from utils import autobatch as ab
from utils.autobatch import autobatch, estimate_batch, trial_step
from utils.device import amp_dtype_for_capability, autocast_dtype
from utils.ema import ModelEMA
from utils.nms import nms, nms_torch, non_max_suppression
from utils.optim import _fast_kwargs, clip_gradients, smart_optimizer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
HYP = "data/hyps/hyp.scratch-low.yaml"
MIB = 1 << 20


def _model(cfg: str = "yolov5n.yaml", nc: int = 4, device: str = "cpu"):
    from models.build import build_model
    from utils.log import quiet

    with quiet():
        return build_model(cfg, nc=nc).to(device)


def _hyp() -> dict:
    import yaml

    from utils.paths import find_file

    return yaml.safe_load(find_file(HYP).read_text())


def _targets(bs: int, n: int = 6, nc: int = 4, device: str = "cpu") -> torch.Tensor:
    """(image, class, x, y, w, h) rows, normalised, n per image."""
    g = torch.Generator().manual_seed(0)
    img = torch.arange(bs).repeat_interleave(n).float()[:, None]
    cls = torch.randint(0, nc, (bs * n, 1), generator=g).float()
    xy = torch.rand(bs * n, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(bs * n, 2, generator=g) * 0.3 + 0.05
    return torch.cat((img, cls, xy, wh), 1).to(device)


def _train_step(model, optimizer, scaler, criterion, imgs, targets, dtype) -> torch.Tensor:
    """One step as the trainer takes it: autocast forward and loss, scaled backward, unscale, clip, step."""
    with torch.autocast(imgs.device.type, dtype=dtype, enabled=dtype is not None):
        loss, _ = criterion(model(imgs), targets)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    clip_gradients(model, 10.0)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


# ---------------------------------------------------------------------------------------------- CPU: the rules
def test_amp_dtype_rule():
    assert amp_dtype_for_capability(7) == torch.float16  # V100, T4: no native bf16
    assert amp_dtype_for_capability(8) == torch.bfloat16  # A100, consumer Ampere
    assert amp_dtype_for_capability(9) == torch.bfloat16  # H100, H200
    assert autocast_dtype(torch.device("cpu")) is None


def test_fast_kwargs_rule():
    class FakeCuda:  # stands in for a CUDA parameter on a machine without one
        is_cuda = True
        device = torch.device("cuda")

        @staticmethod
        def is_floating_point() -> bool:
            return True

    assert _fast_kwargs(torch.optim.SGD, [FakeCuda()]) == {"fused": True}
    assert _fast_kwargs(torch.optim.RMSprop, [FakeCuda()]) == {"foreach": True}  # RMSprop has no fused kernel
    assert _fast_kwargs(torch.optim.SGD, [torch.zeros(1)]) == {"fused": True}  # fused CPU kernels too
    assert _fast_kwargs(torch.optim.SGD, [torch.zeros(1), FakeCuda()]) == {"foreach": True}  # devices mixed
    assert _fast_kwargs(torch.optim.SGD, [FakeCuda()], fast=False) == {"foreach": False}


def test_autobatch_on_cpu_uses_default_with_message(log):
    model = _model()
    assert autobatch(model, 64, torch.device("cpu"), default=12) == 12
    assert "CUDA not detected, using default batch-size 12" in log.text


def _line(sizes, a=2e9, b=300 * MIB):
    return list(sizes), [a + b * s for s in sizes]


def test_estimate_batch_solves_the_line():
    sizes, mems = _line((1, 2, 4, 8, 16))
    budget = 2e9 + 300 * MIB * 100.5
    assert estimate_batch(sizes, mems, budget) == (100, "")
    noisy = [m * (1 + 0.01 * (-1) ** i) for i, m in enumerate(mems)]
    b, why = estimate_batch(sizes, noisy, budget)
    assert why == "" and 90 <= b <= 110


@pytest.mark.parametrize("sizes,mems,budget,reason", [
    ([1], [1e9], 1e10, "too few"),  # one successful trial cannot fix a line
    ([1, 2, 4], [3e9, 2e9, 1e9], 1e10, "does not grow"),  # falling memory: a broken measurement
    ([1, 2, 4], [1e9, 1e9, 1e9], 1e10, "does not grow"),  # flat
    ([1, 2, 4], [1e9, 1.001e9, 1.003e9], 1e11, "outside 1..1024"),  # absurdly large
    ([1, 2, 4], [5e9, 6e9, 8e9], 4e9, "outside 1..1024"),  # the fixed cost alone exceeds the budget
    ([1, 2, 4], [1e9, float("nan"), 3e9], 1e10, "unusable"),
    ([1, 2, 4], [1e9, 2e9, 3e9], -1.0, "unusable"),  # the GPU is already fuller than the target
])
def test_estimate_batch_guards_fall_back_to_default(sizes, mems, budget, reason):
    b, why = estimate_batch(sizes, mems, budget, default=16)
    assert b == 16 and reason in why


def test_estimate_batch_stays_below_a_failed_trial():
    sizes, mems = _line((1, 2, 4, 8))
    assert estimate_batch(sizes, mems, 2e9 + 300 * MIB * 40, failed_at=16) == (8, "")  # fit said 40, 16 failed
    assert estimate_batch(sizes, mems, 2e9 + 300 * MIB * 12.5, failed_at=16) == (12, "")  # below the failure: kept
    with pytest.raises(ValueError):
        estimate_batch([1, 2], [1.0], 1e9)


def test_trial_step_runs_forward_and_backward_on_cpu():
    model = _model().train()
    trial_step(model, 2, 64, torch.device("cpu"), None)
    assert all(p.grad is None for p in model.parameters())  # gradients dropped, as between training steps


# ---------------------------------------------------------------------------------------------- CUDA
@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_amp_step_is_finite_and_updates_weights(dtype):
    from utils.tasks.detect.loss import DetectionLoss

    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    model = _model(device="cuda").train().to(memory_format=torch.channels_last)
    criterion = DetectionLoss(model.model[-1], _hyp())
    optimizer = smart_optimizer(model, "SGD", 0.01, 0.937, 5e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    before = [p.detach().clone() for p in model.parameters()]
    imgs = torch.rand(4, 3, 128, 128, device="cuda").contiguous(memory_format=torch.channels_last)
    targets = _targets(4, device="cuda")
    losses = [_train_step(model, optimizer, scaler, criterion, imgs, targets, dtype) for _ in range(3)]
    assert all(torch.isfinite(x).all() for x in losses)
    changed = sum(not torch.equal(a, p.detach()) for a, p in zip(before, model.parameters()))
    assert changed > 0.9 * len(before)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    if dtype == torch.float16:
        assert scaler.is_enabled() and 0 < scaler.get_scale() <= 65536.0


@cuda
def test_fp16_scaler_skips_a_step_with_inf_gradients():
    model = torch.nn.Linear(4, 2).cuda()
    optimizer = smart_optimizer(model, "SGD", 0.1, 0.9, 0.0)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 16)
    w = model.weight.detach().clone()
    with torch.autocast("cuda", dtype=torch.float16):
        loss = model(torch.full((2, 4), 1e4, device="cuda")).float().sum() * 1e30  # overflows when scaled
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    scaler.step(optimizer)  # fused SGD reads found_inf on the device and leaves the weights alone
    scaler.update()
    assert torch.equal(model.weight.detach(), w) and scaler.get_scale() < 2.0 ** 16


@cuda
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_smart_optimizer_is_fused_on_cuda(name):
    opt = smart_optimizer(_model(device="cuda"), name, 0.01, 0.937, 5e-4)
    assert all(g["fused"] for g in opt.param_groups)
    slow = smart_optimizer(_model(device="cuda"), name, 0.01, 0.937, 5e-4, fast=False)
    assert not any(g.get("fused") or g.get("foreach") for g in slow.param_groups)


@cuda
def test_fused_step_equals_plain_step():
    torch.manual_seed(0)
    a, b = _model(device="cuda"), _model(device="cuda")
    b.load_state_dict(a.state_dict())
    oa = smart_optimizer(a, "SGD", 0.01, 0.937, 5e-4)
    ob = smart_optimizer(b, "SGD", 0.01, 0.937, 5e-4, fast=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        pa.grad = torch.randn_like(pa)
        pb.grad = pa.grad.clone()
    oa.step()
    ob.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


@cuda
def test_ema_on_cuda_matches_cpu_and_follows_channels_last():
    net = _model(device="cuda")
    ema = ModelEMA(net)  # made before the model goes channels_last, as the trainer does
    twin = deepcopy(net).cpu()
    ref = ModelEMA(twin)
    net.to(memory_format=torch.channels_last)
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        twin.load_state_dict(net.state_dict())
        ema.update(net)
        ref.update(twin)
    w = ema.ema.model[0].conv.weight
    assert ema.updates == 3 and w.is_cuda and w.is_contiguous(memory_format=torch.channels_last)
    for (k, v), r in zip(ema.ema.state_dict().items(), ref.ema.state_dict().values()):
        torch.testing.assert_close(v.cpu(), r, rtol=1e-5, atol=1e-6, msg=k)


@cuda
def test_nms_on_cuda_equals_cpu():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 3000, 9, generator=g)
    pred[..., :2] *= 640
    pred[..., 2:4] = pred[..., 2:4] * 120 + 4
    cpu = non_max_suppression(pred, 0.25, 0.45, max_det=300)
    gpu = non_max_suppression(pred.cuda(), 0.25, 0.45, max_det=300)
    for c, d in zip(cpu, gpu):
        assert d.is_cuda and c.shape == d.shape and c.shape[0] > 0
        torch.testing.assert_close(d.cpu(), c)
    boxes = torch.cat((pred[0, :, :2], pred[0, :, :2] + pred[0, :, 2:4]), 1)
    for fn in (nms, nms_torch):
        assert torch.equal(fn(boxes.cuda(), pred[0, :, 4].cuda(), 0.5).cpu(), fn(boxes, pred[0, :, 4], 0.5))


@cuda
def test_channels_last_forward_equals_contiguous():
    model = _model("yolov5s.yaml", nc=80, device="cuda").eval()
    x = torch.rand(2, 3, 256, 256, device="cuda")
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        ref = model(x)[0]
        model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))[0]
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)


@cuda
def test_autobatch_on_cuda_is_sane_and_leaves_the_model_alone(log, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    model = _model(device="cuda").train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    b = autobatch(model, 320, torch.device("cuda"))
    assert 1 <= b <= ab.MAX_BATCH
    assert "AutoBatch" in log.text
    for k, v in model.state_dict().items():  # trial steps ran on a copy: BN statistics untouched
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in model.parameters())


@cuda
def test_autobatch_on_cuda_falls_back_on_absurd_or_failed_trials(log, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    model = _model(device="cuda")
    flat = lambda *a, **k: ([1, 2, 4], [1e9, 1e9, 1e9], None)  # noqa: E731
    assert autobatch(model, 320, torch.device("cuda"), default=7, profile=flat) == 7

    def broken(*a, **k):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    assert autobatch(model, 320, torch.device("cuda"), default=9, profile=broken) == 9
    assert "does not grow" in log.text and "trial steps failed" in log.text


# ---------------------------------------------------------------------------------------------- CUDA engine
def _fit(data: str, project: Path, **kw) -> dict:
    from utils.engine.config import TrainConfig
    from utils.engine.trainer import Trainer
    from utils.tasks.detect.task import DetectionTask

    opts = dict(cfg="yolov5n.yaml", imgsz=64, batch_size=8, workers=0, noplots=True, noautoanchor=True, device="0")
    cfg = TrainConfig(data=data, project=str(project), **{**opts, **kw})  # a test may override any default
    return Trainer(cfg, DetectionTask()).fit()


def _rows(run: Path) -> list[dict]:
    with open(run / "results.csv") as f:
        return [{k.strip(): float(v) for k, v in r.items()} for r in csv.DictReader(f)]


@cuda
@pytest.mark.parametrize("amp", ["auto", "fp16"])
def test_one_epoch_training_on_cuda(tiny_data, tmp_path, monkeypatch, amp):
    import utils.engine.trainer as trainer_mod

    if amp == "fp16":  # the pre-Ampere path (GradScaler on), forced on whatever GPU runs the tests
        monkeypatch.setattr(trainer_mod, "autocast_dtype", lambda device: torch.float16)
    figures = _fit(tiny_data, tmp_path, epochs=1)
    rows = _rows(tmp_path / "exp")
    assert len(rows) == 1 and all(math.isfinite(v) for v in rows[0].values())
    assert rows[0]["train/box_loss"] > 0 and set(figures)
    ck = torch.load(tmp_path / "exp/weights/last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


@cuda
def test_one_epoch_detection_plus_semantic_training_on_cuda(tmp_path):
    from tests.test_semantic_task import write_tiny_semantic
    from utils.engine.config import TrainConfig
    from utils.engine.trainer import Trainer
    from utils.tasks.semantic.task import SemanticOptions, SemanticTask

    data = str(write_tiny_semantic(tmp_path / "data"))
    cfg = TrainConfig(data=data, project=str(tmp_path), cfg="yolov5n-city.yaml", imgsz=64, batch_size=8, workers=0,
                      noplots=True, noautoanchor=True, device="0", epochs=1)
    figures = Trainer(cfg, SemanticTask(SemanticOptions(data=cfg.data))).fit()
    rows = _rows(tmp_path / "exp")
    assert rows[0]["train/seg_loss"] > 0 and all(math.isfinite(v) for v in rows[0].values())
    assert 0 <= figures["metrics/mIoU"] <= 1


@cuda
def test_compiled_one_epoch_training_on_cuda(tiny_data, tmp_path, log):
    _fit(tiny_data, tmp_path, epochs=1, compile=True, noval=True)
    rows = _rows(tmp_path / "exp")
    assert np.isfinite(rows[0]["train/box_loss"])
    assert "torch.compile failed" not in log.text  # the GPU path compiles; the fallback is tested on CPU


@cuda
def test_autobatch_through_the_trainer(tiny_data, tmp_path, log):
    _fit(tiny_data, tmp_path, epochs=1, batch_size=-1, noval=True)
    assert "AutoBatch" in log.text and "CUDA not detected" not in log.text
    assert len(_rows(tmp_path / "exp")) == 1


@cuda
def test_half_validation_leaves_the_callers_fp32_weights_untouched(tiny_data):
    from utils.data.dataset_config import check_dataset
    from utils.engine.evaluator import Evaluator
    from utils.tasks.detect.dataset import create_dataloader
    from utils.tasks.detect.task import DetectionTask

    data = check_dataset(tiny_data)
    loader, _ = create_dataloader(data["val"], 64, 8, 32, workers=0)
    model = _model(device="cuda").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    task = DetectionTask()
    Evaluator(task, loader, data["names"], half=True, training=True)(model)
    assert model.training  # put back as it was
    # an in-place .half()/.float() round trip would have rounded every weight to fp16 precision
    assert all(v.dtype == before[k].dtype and torch.equal(v, before[k]) for k, v in model.state_dict().items())
