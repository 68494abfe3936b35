"""NMS: upstream parity on stored predictions, the pure-torch kernel against a brute-force reference, YOLO NMS rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIXTURES, need

from utils import nms as nms_mod
from utils.nms import MAX_WH, nms, nms_onnxruntime, nms_torch, non_max_suppression


def brute_force_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> torch.Tensor:
    """Greedy NMS one box at a time in numpy float32 (torchvision's arithmetic), compared in double."""
    b = boxes.numpy().astype(np.float32)
    order = np.argsort(-scores.numpy(), kind="stable")
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    suppressed = np.zeros(len(b), bool)
    keep = []
    for a, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[a + 1:]
        w = np.maximum(np.float32(0), np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]))
        h = np.maximum(np.float32(0), np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]))
        inter = w * h
        iou = inter / (area[i] + area[rest] - inter)
        suppressed[rest[iou.astype(np.float64) > thr]] = True
    return torch.tensor(keep, dtype=torch.long)


def random_boxes(n: int, spread: float = 640, nc: int = 1, size=(10, 120), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * spread
    wh = torch.rand(n, 2, generator=g) * (size[1] - size[0]) + size[0]
    cls = torch.randint(0, nc, (n, 1), generator=g).float()
    return torch.cat((xy, xy + wh), 1) + cls * MAX_WH, torch.rand(n, generator=g)


@pytest.mark.parametrize("n, nc, size, thr", [(200, 1, (10, 120), 0.45), (1500, 1, (10, 120), 0.6),
                                              (3000, 40, (10, 120), 0.5), (2000, 1, (2, 20), 0.3)])
def test_pure_torch_nms_equals_brute_force(n, nc, size, thr):
    boxes, scores = random_boxes(n, nc=nc, size=size, seed=n)
    ref = brute_force_nms(boxes, scores, thr)
    assert 0 < len(ref) < n
    assert torch.equal(nms_torch(boxes, scores, thr), ref)
    assert torch.equal(nms_onnxruntime(boxes, scores, thr), ref)
    assert torch.equal(nms_onnxruntime(boxes, scores, thr, max_keep=50), ref[:50])
    if nms_mod._tv_nms is not None:
        assert torch.equal(nms_mod._tv_nms(boxes, scores, thr), ref)


@pytest.mark.parametrize("thr", [0.0, 0.2, 0.25, 0.5, 0.6])
def test_onnxruntime_kernel_on_ties_and_exact_thresholds(thr):
    """Integer boxes make IoUs land exactly on round thresholds, few distinct scores make ties: order and strictness."""
    g = torch.Generator().manual_seed(int(thr * 100))
    xy = torch.randint(0, 40, (800, 2), generator=g).float()
    wh = torch.randint(1, 12, (800, 2), generator=g).float()
    boxes = torch.cat((xy, xy + wh), 1)
    boxes[::50, 2:] = boxes[::50, :2]  # some zero-area boxes
    scores = torch.randint(0, 6, (800,), generator=g).float() / 5
    ref = brute_force_nms(boxes, scores, thr)
    assert torch.equal(nms_onnxruntime(boxes, scores, thr), ref)
    assert torch.equal(nms_torch(boxes, scores, thr), ref)


def test_stored_onnx_nms_model_is_the_one_onnx_builds():
    from onnx import TensorProto, checker, helper

    io = [("boxes", TensorProto.FLOAT, [1, None, 4]), ("scores", TensorProto.FLOAT, [1, 1, None]),
          ("max_keep", TensorProto.INT64, [1]), ("iou", TensorProto.FLOAT, [1])]
    graph = helper.make_graph([helper.make_node("NonMaxSuppression", [n for n, *_ in io], ["selected"])], "nms",
                              [helper.make_tensor_value_info(*x) for x in io],
                              [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], producer_name="mt-yolov5")
    model.ir_version = 8
    checker.check_model(model)
    assert model.SerializeToString() == nms_mod.NMS_ONNX_MODEL


def test_nms_uses_onnxruntime_on_cpu_and_torch_otherwise(monkeypatch):
    monkeypatch.setattr(nms_mod, "_tv_nms", None)
    calls = []
    monkeypatch.setattr(nms_mod, "nms_torch", lambda *a, **k: calls.append(a) or torch.zeros(0, dtype=torch.long))
    boxes, scores = random_boxes(300, seed=3)
    assert torch.equal(nms(boxes, scores, 0.5), brute_force_nms(boxes, scores, 0.5)) and not calls
    inverted = boxes[:, [2, 3, 0, 1]]  # x2 < x1: ONNX Runtime would reorder the corners, torchvision does not
    assert nms_onnxruntime(inverted, scores, 0.5) is None
    assert nms_onnxruntime(boxes.half(), scores, 0.5) is None  # torchvision computes fp16 boxes in fp16
    assert nms_onnxruntime(torch.full((2, 4), float("nan")), scores[:2], 0.5) is None
    nms(inverted, scores, 0.5)
    assert len(calls) == 1
    monkeypatch.setattr(nms_mod, "_ort_nms_session", lambda: None)  # onnxruntime not installed
    nms(boxes, scores, 0.5)
    assert len(calls) == 2


def test_both_pure_torch_strategies_agree():
    """The crowded (all kept boxes) and spread-out (x sweep) strategies must give the same keep mask."""
    boxes, scores = random_boxes(1200, nc=3, seed=1)
    order = scores.argsort(descending=True, stable=True)
    b = boxes[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    xo, hi = nms_mod._x_windows(b)
    dense = nms_mod._nms_dense(b, area, 0.5, b.shape[0])
    sparse = nms_mod._nms_sparse(b, area, 0.5, xo, hi, b.shape[0])
    assert torch.equal(dense, sparse)
    assert torch.equal(order[dense], brute_force_nms(boxes, scores, 0.5))


def test_nms_threshold_is_strict_and_long_chains():
    # IoU exactly 0.5 does not suppress at 0.5
    boxes = torch.tensor([[0.0, 0, 2, 1], [0, 0, 1, 1]])
    assert nms_torch(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms_torch(boxes, torch.tensor([0.9, 0.8]), 0.49).tolist() == [0]
    assert nms_onnxruntime(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms_onnxruntime(boxes, torch.tensor([0.9, 0.8]), 0.49).tolist() == [0]
    # a chain where each box overlaps only its neighbours: kept = every other box
    x = torch.arange(700, dtype=torch.float32) * 0.5
    chain = torch.stack((x, torch.zeros_like(x), x + 1, torch.ones_like(x)), 1)
    scores = torch.linspace(1, 0.1, 700)
    keep = nms_torch(chain, scores, 0.3)
    assert torch.equal(keep, torch.arange(0, 700, 2))
    assert torch.equal(keep, brute_force_nms(chain, scores, 0.3))
    assert torch.equal(nms_onnxruntime(chain, scores, 0.3), keep)
    assert nms(chain[:0], scores[:0], 0.5).shape == (0,)
    with pytest.raises(ValueError, match="negative"):
        nms_torch(chain, scores, -0.1)


def _case_params(name: str):
    conf, iou, ml, ag = name.split("_")
    return float(conf[4:]), float(iou[3:]), ml == "ml1", ag == "ag1"


def test_nms_parity_with_upstream():
    data = torch.load(need(FIXTURES / "nms.pt"), weights_only=True)
    assert len(data["cases"]) == 4
    for name, expected in data["cases"].items():
        conf, iou, ml, ag = _case_params(name)
        pred = data["pred"].clone()
        out = non_max_suppression((pred, None), conf, iou, multi_label=ml, agnostic=ag, max_det=300, nm=data["nm"])
        assert torch.equal(pred, data["pred"]), "input modified in place"
        assert len(out) == len(expected)
        for o, e in zip(out, expected):
            assert o.shape == e.shape, name
            assert torch.equal(o, e), f"{name}: max diff {(o - e).abs().max()}"


def _pred(rows, nc=3, nm=0):
    """Build a (1, n, 5+nc+nm) prediction from rows of (cx, cy, w, h, obj, cls, cls_score)."""
    p = torch.zeros(1, len(rows), 5 + nc + nm)
    for k, (cx, cy, w, h, obj, c, s) in enumerate(rows):
        p[0, k, :5] = torch.tensor([cx, cy, w, h, obj])
        p[0, k, 5 + c] = s
    return p


def test_class_offsets_agnostic_classes_filter_and_max_det():
    p = _pred([(50, 50, 20, 20, 0.9, 0, 1.0), (50, 50, 20, 20, 0.8, 1, 1.0), (51, 50, 20, 20, 0.7, 0, 1.0)])
    (out,) = non_max_suppression(p, 0.25, 0.45)
    assert out[:, 5].tolist() == [0.0, 1.0]  # same place, different classes: both kept; the class-0 duplicate goes
    assert out[:, :4].tolist()[0] == [40.0, 40.0, 60.0, 60.0]
    (out,) = non_max_suppression(p, 0.25, 0.45, agnostic=True)
    assert out.shape == (1, 6) and out[0, 4].item() == pytest.approx(0.9)
    (out,) = non_max_suppression(p, 0.25, 0.45, classes=[1])
    assert out[:, 5].tolist() == [1.0]
    far = _pred([(30 * k + 10, 10, 5, 5, 0.5 + k / 100, 0, 1.0) for k in range(20)])
    (out,) = non_max_suppression(far, 0.25, 0.45, max_det=7)
    assert out.shape == (7, 6)
    assert torch.all(out[:-1, 4] >= out[1:, 4])


def test_multi_label_and_conf_product():
    p = _pred([(50, 50, 20, 20, 0.5, 0, 0.9)])
    p[0, 0, 7] = 0.8  # class 2 also scores
    (single,) = non_max_suppression(p, 0.3, 0.45)
    assert single.shape == (1, 6) and single[0, 4].item() == pytest.approx(0.45) and single[0, 5].item() == 0
    (multi,) = non_max_suppression(p, 0.3, 0.45, multi_label=True)
    assert multi[:, 5].tolist() == [0.0, 2.0] and multi[:, 4].tolist() == pytest.approx([0.45, 0.4])


def test_empty_inputs_and_mask_columns():
    nm = 4
    out = non_max_suppression(torch.zeros(2, 10, 5 + 3 + nm), 0.25, 0.45, nm=nm)
    assert len(out) == 2 and all(o.shape == (0, 6 + nm) for o in out)
    p = _pred([(50, 50, 20, 20, 0.5, 1, 1.0)], nm=nm)
    p[0, 0, 8:] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    (out,) = non_max_suppression(p, 0.25, 0.45, nm=nm)
    assert out.shape == (1, 6 + nm)
    assert out[0, 6:].tolist() == pytest.approx([0.5, 1.0, 1.5, 2.0])  # upstream scales coefficients by obj too
    with pytest.raises(ValueError, match="conf_thres"):
        non_max_suppression(p, 1.5, 0.45)


def test_autolabel_rows():
    p = torch.zeros(1, 3, 8)
    labels = [torch.tensor([[2.0, 100, 100, 20, 20]])]
    (out,) = non_max_suppression(p, 0.25, 0.45, labels=labels)
    assert out.tolist() == [[90.0, 90.0, 110.0, 110.0, 1.0, 2.0]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_pure_torch_nms_on_cuda():
    boxes, scores = random_boxes(3000, nc=5, seed=3)
    ref = brute_force_nms(boxes, scores, 0.5)
    assert torch.equal(nms_torch(boxes.cuda(), scores.cuda(), 0.5).cpu(), ref)


def test_max_keep_returns_exactly_the_head_of_the_full_result():
    torch.manual_seed(3)
    xy = torch.rand(4000, 2) * 200
    boxes = torch.cat((xy, xy + 20 + torch.rand(4000, 2) * 60), 1)
    scores = torch.rand(4000)
    full = nms_mod.nms_torch(boxes, scores, 0.5)
    for k in (1, 37, 300):
        assert torch.equal(nms_mod.nms_torch(boxes, scores, 0.5, max_keep=k), full[:k])
