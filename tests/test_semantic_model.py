"""Detection + semantic segmentation model: semantic heads, YAML wiring, outputs by mode, detector unchanged by the
head, fuse, checkpoints, TTA, ONNX export at several sizes."""

from __future__ import annotations

import io
import logging
import warnings
from copy import deepcopy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.build import build_model, main
from models.common import Concat, Conv
from models.heads import Detect
from models.multitask import SemanticDetectionModel, descale_seg
from models.registry import lookup
from models.semantic import (
    SEMANTIC_HEADS,
    BiasConv,
    SemanticBiSe,
    SemanticPSP,
    adaptive_avg_pools,
    matrix_avg_pools,
    neck_concat_levels,
    with_semantic_head,
)
from models.yolo import (
    DetectionModel,
    load_yaml_cfg,
    parse_model,
    scale_img,
)
from utils.checkpoint import (
    build_from_checkpoint,
    load_checkpoint,
    load_model,
    make_checkpoint,
    save_checkpoint,
    task_of,
)
from utils.log import LOGGER


@pytest.fixture(scope="module", autouse=True)
def _setup():
    n, level = torch.get_num_threads(), LOGGER.level
    torch.set_num_threads(1)  # small models on a shared 2-core machine: threads only contend
    LOGGER.setLevel(logging.WARNING)
    yield
    torch.set_num_threads(n)
    LOGGER.setLevel(level)


def _randomise_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so outputs are not near zero and fusing changes weights."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def psp_n():
    return _randomise_bn(build_model("yolov5n-city.yaml")).eval()


@pytest.fixture(scope="module")
def bise_n():
    return _randomise_bn(build_model(with_semantic_head(load_yaml_cfg("yolov5n-city.yaml"), "bise"))).eval()


