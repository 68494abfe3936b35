"""Optimizer groups, schedules, warmup and gradient clipping."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from utils.errors import ConfigError
from utils.optim import clip_gradients, lr_lambda, nominal_accumulate, scale_weight_decay, smart_optimizer, warmup

HYP = {"lr0": 0.01, "momentum": 0.937, "warmup_momentum": 0.8, "warmup_bias_lr": 0.1}


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.ln = nn.LayerNorm(8)
        self.head = nn.Conv2d(8, 4, 1)


def test_groups_membership_order_and_decay():
    net = _Net()
    opt = smart_optimizer(net, "SGD", lr=0.01, momentum=0.937, decay=5e-4)
    g0, g1, g2 = opt.param_groups
    ids = [{id(p) for p in g["params"]} for g in opt.param_groups]
    assert ids[0] == {id(net.bn.bias), id(net.ln.bias), id(net.head.bias)}
    assert ids[1] == {id(net.conv.weight), id(net.head.weight)}
    assert ids[2] == {id(net.bn.weight), id(net.ln.weight)}  # any *Norm* layer's weight
    assert (g0["weight_decay"], g1["weight_decay"], g2["weight_decay"]) == (0.0, 5e-4, 0.0)
    assert g0["nesterov"] and g0["momentum"] == 0.937 and g0["lr"] == 0.01
    assert isinstance(opt, torch.optim.SGD) and g0["fused"]  # fused kernels on the CPU too


def test_lr_mult_gives_a_prefix_its_own_three_groups_through_warmup_and_schedule():
    """The semantic head trains at seg_lr_mult x the LR: its biases, weights and norm weights form groups 3-5."""
    net = _Net()
    opt = smart_optimizer(net, "SGD", lr=0.01, momentum=0.937, decay=5e-4, lr_mult={"head.": 10.0, "nothing.": 3.0})
    ids = [{id(p) for p in g["params"]} for g in opt.param_groups]
    assert ids == [{id(net.bn.bias), id(net.ln.bias)}, {id(net.conv.weight)}, {id(net.bn.weight), id(net.ln.weight)},
                   {id(net.head.bias)}, {id(net.head.weight)}, set()]  # no norm layer in the head; "nothing." adds none
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01] * 3 + [0.1] * 3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4, 0.0, 0.0, 5e-4, 0.0]
    lf = lr_lambda(0.01, 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lf)
    warmup(opt, 0, 300, 0, lf, HYP)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0, 0, 1.0, 0, 0])  # bias groups start high
    warmup(opt, 300, 300, 0, lf, HYP)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01] * 3 + [0.1] * 3)
    for _ in range(5):
        opt.step()  # no gradients: nothing moves, but the scheduler sees the usual order
        sched.step()
    assert opt.param_groups[4]["lr"] == pytest.approx(10 * opt.param_groups[1]["lr"]) == pytest.approx(0.1 * lf(5))
    plain = smart_optimizer(_Net(), "SGD", lr=0.01, lr_mult={"head.": 1.0})  # x1: upstream's three groups
    assert len(plain.param_groups) == 3


@pytest.mark.parametrize("name,cls", [("Adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW),
                                      ("RMSProp", torch.optim.RMSprop)])
def test_other_optimizers(name, cls):
    opt = smart_optimizer(_Net(), name, lr=0.001, momentum=0.9, decay=1e-4)
    assert isinstance(opt, cls)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 1e-4, 0.0]
    if name.startswith("Adam"):
        assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    with pytest.raises(ConfigError, match="Lion"):
        smart_optimizer(_Net(), "Lion")


def test_log_line(caplog):
    import logging

    from utils.log import LOGGER
    LOGGER.propagate = True
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER.name):
            smart_optimizer(_Net(), "SGD", lr=0.01, decay=5e-4)
    finally:
        LOGGER.propagate = False
    assert "SGD(lr=0.01) with parameter groups 2 weight(decay=0.0), 2 weight(decay=0.0005), 3 bias" in caplog.text


def test_lr_lambda_linear_and_cosine():
    lin = lr_lambda(0.01, 100)
    assert lin(0) == pytest.approx(1.0) and lin(50) == pytest.approx(0.505) and lin(100) == pytest.approx(0.01)
    cos = lr_lambda(0.1, 100, cos=True)
    assert cos(0) == pytest.approx(1.0) and cos(50) == pytest.approx(0.55) and cos(100) == pytest.approx(0.1)
    assert cos(25) == pytest.approx(((1 - math.cos(math.pi / 4)) / 2) * (0.1 - 1) + 1)


def test_warmup_values_by_hand():
    net = _Net()
    opt = smart_optimizer(net, "SGD", lr=0.01, momentum=0.937, decay=5e-4)
    lf = lr_lambda(0.01, 10)
    torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lf)  # sets initial_lr like the trainer does
    acc = warmup(opt, 0, 300, 0, lf, HYP, nbs=64, batch_size=16)
    assert acc == 1
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.0, 0.0])
    assert all(g["momentum"] == pytest.approx(0.8) for g in opt.param_groups)
    acc = warmup(opt, 150, 300, 1, lf, HYP, nbs=64, batch_size=16)
    target = 0.01 * lf(1)
    assert acc == 2  # interp(150, [0, 300], [1, 4]) = 2.5 -> numpy rounds half to even
    assert opt.param_groups[0]["lr"] == pytest.approx((0.1 + target) / 2)
    assert opt.param_groups[1]["lr"] == pytest.approx(target / 2) == opt.param_groups[2]["lr"]
    assert opt.param_groups[1]["momentum"] == pytest.approx((0.8 + 0.937) / 2)
    assert warmup(opt, 300, 300, 1, lf, HYP, nbs=64, batch_size=16) == 4


def test_accumulate_and_decay_scaling():
    assert nominal_accumulate(16) == 4 and nominal_accumulate(128) == 1 and nominal_accumulate(24) == 3
    assert scale_weight_decay(5e-4, 16, 4) == pytest.approx(5e-4)
    assert scale_weight_decay(5e-4, 128, 1) == pytest.approx(1e-3)


def test_clip_gradients():
    net = _Net()
    for p in net.parameters():
        p.grad = torch.full_like(p, 10.0)
    norm = clip_gradients(net, 10.0)
    assert norm > 10
    total = torch.cat([p.grad.flatten() for p in net.parameters()]).norm()
    assert total == pytest.approx(10.0, rel=1e-4)


@pytest.mark.parametrize("name", ["SGD", "AdamW", "Adam"])
def test_fused_cpu_steps_match_the_plain_loop(name):
    # CPU training steps with fused kernels (3x faster than foreach here) must move the weights as the plain loop does
    def make():
        return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 4, 1))

    torch.manual_seed(0)
    fused_net, plain_net = make(), make()
    plain_net.load_state_dict(fused_net.state_dict())
    fused = smart_optimizer(fused_net, name, lr=0.01, momentum=0.9, decay=5e-4)
    plain = smart_optimizer(plain_net, name, lr=0.01, momentum=0.9, decay=5e-4, fast=False)
    assert fused.param_groups[0].get("fused") and not plain.param_groups[0].get("fused")
    for step in range(4):
        for net, opt in ((fused_net, fused), (plain_net, plain)):
            opt.zero_grad()
            torch.manual_seed(step)
            net(torch.randn(2, 3, 8, 8)).square().mean().backward()
            opt.step()
    for a, b in zip(fused_net.parameters(), plain_net.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_plain_loop_optimizer_for_baselines():
    opt = smart_optimizer(_Net(), "SGD", lr=0.01, momentum=0.937, decay=5e-4, fast=False)
    assert all(g["foreach"] is False and not g.get("fused") for g in opt.param_groups)


def test_sgd_step_after_a_skipped_first_step_is_a_first_step(monkeypatch):
    """Fused SGD + GradScaler: a first step skipped on inf gradients leaves no garbage momentum (GPU: NaN weights)."""
    import utils.optim as optim

    monkeypatch.setattr(optim, "_fast_kwargs", lambda *a, **k: {"fused": True})  # the CUDA path, on the CPU kernel
    model, ref = nn.Linear(3, 2), nn.Linear(3, 2)
    ref.load_state_dict(model.state_dict())
    opt = smart_optimizer(model, "SGD", 0.1, 0.9, 0.0)
    plain = smart_optimizer(ref, "SGD", 0.1, 0.9, 0.0, fast=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    x = torch.ones(1, 3)
    with monkeypatch.context() as m:  # uninitialised memory made visible: what a reused CUDA block holds
        m.setattr(torch, "empty_like", lambda t, *a, **k: torch.full_like(t, float("nan")))
        for overflow in (True, False):
            opt.zero_grad()
            scaler.scale(model(x).sum() * (float("inf") if overflow else 1.0)).backward()
            scaler.unscale_(opt)
            scaler.step(opt)
            scaler.update()
    ref(x).sum().backward()
    plain.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b)
