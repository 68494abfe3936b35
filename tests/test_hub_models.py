"""Upstream v7.0's models/hub/ YAMLs build here with upstream's parameter counts; the blocks they (and older
releases) name are registered, count as upstream's do and keep upstream's state-dict names."""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT

from models.build import build_model
from models.yolo import load_yaml_cfg, parse_model
from utils.log import quiet

# Parameters at nc=80, as upstream v7.0 builds these YAMLs. Models made only of blocks whose counts test_models.py
# checks against upstream's printed figures (Conv, C3, SPP(F), Bottleneck, Detect) follow from the same parse rules
# (yolov5-panet is yolov5l's architecture, yolov5-p6 is yolov5l6's: both equal those published counts);
# the Ghost and transformer models were derived by hand from the block definitions (see the two tests below).
HUB_COUNTS = {
    "yolov3-spp": 62998749, "yolov3-tiny": 8852366, "yolov3": 61949149,
    "yolov5-bifpn": 46825853, "yolov5-fpn": 41117565, "yolov5-p2": 47493372, "yolov5-p34": 5331518,
    "yolov5-p6": 76770172, "yolov5-p7": 144281723, "yolov5-panet": 46563709,
    "yolov5n6": 3246940, "yolov5s6": 12626620, "yolov5m6": 35731932, "yolov5l6": 76770172, "yolov5x6": 140794780,
    "yolov5s-LeakyReLU": 7235389, "yolov5s-ghost": 3897605, "yolov5s-transformer": 7235645,
}
OUTPUT_STRIDES = {"yolov5-p2": [4, 8, 16, 32], "yolov5-p34": [8, 16], "yolov5-p7": [8, 16, 32, 64, 128],
                  "yolov3-tiny": [16, 32]}


def test_every_hub_yaml_is_shipped():
    shipped = {p.stem for p in (ROOT / "models" / "hub").glob("yolo*.yaml")}
    assert shipped == set(HUB_COUNTS)
    assert (ROOT / "models" / "hub" / "anchors.yaml").is_file()


@pytest.mark.parametrize("name", sorted(HUB_COUNTS))
def test_hub_yaml_parameter_count(name):
    with torch.device("meta"), quiet():  # no memory or init cost for the large ones
        model, _ = parse_model(load_yaml_cfg(f"{name}.yaml"), [3])
    assert sum(p.numel() for p in model.parameters()) == HUB_COUNTS[name]


@pytest.mark.parametrize("name", ["yolov5-p2", "yolov5-p34", "yolov3-tiny", "yolov5s-ghost", "yolov5s-transformer"])
def test_hub_models_build_and_run(name):
    torch.set_num_threads(1)
    with quiet():
        model = build_model(f"{name}.yaml", nc=3)
    assert model.stride.tolist() == OUTPUT_STRIDES.get(name, [8, 16, 32])
    model.eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 128, 128))[0]
    cells = sum((128 // s) ** 2 for s in model.stride.tolist())
    assert y.shape == (1, 3 * cells, 8)


def test_p7_has_five_outputs_and_anchors_from_an_int():
    d = load_yaml_cfg("yolov5-p7.yaml")
    assert d["anchors"] == 3
    with torch.device("meta"), quiet():
        model, _ = parse_model(d, [3])
    head = model[-1]
    assert head.nl == 5 and head.na == 3 and head.anchors.shape == (5, 3, 2)


def _conv(c1: int, c2: int, k: int | tuple = 1, g: int = 1) -> int:
    kk = k * k if isinstance(k, int) else k[0] * k[1]
    return c1 // g * c2 * kk + 2 * c2  # conv weight + BatchNorm weight and bias


def test_ghost_counts_derived_by_hand():
    def ghost(c1, c2, k=1):
        c = c2 // 2
        return _conv(c1, c, k) + _conv(c, c, 5, g=c)

    def c3ghost(c1, c2, n):
        c = c2 // 2
        return 2 * _conv(c1, c) + _conv(2 * c, c2) + n * (ghost(c, c // 2) + ghost(c // 2, c))

    with torch.device("meta"), quiet():
        model, _ = parse_model(load_yaml_cfg("yolov5s-ghost.yaml"), [3])
    expected = {1: ghost(32, 64, 3), 4: c3ghost(128, 128, 2), 8: c3ghost(512, 512, 1), 21: ghost(256, 256, 3)}
    assert {i: model[i].np for i in expected} == expected


def test_blocks_counts_derived_by_hand_and_upstream_names():
    d = {"nc": 1, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": 1, "backbone": [
        [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "BottleneckCSP", [64]], [-1, 1, "C3x", [64]], [-1, 1, "C3SPP", [64]],
        [-1, 1, "C3TR", [64]], [-1, 1, "CrossConv", [64]], [-1, 1, "MixConv2d", [64, [1, 3]]],
        [-1, 1, "GhostBottleneck", [64, 3, 2]], [-1, 1, "Focus", [64, 3]], [-1, 1, "SPP", [64, [5, 9, 13]]],
        [-1, 1, "Contract", [2]], [-1, 1, "Expand", [2]], [-1, 1, "DWConv", [64, 3]]], "head": []}
    with quiet():
        model, _ = parse_model(d, [3])
    b32 = _conv(32, 32) + _conv(32, 32, 3)  # Bottleneck(32, 32)
    csp = _conv(64, 32) + 64 * 32 + 32 * 32 + _conv(64, 64) + 2 * 64 + b32
    c3_outer = 2 * _conv(64, 32) + _conv(64, 64)
    c3x = c3_outer + _conv(32, 32, (1, 3)) + _conv(32, 32, (3, 1))
    c3spp = c3_outer + _conv(32, 16) + _conv(64, 32)
    c3tr = c3_outer + (32 * 32 + 32) + 5 * 32 * 32 + (3 * 32 * 32 + 3 * 32 + 32 * 32 + 32)
    assert [model[i].np for i in range(1, 6)] == [csp, c3x, c3spp, c3tr, _conv(64, 64, (1, 3)) + _conv(64, 64, (3, 1))]
    keys = model.state_dict().keys()
    for k in ("1.cv2.weight", "1.bn.running_var", "4.m.tr.0.ma.in_proj_weight", "4.m.linear.bias",
              "4.m.tr.0.fc2.weight", "7.conv.0.cv2.conv.weight", "7.shortcut.1.conv.weight", "8.conv.conv.weight",
              "3.m.cv2.bn.bias"):
        assert k in keys
    with torch.no_grad():
        y = model.eval()(torch.rand(1, 3, 64, 64))
    assert y.shape == (1, 64, 8, 8)  # stride-2 Conv, stride-2 ghost, Focus: 64 -> 8; Contract/Expand round trip
