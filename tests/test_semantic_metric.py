"""Semantic scoring: the confusion matrix against a hand-computed case, its DDP reduction, and the letterbox inverse
that brings logits back to the label's full resolution (exact for any aspect ratio)."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.data.imageio import letterbox
from utils.tasks.semantic.metric import SemanticConfusion, _histogram
from utils.tasks.semantic.rescale import _resample, content_window, label_maps, unletterbox_logits

# Hand-computed case, 3 classes, one ignored pixel:
#   target [[0, 0, 1], [1, 2, 255]], prediction [[0, 1, 1], [2, 2, 0]]
#   matrix [gt, pred] = [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
#   IoU = 1/(2+1-1), 1/(2+2-1), 1/(1+2-1) = 1/2, 1/3, 1/2; mIoU = 4/9; pixel acc 3/5; class acc 1/2, 1/2, 1 -> 2/3
TARGET = torch.tensor([[0, 0, 1], [1, 2, 255]], dtype=torch.uint8)
PRED = torch.tensor([[0, 1, 1], [2, 2, 0]])


def test_hand_computed_case():
    m = SemanticConfusion(3)
    m.update(PRED, TARGET)
    assert m.matrix.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    np.testing.assert_allclose(m.iou(), [1 / 2, 1 / 3, 1 / 2])
    f = m.compute()
    assert f["metrics/mIoU"] == pytest.approx(4 / 9)
    assert f["metrics/pixel_acc"] == pytest.approx(3 / 5)
    assert f["metrics/mean_acc"] == pytest.approx(2 / 3)


def test_absent_classes_and_invalid_labels_are_left_out():
    m = SemanticConfusion(5)  # classes 3 and 4 are in neither labels nor predictions
    m.update(PRED[None], TARGET[None])  # batched (1, H, W)
    m.update(torch.tensor([[1, 1]]), torch.tensor([[7, -1]]))  # labels outside 0..nc-1 count for nothing
    iou = m.iou()
    assert np.isnan(iou[3:]).all()
    assert m.compute()["metrics/mIoU"] == pytest.approx(4 / 9)  # the mean skips the undefined IoUs
    m.update(torch.tensor([[4]]), torch.tensor([[0]]))  # class 4 predicted once, never labelled: IoU 0, counts
    assert m.iou()[4] == 0.0
    table = m.summary({0: "road", 1: "car", 2: "sky", 3: "bus", 4: "train"})
    assert "all" in table and "road" in table and "train" in table and "bus" not in table
    assert SemanticConfusion(3).compute() == {"metrics/mIoU": 0.0, "metrics/pixel_acc": 0.0, "metrics/mean_acc": 0.0}
    with pytest.raises(ValueError, match="shapes differ"):
        m.update(torch.zeros(2, 3), torch.zeros(3, 2))


def test_accumulates_over_batches_like_one_pass():
    g = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 6, (4, 20, 30), generator=g)
    target = torch.randint(0, 7, (4, 20, 30), generator=g)
    target[target == 6] = 255
    whole, parts = SemanticConfusion(6), SemanticConfusion(6)
    whole.update(preds, target)
    for p, t in zip(preds, target):
        parts.update(p, t)
    assert torch.equal(whole.matrix, parts.matrix)
    # the scatter path used on GPUs (no host sync) counts exactly what bincount counts
    idx = torch.randint(0, 37, (5000,), generator=g)
    assert torch.equal(_histogram(idx, 37, scatter=True), _histogram(idx, 37, scatter=False))
    assert torch.equal(_histogram(idx, 37), torch.bincount(idx, minlength=37))
    whole.reset()
    assert whole.matrix.sum() == 0


def _ddp_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    m = SemanticConfusion(3)
    half = slice(0, 1) if rank == 0 else slice(1, 2)
    m.update(PRED[half], TARGET[half])
    m.reduce()
    if rank == 0:
        torch.save(m.matrix, out)
    dist.destroy_process_group()


def test_reduce_sums_ranks(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "m.pt"
    # fork: a spawned child would spend seconds re-importing torch and this module
    torch.multiprocessing.start_processes(_ddp_worker, args=(port, str(out)), nprocs=2, start_method="fork")
    assert torch.load(out).tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    single = SemanticConfusion(3)
    single.reduce()  # no process group: a no-op
    assert single.matrix.sum() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_update_does_not_sync_on_cuda():
    m = SemanticConfusion(19, device="cuda")
    pred = torch.randint(0, 19, (2, 64, 128), device="cuda")
    target = torch.randint(0, 20, (2, 64, 128), device="cuda", dtype=torch.uint8)
    torch.cuda.set_sync_debug_mode("error")
    try:
        m.update(pred, target)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ref = SemanticConfusion(19)
    ref.update(pred.cpu(), target.cpu())
    assert torch.equal(m.matrix.cpu(), ref.matrix)


# --- letterbox inverse ---------------------------------------------------------------------------------------


def _coordinate_logits(input_hw, shape0, window, stride: int = 1) -> tuple[torch.Tensor, float, float]:
    """4-channel logits over a letterboxed input: cx - x, x - cx, cy - y, y - cy in ORIGINAL image coordinates.

    Argmax of channels (0, 1) is 1 exactly where original x > cx (and likewise for y), so a correct inverse
    reproduces those edges at full resolution pixel for pixel; channel 1 itself must come back as x - cx.
    """
    (H, W), (h0, w0), (top, left, nh, nw) = input_hw, shape0, window
    ys = (torch.arange(H // stride, dtype=torch.float64) + 0.5) * stride  # logit-pixel centres in input pixels
    xs = (torch.arange(W // stride, dtype=torch.float64) + 0.5) * stride
    y0 = (ys - top) * h0 / nh - 0.5  # ... in original pixel-index coordinates
    x0 = (xs - left) * w0 / nw - 0.5
    cx, cy = w0 * 0.37 + 0.25, h0 * 0.61 + 0.25
    gx, gy = (x0 - cx)[None, :].expand(len(ys), -1), (y0 - cy)[:, None].expand(-1, len(xs))
    return torch.stack((-gx, gx, -gy, gy)).float(), cx, cy


def _check_edges(out: torch.Tensor, shape0, cx: float, cy: float) -> None:
    h0, w0 = shape0
    x = torch.arange(w0, dtype=torch.float32)[None, :].expand(h0, w0)
    y = torch.arange(h0, dtype=torch.float32)[:, None].expand(h0, w0)
    assert torch.equal(out[:2].argmax(0), (x > cx).long())
    assert torch.equal(out[2:].argmax(0), (y > cy).long())


@pytest.mark.parametrize("shape0", [(300, 500), (500, 300), (123, 457), (512, 1024), (97, 97)])
@pytest.mark.parametrize("auto", [False, True])
def test_unletterbox_is_exact_for_any_aspect_ratio(shape0, auto):
    h0, w0 = shape0
    lb, ratio, pad = letterbox(np.zeros((h0, w0, 3), np.uint8), 256, auto=auto)
    input_hw = lb.shape[:2]
    window = content_window(input_hw, shape0, (ratio, pad))
    assert window == content_window(input_hw, shape0)  # the predictor's case: inferred from the shapes alone
    top, left, nh, nw = window
    assert (lb[top:top + nh, left:left + nw] == 0).all() and (lb == 114).sum() == lb.size - nh * nw * 3
    logits, cx, cy = _coordinate_logits(input_hw, shape0, window)
    out = unletterbox_logits(logits, input_hw, shape0, (ratio, pad))
    assert out.shape == (4, h0, w0)
    _check_edges(out, shape0, cx, cy)
    # away from the outermost half input pixel (clamped) channel 1 is x - cx itself
    m = math.ceil(w0 / nw) + 1
    inner = out[1, :, m:w0 - m] - (torch.arange(m, w0 - m) - cx)
    assert inner.abs().max() < 1e-3
    if pad[0] >= 1 or pad[1] >= 1:  # resizing the padded map (the reference's way) misplaces the edges
        naive = F.interpolate(logits[None], size=shape0, mode="bilinear", align_corners=True)[0]
        x = torch.arange(w0)[None, :].expand(h0, w0)
        y = torch.arange(h0)[:, None].expand(h0, w0)
        assert not (torch.equal(naive[:2].argmax(0), (x > cx).long()) and
                    torch.equal(naive[2:].argmax(0), (y > cy).long()))


@pytest.mark.parametrize("shape0", [(300, 500), (123, 457)])
def test_unletterbox_coarse_logits(shape0):
    """Logits at stride 4 whose window does not fall on whole logit pixels: one bilinear resample, still exact."""
    lb, ratio, pad = letterbox(np.zeros((*shape0, 3), np.uint8), 256, auto=False)
    input_hw = lb.shape[:2]
    window = content_window(input_hw, shape0, (ratio, pad))
    logits, cx, cy = _coordinate_logits(input_hw, shape0, window, stride=4)
    out = unletterbox_logits(logits, input_hw, shape0, (ratio, pad))
    _check_edges(out, shape0, cx, cy)
    # the general resampler agrees with the crop-and-resize path where both apply
    x = torch.randn(2, 3, 40, 60)
    fast = unletterbox_logits(x, (40, 60), (70, 90), ((1, 1), (7.0, 4.0)))
    slow = _resample(x, 4, 7, 32, 46, (70, 90))
    assert torch.allclose(fast, slow, atol=1e-4)


def test_label_maps_per_image_shapes():
    lb0, r0, p0 = letterbox(np.zeros((100, 160, 3), np.uint8), 128, auto=False)
    lb1, r1, p1 = letterbox(np.zeros((160, 100, 3), np.uint8), 128, auto=False)
    logits = torch.zeros(2, 3, 128, 128)
    logits[0, 2, 30:60] = 5  # rows 30..59 of image 0's input; its content starts at row 24 (pad 24 above)
    logits[1, 1, :, 20:40] = 5  # columns 20..39 of image 1's input; its content starts at column 24
    maps = label_maps(logits, (128, 128), [((100, 160), (r0, p0)), ((160, 100), (r1, p1))])
    assert [tuple(m.shape) for m in maps] == [(100, 160), (160, 100)]
    assert maps[0].dtype == torch.int64
    rows = maps[0][:, 0].nonzero().flatten()
    # window rows 6..35 hold class 2; original row y samples window row (y + 0.5) * 0.8 - 0.5, in (5, 36) for 7..45
    assert rows.min() == 7 and rows.max() == 45
    cols = maps[1][0].eq(1).nonzero().flatten()
    assert cols.min() == 0 and cols.max() == 20  # window columns 0..15 (input 24..39): (x + 0.5) * 0.8 - 0.5 < 16
    half = unletterbox_logits(logits[0].half(), (128, 128), (100, 160), (r0, p0))
    assert half.dtype == torch.float32 and half.shape == (3, 100, 160)
