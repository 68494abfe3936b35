"""Models: YAML parsing, parameter counts and summaries as upstream v7.0 prints them, fusing, heads, fixture parity."""

from __future__ import annotations

import ast
import logging
import re
from copy import deepcopy

import pytest
import torch
import torch.nn as nn
from conftest import FIXTURES, ROOT, need

from models.build import build_model, main
from models.common import Conv
from models.heads import Detect, Segment
from models.info import model_info
from models.yolo import (
    ClassificationModel,
    DetectionModel,
    SegmentationModel,
    load_yaml_cfg,
    parse_activation,
    parse_model,
)
from utils.log import LOGGER

# (parameters, layers) at nc=80 as upstream v7.0 prints them at build time (spec A5)
COUNTS = {
    "yolov5n": (1872157, 214), "yolov5s": (7235389, 214), "yolov5m": (21190557, 291),
    "yolov5l": (46563709, 368), "yolov5x": (86749405, 445),
    "yolov5n6": (3246940, 281), "yolov5s6": (12626620, 281), "yolov5m6": (35731932, 379),
    "yolov5l6": (76770172, 477), "yolov5x6": (140794780, 575),
    "yolov5n-seg": (1991549, 225), "yolov5s-seg": (7621277, 225), "yolov5m-seg": (21990397, 302),
    "yolov5l-seg": (47924957, 379), "yolov5x-seg": (88819517, 456),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # These models are tiny: on a shared 2-core machine intra-op threads only contend (measured: 8 s vs 70+ s).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def quiet():
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    yield
    LOGGER.setLevel(level)


@pytest.fixture(scope="module")
def yolov5s(quiet):
    return build_model("yolov5s.yaml")


@pytest.fixture(scope="module")
def yolov5n(quiet):
    return build_model("yolov5n.yaml")


def _flat(t) -> list[torch.Tensor]:
    out = []
    for v in t if isinstance(t, (list, tuple)) else [t]:
        out += _flat(v) if isinstance(v, (list, tuple)) else [v]
    return out


def _max_diff(a, b) -> float:
    a, b = _flat(a), _flat(b)
    assert len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b))
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def _max_rel_diff(a, b) -> float:
    """Largest |a - b| / (1 + |b|): fp32 convolutions differ in the last bits between CPU kernels (AVX2/AVX-512)."""
    a, b = _flat(a), _flat(b)
    assert len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b))
    return max(((x - y).abs() / (1 + y.abs())).max().item() for x, y in zip(a, b))


@pytest.mark.parametrize("name", list(COUNTS))
def test_yaml_layer_stack_parameter_counts(name, quiet):
    # The layer stack alone, allocated on the meta device: exact counts for every size without the cost of x/x6.
    with torch.device("meta"):
        model, save = parse_model(load_yaml_cfg(f"{name}.yaml"), [3])
    n_params, n_layers = COUNTS[name]
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert len(list(model.modules())) + 1 == n_layers  # + the model wrapper itself
    assert save == sorted(set(save)) and all(0 <= i < len(model) for i in save)


@pytest.mark.parametrize("name", ["yolov5n", "yolov5n6", "yolov5n-seg"])
def test_built_model_counts_and_strides(name, quiet):
    model = build_model(f"{name}.yaml")
    assert isinstance(model, SegmentationModel if "seg" in name else DetectionModel)
    assert sum(p.numel() for p in model.parameters()) == COUNTS[name][0]
    assert len(list(model.modules())) == COUNTS[name][1]
    expected = [8.0, 16.0, 32.0, 64.0] if name.endswith("6") else [8.0, 16.0, 32.0]
    assert model.stride.tolist() == expected and model.model[-1].stride.tolist() == expected
    assert model.names == {i: f"class{i}" for i in range(80)}
    head = model.model[-1]
    assert f"model.{head.i}.anchors" in model.state_dict() and f"model.{head.i}.stride" not in model.state_dict()


def test_summary_line_yolov5s(yolov5s):
    line = model_info(yolov5s)
    assert line == "YOLOv5s summary: 214 layers, 7235389 parameters, 7235389 gradients, 16.4 GFLOPs"
    assert yolov5s.model[-1].anchors.shape == (3, 3, 2)
    assert torch.allclose(yolov5s.model[-1].anchors[0, 0] * 8, torch.tensor([10.0, 13.0]))