def _det_shapes(h: int, w: int, nc: int) -> list[tuple]:
    return [(1, 3, h // s, w // s, nc + 5) for s in (8, 16, 32)]


# ---- pooling that exports at any size -------------------------------------------------------------------------------

@pytest.mark.parametrize("hw", [(1, 1), (5, 7), (12, 20), (16, 24), (28, 44), (40, 64), (64, 128)])
def test_matrix_adaptive_pool_equals_torch(hw):
    # the form exports use: exact against PyTorch's own bins at sizes the bins divide and at sizes they do not
    x = torch.randn(2, 3, *hw)
    for xi in (x, x.contiguous(memory_format=torch.channels_last)):
        for k, p, q in zip((1, 2, 3, 6), matrix_avg_pools(xi, (1, 2, 3, 6)), adaptive_avg_pools(xi, (1, 2, 3, 6))):
            ref = F.adaptive_avg_pool2d(xi, k)
            assert p.shape == (2, 3, k, k) and torch.allclose(p, ref, atol=1e-5) and torch.equal(q, ref)


# ---- YAML wiring -----------------------------------------------------------------------------------------------------

def test_city_yaml_reads_neck_concats_before_c3(psp_n):
    d = load_yaml_cfg("yolov5s-city.yaml")
    rows = d["backbone"] + d["head"]
    assert d["semantic"][0][0] == [16, 19, 22] == neck_concat_levels(d)
    for j, det_in in zip([16, 19, 22], rows[-1][0]):  # each is the Concat feeding the C3 that Detect reads
        assert lookup(rows[j][2]) is Concat and rows[det_in][0] == -1 and det_in == j + 1
    assert neck_concat_levels(load_yaml_cfg("yolov5n6.yaml")) == [22, 25, 28]  # P3-P5 of a P6 model
    head = psp_n.semantic[-1]
    assert isinstance(head, SemanticPSP) and head.i == 25 and head.f == [16, 19, 22]
    assert {16, 19, 22} <= set(psp_n.save)
    assert any(k.startswith("semantic.25.") for k in psp_n.state_dict())
    assert not any(k.startswith("model.25") for k in psp_n.state_dict())


@pytest.mark.parametrize("size,chans,hidden", [("n", [128, 128, 256], 64), ("s", [256, 256, 512], 128),
                                               ("m", [384, 384, 768], 192)])
def test_city_yamls_build_on_meta(size, chans, hidden):
    # the whole stack on the meta device: every size checked for the cost of parsing only
    with torch.device("meta"):
        layers, save = parse_model(load_yaml_cfg(f"yolov5{size}-city.yaml"), [3])
    head = layers[-1]
    assert isinstance(head, SemanticPSP) and isinstance(layers[-2], Detect) and len(layers) == 26
    assert [m.conv.in_channels for m in head.reduce] == chans and head.cls.in_channels == hidden
    assert head.cls.out_channels == 19 and {16, 19, 22} <= set(save)


def test_with_semantic_head_on_plain_yaml_matches_city_yaml():
    plain, city = load_yaml_cfg("yolov5n.yaml"), load_yaml_cfg("yolov5n-city.yaml")
    d = with_semantic_head(plain, "psp", nc_seg=19)
    assert d["semantic"] == city["semantic"] and d["nc_seg"] == 19 and "semantic" not in plain
    assert with_semantic_head(plain, "bise")["semantic"][0][2] == SEMANTIC_HEADS["bise"] == "SemanticBiSe"
    with pytest.raises(ValueError, match="unknown semantic head 'fcn'"):
        with_semantic_head(plain, "fcn")


def test_parse_uses_registry_and_rejects_bad_rows():
    assert lookup("SemanticPSP") is SemanticPSP and lookup("SemanticBiSe") is SemanticBiSe
    d = load_yaml_cfg("yolov5n-city.yaml")
    bad = deepcopy(d)
    bad["semantic"][0][2] = "__import__('os').system('echo hi')"  # never evaluated: just an unknown name
    with pytest.raises(ValueError, match="layer 25: unknown module"):
        build_model(bad)
    no_nc = deepcopy(d)
    del no_nc["nc_seg"]
    with pytest.raises(ValueError, match="needs nc_seg"):
        build_model(no_nc)
    reads_detect = deepcopy(d)
    reads_detect["semantic"][0][0] = [16, 19, -1]
    with pytest.raises(ValueError, match="not Detect's output"):
        build_model(reads_detect)
    not_a_head = deepcopy(d)
    not_a_head["semantic"] = [[22, 1, "Conv", [64, 1]]]
    with pytest.raises(ValueError, match="must end with a semantic head"):
        build_model(not_a_head)
    wrong_levels = deepcopy(d)
    wrong_levels["semantic"][0][0] = [19, 19, 22]  # strides 16, 16, 32: logits at half the input size
    with pytest.raises(ValueError, match="strides 8, 16, 32"):
        build_model(wrong_levels)
    seg_head = load_yaml_cfg("yolov5n-seg.yaml")
    with pytest.raises(ValueError, match="needs a Detect head"):
        build_model(with_semantic_head(seg_head, "psp", nc_seg=3))


def test_any_detection_yaml_takes_a_semantic_head():
    model = build_model(with_semantic_head(load_yaml_cfg("yolov5n6.yaml"), "psp", nc_seg=3)).eval()
    with torch.no_grad():
        pred, maps, seg = model(torch.rand(1, 3, 128, 192))
    assert len(maps) == 4 and seg.shape == (1, 3, 128, 192) and model.semantic[-1].f == [22, 25, 28]


def test_yaml_activation_reaches_the_semantic_head():
    d = with_semantic_head(load_yaml_cfg("yolov5n-city.yaml"), "bise")
    d["activation"] = "nn.LeakyReLU(0.1)"
    head = build_model(d).semantic[-1]
    acts = {type(m.act) for m in head.modules() if isinstance(m, Conv)}
    assert acts == {nn.LeakyReLU, nn.Sigmoid}  # the attention gate keeps its sigmoid
    assert any(isinstance(m, BiasConv) and isinstance(m.act, nn.LeakyReLU) for m in head.modules())


def test_nc_and_nc_seg_overrides():
    m = build_model("yolov5n-city.yaml", nc=4, nc_seg=7)
    assert isinstance(m, SemanticDetectionModel) and m.nc == 4 and m.nc_seg == 7 and m.yaml["nc_seg"] == 7
    assert m.seg_names == {i: f"class{i}" for i in range(7)} and m.semantic[-1].cls.out_channels == 7
    with pytest.raises(ValueError, match="no semantic section"):
        build_model("yolov5n.yaml", nc_seg=7)


# ---- outputs by mode -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hw", [(128, 256), (96, 160), (224, 352)])  # 1/8 maps 16x32, 12x20, 28x44: bins 3, 6 odd
def test_outputs_by_mode_psp(psp_n, hw):
    model = deepcopy(psp_n)
    h, w = hw
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        pred, maps, seg = model(x)
        assert pred.shape == (1, 3 * sum((h // s) * (w // s) for s in (8, 16, 32)), 15)
        assert [tuple(t.shape) for t in maps] == _det_shapes(h, w, 10) and seg.shape == (1, 19, h, w)
        model.model[-1].export = True
        out = model(x)
        assert len(out) == 2 and torch.equal(out[0], pred) and torch.equal(out[1], seg)
    model.model[-1].export = False
    model.train()
    maps_t, seg_t, aux = model(x)
    assert [tuple(t.shape) for t in maps_t] == _det_shapes(h, w, 10) and seg_t.shape == (1, 19, h, w) and aux == []


def test_outputs_by_mode_bise_and_small_s():
    x = torch.rand(2, 3, 96, 160)
    bise = build_model(with_semantic_head(load_yaml_cfg("yolov5n-city.yaml"), "bise"))
    maps, seg, aux = bise(x)  # training: two auxiliary logits, both at the input size
    assert [tuple(t.shape) for t in maps][0] == (2, 3, 12, 20, 15) and seg.shape == (2, 19, 96, 160)
    assert [tuple(a.shape) for a in aux] == [(2, 19, 96, 160)] * 2
    bise.eval()
    with torch.no_grad():
        out = bise(x)
    assert len(out) == 3 and out[2].shape == (2, 19, 96, 160)  # no auxiliary work in eval
    s = build_model("yolov5s-city.yaml", nc_seg=5).eval()
    with torch.no_grad():
        pred, maps, seg = s(torch.rand(1, 3, 64, 64))
    assert pred.shape == (1, 252, 15) and seg.shape == (1, 5, 64, 64)


def test_batch_of_one_trains_and_gradients_reach_both_heads():
    # no BatchNorm sees a globally pooled map, so a batch of one image trains (the reference skipped such batches)
    for head in ("psp", "bise"):
        model = build_model(with_semantic_head(load_yaml_cfg("yolov5n-city.yaml"), head)).train()
        maps, seg, aux = model(torch.rand(1, 3, 64, 96))
        (seg.square().mean() + sum(a.mean() for a in aux)).backward()
        assert model.semantic[-1].cls.weight.grad.abs().sum() > 0
        assert model.model[4].cv1.conv.weight.grad is not None  # backbone C3 4 feeds Concat 16
        assert model.model[-1].m[0].weight.grad is None  # the detection loss alone reaches Detect


# ---- the detector is unchanged by the head ---------------------------------------------------------------------------

def test_detector_unchanged_by_semantic_head(psp_n):
    plain = DetectionModel("yolov5n.yaml", nc=10)
    det_keys = {k: v for k, v in psp_n.state_dict().items() if not k.startswith("semantic.")}
    plain.load_state_dict(det_keys, strict=True)  # same layers, same keys
    assert set(det_keys) == set(plain.state_dict())
    plain.eval()
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        pred, maps, _ = psp_n(x)
        pred0, maps0 = plain(x)
    assert torch.equal(pred, pred0) and all(torch.equal(a, b) for a, b in zip(maps, maps0))
    n_head = sum(p.numel() for p in psp_n.semantic.parameters())
    assert sum(p.numel() for p in psp_n.parameters()) - n_head == sum(p.numel() for p in plain.parameters())
    stripped = DetectionModel("yolov5n-city.yaml")  # DetectionModel leaves a YAML's semantic section out
    assert "semantic" not in stripped.yaml and "nc_seg" not in stripped.yaml and not hasattr(stripped, "semantic")
    assert set(stripped.state_dict()) == set(det_keys)


# ---- fuse, layouts, copies, summaries --------------------------------------------------------------------------------

def test_fuse_channels_last_deepcopy_keep_outputs(psp_n, bise_n):
    x = torch.rand(1, 3, 96, 160)
    for model in (psp_n, bise_n):
        with torch.no_grad():
            before = model(x)
            m = deepcopy(model).fuse()
            assert not any(isinstance(b, nn.BatchNorm2d) for b in m.modules())
            fused = m(x)
            m.to(memory_format=torch.channels_last)
            cl = m(x.contiguous(memory_format=torch.channels_last))
        for out in (fused, cl):
            assert (out[0] - before[0]).abs().max() < 1e-3 and (out[2] - before[2]).abs().max() < 1e-4
        assert before[2].abs().mean() > 1e-3  # the comparison is not between near-zero maps


def test_summary_and_cli_table(psp_n, log):
    line = psp_n.info()
    assert line.startswith("YOLOv5n-city summary:") and line.endswith("GFLOPs")
    assert f"{sum(p.numel() for p in psp_n.parameters())} parameters" in line
    LOGGER.setLevel(logging.INFO)
    try:
        main(["--cfg", "yolov5n-city.yaml"])
    finally:
        LOGGER.setLevel(logging.WARNING)
    text = log.text
    assert "[16, 19, 22]" in text and "models.semantic.SemanticPSP" in text and "YOLOv5n-city summary" in text


# ---- checkpoints -----------------------------------------------------------------------------------------------------

def test_checkpoint_round_trip(psp_n, tmp_path):
    model = deepcopy(psp_n)
    model.names = {i: f"det{i}" for i in range(10)}
    model.seg_names = {i: f"seg{i}" for i in range(19)}
    assert task_of(model) == "semantic"
    ck = make_checkpoint(model, half=False)
    assert ck["task"] == "semantic" and ck["nc_seg"] == 19 and ck["seg_names"][3] == "seg3"
    path = save_checkpoint(ck, tmp_path / "city.pt")
    loaded = load_checkpoint(path)
    rebuilt = build_from_checkpoint(loaded, path).eval()
    assert isinstance(rebuilt, SemanticDetectionModel) and rebuilt.seg_names == model.seg_names
    assert rebuilt.names == model.names and rebuilt.nc_seg == 19
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        a, b = model(x), rebuilt(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    save_checkpoint(make_checkpoint(model), tmp_path / "half.pt")  # FP16, as training's final files
    inf = load_model(tmp_path / "half.pt")  # fused, channels_last, eval
    with torch.no_grad():
        c = inf(x)
    assert isinstance(inf, SemanticDetectionModel) and c[2].shape == a[2].shape
    assert (c[2] - a[2]).abs().max() < 0.05 * a[2].abs().max()  # FP16 weights


# ---- test-time augmentation ------------------------------------------------------------------------------------------

def test_descale_seg_undoes_scale_and_flip():
    h, w = 64, 96
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack((xx, yy, xx * yy))[None]  # smooth, asymmetric in both axes
    for scale, flip in ((1, None), (0.83, 3), (0.67, None)):
        seen = scale_img(img.flip(flip) if flip else img, scale, gs=32)  # what the model sees
        assert seen.shape[-1] % 32 == 0
        back = descale_seg(seen, flip, scale, (h, w))
        assert back.shape == img.shape and (back - img).abs().max() < 0.03


def test_tta_merges_detections_and_seg(psp_n):
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        det, none, seg = psp_n(x, augment=True)
        plain = psp_n(x)
    assert none is None and det.ndim == 3 and det.shape[-1] == 15 and seg.shape == (1, 19, 64, 96)
    assert torch.allclose(seg.exp().sum(1), torch.ones(1, 64, 96), atol=1e-4)  # log of averaged probabilities
    assert (seg.argmax(1) == plain[2].argmax(1)).float().mean() > 0.5  # the unscaled pass is one of three
    with pytest.raises(RuntimeError, match="eval mode"):
        deepcopy(psp_n).train()(x, augment=True)


# ---- ONNX ------------------------------------------------------------------------------------------------------------

def _onnx(model: nn.Module, x: torch.Tensor, dynamic: bool = False):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    m = deepcopy(model).eval()
    m.model[-1].export = True
    f = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about shape-dependent Python values
        torch.onnx.export(m, x, f, opset_version=17, dynamo=False, input_names=["images"],
                          output_names=["det", "seg"],
                          dynamic_axes={"images": {0: "b", 2: "h", 3: "w"}} if dynamic else None)
    return m, ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])


def _check_onnx(m: nn.Module, sess, x: torch.Tensor) -> None:
    with torch.no_grad():
        det, seg = m(x)
    det_o, seg_o = sess.run(None, {"images": x.numpy()})
    assert det_o.shape == tuple(det.shape) and seg_o.shape == tuple(seg.shape) == (x.shape[0], 19, *x.shape[2:])
    assert abs(det_o - det.numpy()).max() < 1e-3 and abs(seg_o - seg.numpy()).max() < 1e-3


@pytest.mark.parametrize("hw", [(128, 256), (192, 320)])  # 1/8 maps 16x32 and 24x40: 6 bins divide neither
def test_onnx_export_psp_at_fixed_sizes(psp_n, hw):
    x = torch.rand(1, 3, *hw)
    m, sess = _onnx(psp_n, x)
    _check_onnx(m, sess, x)


def test_onnx_export_dynamic_shape_psp_and_bise(psp_n, bise_n):
    m, sess = _onnx(psp_n, torch.rand(1, 3, 128, 256), dynamic=True)
    for hw in ((96, 160), (224, 352)):  # one graph, other sizes and batch
        _check_onnx(m, sess, torch.rand(2, 3, *hw))
    x = torch.rand(1, 3, 96, 160)
    m, sess = _onnx(bise_n, x)
    _check_onnx(m, sess, x)


# ---- cost benchmark --------------------------------------------------------------------------------------------------

def test_semantic_cost_benchmark_functions():
    from benchmarks.semantic_cost import build, count, memory, timings

    plain, psp = (count(build("yolov5n-city.yaml", head), (64, 128)) for head in ("plain", "psp"))
    assert plain["head_params"] == 0 and psp["params"] - psp["head_params"] == plain["params"]
    assert psp["gflops"] > plain["gflops"] > 0
    assert memory("yolov5n-city.yaml", "bise", (64, 128), torch.device("cpu"))["peak_mb"] >= 0
    ms = timings("yolov5n-city.yaml", ["plain", "psp"], (64, 128), torch.device("cpu"), reps=1)
    assert set(ms) == {"plain", "psp"} and min(ms.values()) > 0
