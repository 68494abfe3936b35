"""ModelEMA: the decay formula, buffers included, foreach path equal to a plain loop, attributes and state."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from utils.ema import ModelEMA


def _net():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.SiLU(), nn.Conv2d(4, 2, 1))
    net.names = {0: "a", 1: "b"}
    return net


def _perturb(net):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    net.train()
    net(torch.randn(2, 3, 8, 8))  # moves the BN running statistics


def test_one_update_equals_formula_including_buffers():
    net = _net()
    ema = ModelEMA(net, updates=0)
    before = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    _perturb(net)
    ema.update(net)
    d = 0.9999 * (1 - math.exp(-1 / 2000))
    assert ema.updates == 1 and abs(ema.decay() - d) < 1e-15
    msd = net.state_dict()
    for k, v in ema.ema.state_dict().items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, before[k] * d + (1 - d) * msd[k], rtol=1e-6, atol=1e-7)
    assert not torch.equal(ema.ema[1].running_mean, before["1.running_mean"])  # buffers move too
    assert ema.ema[1].num_batches_tracked == before["1.num_batches_tracked"]  # integer buffers untouched


def test_foreach_path_equals_naive_loop_over_steps():
    net = _net()
    ema = ModelEMA(net, updates=500)
    naive = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    for step in range(5):
        _perturb(net)
        ema.update(net)
        d = 0.9999 * (1 - math.exp(-(501 + step) / 2000))
        for k, v in net.state_dict().items():
            if v.dtype.is_floating_point:
                naive[k] = naive[k] * d + (1 - d) * v
    for k, v in ema.ema.state_dict().items():
        torch.testing.assert_close(v, naive[k], rtol=1e-6, atol=1e-6)


def test_ema_is_eval_without_grad_and_wrapped_models_work():
    net = _net()
    ema = ModelEMA(nn.DataParallel(net))
    assert not ema.ema.training and not any(p.requires_grad for p in ema.ema.parameters())
    _perturb(net)
    ema.update(nn.DataParallel(net))  # .module is used: same cached list, no error
    assert ema.updates == 1


def test_update_attr_and_state_round_trip():
    net = _net()
    ema = ModelEMA(net)
    net.names = {0: "x", 1: "y"}
    net.process_group = "not copied"
    net.train()
    ema.update_attr(net, include=("names",))
    assert ema.ema.names == {0: "x", 1: "y"} and not hasattr(ema.ema, "process_group")
    ema.update_attr(net)
    assert not hasattr(ema.ema, "process_group") and not ema.ema.training
    _perturb(net)
    ema.update(net)
    state = ema.state_dict()
    other = ModelEMA(_net())
    other.load_state_dict(state)
    assert other.updates == 1
    for k, v in other.ema.state_dict().items():
        assert torch.equal(v, ema.ema.state_dict()[k])
    _perturb(net)
    other.update(net)  # cached lists still point at the loaded tensors
    ema.update(net)
    torch.testing.assert_close(other.ema[0].weight, ema.ema[0].weight)


def test_ema_made_before_channels_last_follows_the_model_layout():
    net = _net()
    ema = ModelEMA(net)  # the trainer makes the EMA first, then turns the model channels_last
    before = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    net.to(memory_format=torch.channels_last)
    _perturb(net)
    ema.update(net)
    w = ema.ema[0].weight
    # same strides as the model, so foreach takes its one-launch path; same objects, so the caches stay valid
    assert w.is_contiguous(memory_format=torch.channels_last) and isinstance(w, nn.Parameter)
    assert w is ema._ema_list[0]
    d, msd = ema.decay(), net.state_dict()
    for k, v in ema.ema.state_dict().items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, before[k] * d + (1 - d) * msd[k], rtol=1e-6, atol=1e-7)