def test_fused_yolov5s_counts(yolov5s):
    fused = deepcopy(yolov5s).fuse()
    assert len(list(fused.modules())) == 157
    assert sum(p.numel() for p in fused.parameters()) == 7225885
    assert model_info(fused).endswith("16.4 GFLOPs")


def test_fuse_numerics(yolov5n):
    model = deepcopy(yolov5n)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():  # non-trivial statistics so that folding actually changes the weights
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    model.eval()
    x = torch.rand(2, 3, 96, 128, generator=g)
    with torch.no_grad():
        before = model(x)
        model.fuse()
        after = model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert _max_diff(before, after) < 1e-4


def test_detect_outputs_by_mode(yolov5n):
    model = deepcopy(yolov5n).eval()
    head = model.model[-1]
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        pred, raw = model(x)
        assert pred.shape == (1, 3 * (8 * 12 + 4 * 6 + 2 * 3), 85)
        assert [tuple(r.shape) for r in raw] == [(1, 3, 8, 12, 85), (1, 3, 4, 6, 85), (1, 3, 2, 3, 85)]
        # decoding: cell (0,0) of level 0, anchor 0
        r = raw[0][0, 0, 0, 0].sigmoid()
        assert torch.allclose(pred[0, 0, :2], (r[:2] * 2 - 0.5) * 8, atol=1e-5)
        assert torch.allclose(pred[0, 0, 2:4], (r[2:4] * 2) ** 2 * head.anchors[0, 0] * 8, atol=1e-4)
        pred2, _ = model(torch.rand(1, 3, 128, 64))  # new shape: grids rebuilt, not reused
        assert pred2.shape[1] == 3 * (16 * 8 + 8 * 4 + 4 * 2)
        head.export = True
        out = model(x)
        assert isinstance(out, tuple) and len(out) == 1 and out[0].shape == pred.shape
    model.train()
    head.export = False
    out = model(x)
    assert isinstance(out, list) and len(out) == 3 and out[0].shape == (1, 3, 8, 12, 85)


def test_segment_outputs_by_mode(quiet):
    model = build_model("yolov5n-seg.yaml").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        pred, proto, raw = model(x)
        assert pred.shape == (1, 3 * (64 + 16 + 4), 117) and proto.shape == (1, 32, 16, 16) and len(raw) == 3
        model.model[-1].export = True
        assert [tuple(t.shape) for t in model(x)] == [tuple(pred.shape), tuple(proto.shape)]
    model.train()
    maps, proto = model(x)
    assert len(maps) == 3 and proto.shape == (1, 32, 16, 16)
    assert isinstance(model.model[-1], Segment) and model.model[-1].proto.cv1.conv.out_channels == 64  # 256 * 0.25


def test_tta_matches_plain_pass_on_kept_part(yolov5n):
    model = deepcopy(yolov5n).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)[0]
        aug, extra = model(x, augment=True)
    assert extra is None and aug.ndim == 3 and aug.shape[-1] == 85
    kept = plain.shape[1] - plain.shape[1] // 21  # the full-size pass loses its coarsest level (1/21 of the cells)
    assert torch.allclose(aug[:, :kept], plain[:, :kept], atol=1e-5)
    assert aug.shape[1] > kept


def test_activation_from_yaml_is_parsed_without_eval(quiet):
    d = load_yaml_cfg("yolov5n.yaml")
    d["activation"] = "nn.LeakyReLU(0.1)"
    model = DetectionModel(d)
    acts = {type(m.act) for m in model.modules() if isinstance(m, Conv)}
    assert acts == {nn.LeakyReLU} and model.model[0].act.negative_slope == 0.1 and model.model[0].act.inplace
    assert isinstance(Conv.default_act, nn.SiLU)  # the YAML's choice does not leak into later models
    assert isinstance(parse_activation("nn.SiLU()"), nn.SiLU)
    for bad in ("__import__('os').system('true')", "nn.Linear(3, 4)", "nn.LeakyReLU(x)", "os.SiLU()"):
        with pytest.raises(ValueError, match="activation"):
            parse_activation(bad)


def test_parse_model_rejects_unknown_module(quiet):
    d = load_yaml_cfg("yolov5n.yaml")
    d["head"][3][2] = "C3Bogus"
    with pytest.raises(ValueError, match=r"layer 13: unknown module 'C3Bogus'"):
        parse_model(d, [3])
    d = load_yaml_cfg("yolov5n.yaml")
    del d["head"]
    with pytest.raises(ValueError, match="missing required key 'head'"):
        parse_model(d, [3])


