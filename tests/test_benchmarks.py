"""The benchmark scripts' helpers: each model kind is timed with its task's real loss, on labels of the right form."""

from __future__ import annotations

import pytest
import torch

from benchmarks.memory import box_index_masks, make_criterion, random_targets
from models.build import build_model
from utils.log import quiet

HYP = {"box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0, "anchor_t": 4.0, "fl_gamma": 0.0}


def test_box_index_masks_paint_each_box_with_its_rank_in_its_image():
    t = torch.tensor([[0, 0, 0.25, 0.25, 0.5, 0.5], [0, 1, 0.75, 0.75, 0.5, 0.5], [1, 2, 0.5, 0.5, 1.0, 1.0]])
    m = box_index_masks(t, torch.zeros(2, 32, 8, 8))
    assert m.shape == (2, 8, 8)
    assert (m[0, :4, :4] == 1).all() and (m[0, 4:, 4:] == 2).all() and (m[0, :4, 4:] == 0).all()
    assert (m[1] == 1).all()


@pytest.mark.parametrize("cfg,kind", [("yolov5n.yaml", "detect"), ("yolov5n-seg.yaml", "segment"),
                                      ("yolov5n-city.yaml", "semantic")])
def test_every_kind_is_timed_with_its_own_loss(cfg, kind):
    torch.manual_seed(0)
    with quiet():
        model = build_model(cfg, nc=4).train()
    assert model.task == kind
    criterion, stand_in = make_criterion(model, HYP)
    loss, _ = criterion(model(torch.rand(2, 3, 64, 64)), random_targets(2, 4, 3, torch.device("cpu")))
    assert not stand_in and torch.isfinite(loss).all() and loss.requires_grad
    loss.sum().backward()  # reaches the weights: a real training step
    assert sum(p.grad is not None for p in model.parameters()) > 0.9 * len(list(model.parameters()))
