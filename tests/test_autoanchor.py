"""AutoAnchor: good anchors are kept, bad ones are replaced by evolved anchors with better recall."""

from __future__ import annotations

import types

import numpy as np
import torch
import torch.nn as nn

from utils.tasks.detect.autoanchor import check_anchor_order, check_anchors, kmean_anchors

ANCHORS_PX = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
                          dtype=torch.float32).view(3, 3, 2)
STRIDE = torch.tensor([8.0, 16.0, 32.0])


class _Head(nn.Module):
    def __init__(self, anchors_px):
        super().__init__()
        self.nl, self.na = 3, 3
        self.register_buffer("anchors", anchors_px / STRIDE.view(3, 1, 1))
        self.register_buffer("stride", STRIDE.clone())


def _model(anchors_px):
    return types.SimpleNamespace(model=[_Head(anchors_px)])


def _dataset(n_img=60, seed=0):
    """Images 640x480 whose boxes are sized like the default anchors (x0.7..1.4)."""
    rng = np.random.default_rng(seed)
    labels = []
    for _ in range(n_img):
        k = ANCHORS_PX.view(-1, 2).numpy()[rng.integers(0, 9, 5)] * rng.uniform(0.7, 1.4, (5, 2))
        wh = k / np.array([640, 480])
        labels.append(np.concatenate((np.zeros((5, 1)), rng.uniform(0.3, 0.7, (5, 2)), wh), 1).astype(np.float32))
    return types.SimpleNamespace(shapes=np.tile([[640, 480]], (n_img, 1)), labels=labels)


def test_good_anchors_are_kept():
    np.random.seed(0)
    model = _model(ANCHORS_PX)
    before = model.model[-1].anchors.clone()
    bpr = check_anchors(_dataset(), model, thr=4.0, imgsz=640)
    assert bpr > 0.98
    assert torch.equal(model.model[-1].anchors, before)


def test_bad_anchors_are_replaced_with_better_ones():
    np.random.seed(0)
    bad = torch.full((3, 3, 2), 3.0)  # 3 px anchors for 20-400 px objects
    model = _model(bad)
    ds = _dataset()
    bpr = check_anchors(ds, model, thr=4.0, imgsz=640, gen=100)
    head = model.model[-1]
    new_px = head.anchors * STRIDE.view(3, 1, 1)
    assert bpr > 0.9 and not torch.allclose(new_px, bad)
    areas = new_px.prod(-1).mean(-1)
    assert areas[0] < areas[-1]  # ordered small to large like the strides
    # stored in grid units: the P5 anchors divided by 32 are small numbers
    assert float(head.anchors[-1].max()) < 20


def test_kmean_anchors_shape_and_order():
    np.random.seed(1)
    k = kmean_anchors(_dataset(), n=9, img_size=640, gen=50, verbose=False)
    assert k.shape == (9, 2) and k.dtype == np.float32
    assert np.all(np.diff(k.prod(1)) >= 0)


def test_check_anchor_order_flips_reversed_levels():
    head = _Head(ANCHORS_PX.flip(0))
    assert check_anchor_order(head)
    assert torch.equal(head.anchors, (ANCHORS_PX.flip(0) / STRIDE.view(3, 1, 1)).flip(0))
    assert not check_anchor_order(_Head(ANCHORS_PX))