def test_missing_yaml_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no_such_model.yaml"):
        build_model("no_such_model.yaml")


def test_no_eval_in_models():
    offenders = []
    for p in (ROOT / "models").glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text(), filename=str(p))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
                offenders.append(f"{p.name}:{node.lineno}")
    assert not offenders, offenders


def test_nc_override_and_classification_from_detection_yaml(quiet):
    model = DetectionModel("yolov5n.yaml", nc=3)
    assert model.nc == 3 and model.model[-1].no == 8 and model.yaml["nc"] == 3
    assert sum(p.numel() for p in model.parameters()) == 1767976  # upstream's figure for yolov5n at nc=3
    rebuilt = build_model(model.yaml)  # as a checkpoint rebuilds it: same classes, same summary name
    assert rebuilt.nc == 3 and model_info(rebuilt).startswith("YOLOv5n summary: 214 layers, 1767976 parameters")
    cls = ClassificationModel(model=model, nc=10)
    assert len(cls.model) == 10 and cls.model[-1].linear.out_features == 10
    # the derived YAML rebuilds the same classifier
    again = build_model(cls.yaml)
    assert isinstance(again, ClassificationModel)
    assert [k for k in again.state_dict()] == [k for k in cls.state_dict()]
    assert again(torch.rand(2, 3, 64, 64)).shape == (2, 10)


def test_cli_prints_table_and_summary(quiet):
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    try:
        main(["--cfg", "yolov5n.yaml"])
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(logging.WARNING)
    text = "\n".join(lines)
    assert re.search(r"from\s+n\s+params\s+module\s+arguments", text)
    assert "YOLOv5n summary: 214 layers, 1872157 parameters, 1872157 gradients, 4.5 GFLOPs" in text
    assert "YOLOv5n summary: 157 layers, 1867405 parameters" in text  # the CLI fuses by default


@pytest.mark.parametrize("name", ["det_n", "det_n6", "seg_n"])
def test_fixture_parity(name, quiet):
    d = torch.load(need(FIXTURES / f"{name}.pt"), weights_only=True)
    torch.manual_seed(0)
    model = build_model(d["cfg"], nc=d["nc"])
    # same construction order as upstream: the seeded random init is identical, not just the shapes
    init = model.state_dict()
    assert all(torch.equal(v, d["state_dict"][k]) for k, v in init.items())
    model.load_state_dict(d["state_dict"], strict=True)
    assert sum(p.numel() for p in model.parameters()) == d["n_params"]
    model.eval()
    with torch.no_grad():
        out = model(d["input"])
        assert (out[0] - d["pred"]).abs().max().item() < 1e-4
        if "proto" in d:
            assert (out[1] - d["proto"]).abs().max().item() < 1e-4
        model.train()
        assert _max_rel_diff(model(d["input"]), d["train_out"]) < 1e-4  # batch-statistics BN: less exact


def test_fixture_parity_classifier(quiet):
    d = torch.load(need(FIXTURES / "cls_n.pt"), weights_only=True)
    model = ClassificationModel("yolov5n.yaml", nc=1000)
    assert sum(p.numel() for p in model.parameters()) == d["n_params"] == 2493000
    assert len(list(model.modules())) == 118
    model.load_state_dict(d["state_dict"], strict=True)
    model.eval()
    with torch.no_grad():
        assert (model(d["input"]) - d["logits"]).abs().max().item() < 1e-4


def test_heads_know_their_anchor_units(yolov5n):
    head = yolov5n.model[-1]
    assert isinstance(head, Detect) and head.na == 3 and head.nl == 3
    # anchors are stored in grid units: pixel anchors / stride
    assert torch.allclose(head.anchors[2, 2] * 32, torch.tensor([373.0, 326.0]))


@pytest.mark.parametrize("cfg", ["yolov5n.yaml", "yolov5n-seg.yaml"])
def test_inplace_decode_equals_functional_decode(cfg, quiet):
    model = build_model(cfg).eval()
    head = model.model[-1]
    x = torch.rand(2, 3, 96, 64)
    with torch.inference_mode():
        head.inplace = True
        fast = model(x)
        head.inplace = False
        slow = model(x)
    # the same arithmetic, up to the last bit of SIMD sigmoid on a strided view
    assert torch.allclose(fast[0], slow[0], rtol=1e-6, atol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-6) for a, b in zip(fast[-1], slow[-1]))  # raw maps untouched


def test_activations_in_place_only_at_inference():
    # in training an in-place SiLU makes autograd clone its input (two extra passes over each activation map)
    from models.yolo import INPLACE_ACTIVATIONS

    model = build_model("yolov5n.yaml")
    acts = [m for m in model.modules() if isinstance(m, INPLACE_ACTIVATIONS)]
    assert acts and all(a.inplace for a in model.eval().modules() if isinstance(a, INPLACE_ACTIVATIONS))
    assert not any(a.inplace for a in model.train().modules() if isinstance(a, INPLACE_ACTIVATIONS))


def test_channels_last_training_maps_are_views_with_the_same_loss():
    # a channels_last head output is already (bs, ny, nx, na, no) in memory: no copy, same values and gradients
    torch.manual_seed(0)
    model = build_model("yolov5n.yaml").train()
    x = torch.rand(2, 3, 64, 64)
    ref = model(x)
    grads_ref = torch.autograd.grad(sum((p * p).sum() for p in ref), list(model.parameters()))
    model.to(memory_format=torch.channels_last)
    out = model(x.contiguous(memory_format=torch.channels_last))
    assert all(p.stride(-1) == 1 and not p.is_contiguous() for p in out)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(out, ref))  # layouts round differently
    grads = torch.autograd.grad(sum((p * p).sum() for p in out), list(model.parameters()))
    assert all((a - b).abs().max() <= 1e-3 * b.abs().max() for a, b in zip(grads, grads_ref))
    assert all(p.is_contiguous() for p in model.to(memory_format=torch.contiguous_format)(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cat_channels_gradients(dtype):
    # bf16 channels_last pieces come back dense (strided ones cost CPU SiLU backward 7x), fp32 ones stay views
    from models.common import cat_channels

    maps = [torch.randn(2, c, 5, 7, dtype=dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
            for c in (3, 5)]
    out = cat_channels(maps)
    assert torch.equal(out, torch.cat(maps, 1))
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, maps, g)
    assert torch.equal(grads[0], g[:, :3]) and torch.equal(grads[1], g[:, 3:])
    dense = [t.is_contiguous(memory_format=torch.channels_last) for t in grads]
    assert dense == ([True, True] if dtype == torch.bfloat16 else [False, False])
    with torch.no_grad():
        assert torch.equal(cat_channels(maps), out)


def test_bf16_training_silu_gradients_are_dense(monkeypatch):
    # every concatenation in a -city model (C3, SPPF, neck Concat, semantic head) hands back dense gradients; seen
    # by the SiLU modules, which the fused BatchNorm+SiLU kernel would bypass
    from models import bn_silu

    monkeypatch.setattr(bn_silu, "kernel_library", lambda: None)
    seen = []
    model = build_model("yolov5n-city.yaml").train().to(memory_format=torch.channels_last)
    # the SiLU instance is shared by every Conv of every model (Conv.default_act): the hooks must not outlive the test
    hooks = [m.register_full_backward_hook(lambda mod, gin, gout: seen.append(gout[0].is_contiguous(
        memory_format=torch.channels_last))) for m in model.modules() if isinstance(m, nn.SiLU)]
    try:
        x = torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            det, seg, aux = model(x)  # -city training output: detection maps, class logits, auxiliary logits
        sum(t.float().sum() for t in [*det, seg, *aux]).backward()
    finally:
        for h in hooks:
            h.remove()
    assert seen and all(seen), f"{seen.count(False)} of {len(seen)} SiLU gradients strided"


@pytest.mark.parametrize("cfg", ["yolov5n.yaml", "yolov5s-seg.yaml", "yolov5n-city.yaml",
                                 "hub/yolov5s-transformer.yaml", "hub/yolov5n6.yaml"])
def test_gflops_hooks_match_torch_flop_counter(cfg):
    # the summary's GFLOPs come from layer hooks (1.6 s saved per model build); torch's counter is the reference
    from torch.utils.flop_counter import FlopCounterMode

    from models.info import count_gflops

    model = build_model(cfg).eval()
    s = max(int(model.stride.max()), 32) if isinstance(getattr(model, "stride", None), torch.Tensor) else 32
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, s, s))
    assert count_gflops(model, 640) == pytest.approx(counter.get_total_flops() / 1e9 * (640 / s) ** 2, rel=1e-9)
