"""DetectionLoss: parity with upstream v7.0 fixtures, duplicate-cell order, compile, autobalance and focal paths."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES, need

from utils.boxes import bbox_iou
from utils.tasks.detect.loss import DetectionLoss

HYP = {"box": 0.05, "obj": 1.0, "cls": 0.5, "cls_pw": 1.0, "obj_pw": 1.0, "anchor_t": 4.0, "fl_gamma": 0.0}
ANCHORS_PX = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
                          dtype=torch.float32).view(3, 3, 2)
STRIDE = torch.tensor([8.0, 16.0, 32.0])


def _head(anchors, stride, nc=80):
    return types.SimpleNamespace(nc=nc, nl=anchors.shape[0], na=anchors.shape[1], anchors=anchors, stride=stride)


def _random_case(bs=2, nt=40, nc=80, h=128, w=160, seed=0):
    g = torch.Generator().manual_seed(seed)
    preds = [torch.randn(bs, 3, h // int(s), w // int(s), 5 + nc, generator=g) for s in STRIDE]
    xy = torch.rand(nt, 2, generator=g)
    wh = torch.rand(nt, 2, generator=g) * 0.5 + 0.02
    targets = torch.cat((torch.randint(0, bs, (nt, 1), generator=g).float(),
                         torch.randint(0, nc, (nt, 1), generator=g).float(), xy, wh), 1)
    return preds, targets


def _reference_loss(preds, targets, anchors, hyp, nc):
    """Straightforward filtered implementation of upstream's algorithm (sequential CPU index_put for tobj)."""
    balance = [4.0, 1.0, 0.4] if len(preds) == 3 else [4.0, 1.0, 0.25, 0.06, 0.02]
    na, nt = anchors.shape[1], targets.shape[0]
    off = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32) * 0.5
    ai = torch.arange(na, dtype=torch.float32).view(na, 1).repeat(1, nt)
    tt = torch.cat((targets.repeat(na, 1, 1), ai[..., None]), 2)
    lbox = lobj = lcls = torch.zeros(1)
    pw_c, pw_o = torch.tensor([hyp["cls_pw"]]), torch.tensor([hyp["obj_pw"]])
    for i, pi in enumerate(preds):
        ny, nx = pi.shape[2:4]
        gain = torch.tensor([1, 1, nx, ny, nx, ny, 1], dtype=torch.float32)
        t = tt * gain
        r = t[..., 4:6] / anchors[i][:, None]
        t = t[torch.max(r, 1 / r).max(2)[0] < hyp["anchor_t"]]
        gxy = t[:, 2:4]
        gxi = gain[[2, 3]] - gxy
        j, k = ((gxy % 1 < 0.5) & (gxy > 1)).T
        left, m = ((gxi % 1 < 0.5) & (gxi > 1)).T
        sel = torch.stack((torch.ones_like(j), j, k, left, m))
        t = t.repeat((5, 1, 1))[sel]
        offsets = (torch.zeros_like(gxy)[None] + off[:, None])[sel]
        b, c = t[:, 0].long(), t[:, 1].long()
        gxy, gwh, a = t[:, 2:4], t[:, 4:6], t[:, 6].long()
        gij = (gxy - offsets).long()
        gi, gj = gij[:, 0].clamp(0, nx - 1), gij[:, 1].clamp(0, ny - 1)
        tbox = torch.cat((gxy - torch.stack((gi, gj), 1), gwh), 1)
        tobj = torch.zeros(pi.shape[:4])
        if b.numel():
            ps = pi[b, a, gj, gi]
            pbox = torch.cat((ps[:, :2].sigmoid() * 2 - 0.5, (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors[i][a]), 1)
            iou = bbox_iou(pbox, tbox, CIoU=True).squeeze(-1)
            lbox = lbox + (1 - iou).mean()
            for q in range(b.numel()):  # sequential: the later duplicate wins
                tobj[b[q], a[q], gj[q], gi[q]] = iou[q].detach().clamp(0)
            if nc > 1:
                tc = torch.zeros_like(ps[:, 5:])
                tc[torch.arange(b.numel()), c] = 1.0
                lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5:], tc, pos_weight=pw_c)
        lobj = lobj + F.binary_cross_entropy_with_logits(pi[..., 4], tobj, pos_weight=pw_o) * balance[i]
    items = torch.cat((lbox * hyp["box"], lobj * hyp["obj"], lcls * hyp["cls"]))
    return items.sum() * preds[0].shape[0], items


@pytest.mark.parametrize("name,key", [("det_n.pt", "model.24.anchors"), ("det_n6.pt", "model.33.anchors")])
def test_parity_with_upstream_fixture(name, key):
    d = torch.load(need(FIXTURES / name), weights_only=True)
    anchors = d["state_dict"][key]
    loss, items = DetectionLoss(_head(anchors, d["stride"], d["nc"]), d["hyp"])(d["train_out"], d["targets"])
    assert loss.shape == (1,) and items.shape == (3,)
    torch.testing.assert_close(loss, d["loss"], rtol=1e-5, atol=0)
    torch.testing.assert_close(items, d["loss_items"].reshape(3), rtol=1e-5, atol=0)


def test_matches_reference_with_many_duplicate_cells():
    anchors = ANCHORS_PX / STRIDE.view(3, 1, 1)
    preds, targets = _random_case(nt=300)  # 300 targets on small grids: many candidates share a cell
    loss_fn = DetectionLoss(_head(anchors, STRIDE), HYP)
    dup = 0
    for m, p in zip(loss_fn.match(preds, targets), preds):
        lin = (((m.b * 3 + m.a) * p.shape[2] + m.gj) * p.shape[3] + m.gi)[m.valid]
        dup += lin.numel() - lin.unique().numel()
    assert dup > 50  # the case really exercises the overwrite order
    loss, items = loss_fn(preds, targets)
    ref_loss, ref_items = _reference_loss(preds, targets, anchors, HYP, 80)
    torch.testing.assert_close(items, ref_items, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(loss, ref_loss.reshape(1), rtol=1e-5, atol=1e-7)


def test_build_targets_upstream_form():
    anchors = ANCHORS_PX / STRIDE.view(3, 1, 1)
    preds, targets = _random_case(nt=20)
    tcls, tbox, indices, anch = DetectionLoss(_head(anchors, STRIDE), HYP).build_targets(preds, targets)
    assert len(tcls) == len(tbox) == len(indices) == len(anch) == 3
    for i, p in enumerate(preds):
        b, a, gj, gi = indices[i]
        n = b.numel()
        assert n > 0 and tbox[i].shape == (n, 4) and anch[i].shape == (n, 2) and tcls[i].shape == (n,)
        assert int(gj.max()) < p.shape[2] and int(gi.max()) < p.shape[3] and int(gj.min()) >= 0
        assert float(tbox[i][:, :2].min()) > -0.5 and float(tbox[i][:, :2].max()) < 1.5


def test_gradients_and_empty_targets():
    anchors = ANCHORS_PX / STRIDE.view(3, 1, 1)
    preds, targets = _random_case(nt=10)
    preds = [p.requires_grad_() for p in preds]
    loss_fn = DetectionLoss(_head(anchors, STRIDE), HYP)
    loss, _ = loss_fn(preds, targets)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in preds)
    loss0, items0 = loss_fn([p.detach() for p in preds], torch.zeros(0, 6))
    assert torch.isfinite(loss0).all() and items0[0] == 0 and items0[2] == 0 and items0[1] > 0


def test_single_class_has_no_class_loss_and_focal_changes_values():
    anchors = ANCHORS_PX / STRIDE.view(3, 1, 1)
    preds, targets = _random_case(nt=10, nc=1)
    targets[:, 1] = 0
    _, items = DetectionLoss(_head(anchors, STRIDE, nc=1), HYP)(preds, targets)
    assert items[2] == 0 and items[0] > 0
    preds, targets = _random_case(nt=10)
    plain = DetectionLoss(_head(anchors, STRIDE), HYP)(preds, targets)[1]
    focal = DetectionLoss(_head(anchors, STRIDE), {**HYP, "fl_gamma": 1.5})(preds, targets)[1]
    assert focal[0] == plain[0] and focal[1] < plain[1] and focal[2] < plain[2]


def test_autobalance_keeps_reference_level_at_one():
    anchors = ANCHORS_PX / STRIDE.view(3, 1, 1)
    preds, targets = _random_case(nt=10)
    loss_fn = DetectionLoss(_head(anchors, STRIDE), HYP, autobalance=True)
    loss_fn(preds, targets)
    assert loss_fn.ssi == 1 and float(loss_fn.balance[1]) == pytest.approx(1.0)
    assert float(loss_fn.balance[0]) != pytest.approx(4.0)


def test_compiled_loss_matches_eager():
    anchors = ANCHORS_PX / STRIDE.view(3, 1, 1)
    loss_fn = DetectionLoss(_head(anchors, STRIDE), HYP)
    # fullgraph: the whole loss is one graph (no data-dependent shapes, no graph breaks); the 'eager' backend keeps
    # the test fast on CPU, the capture is what is being checked.
    compiled = torch.compile(loss_fn.__call__, backend="eager", dynamic=True, fullgraph=True)
    for nt in (7, 13):  # two target counts: dynamic shapes must not break it
        preds, targets = _random_case(nt=nt, seed=nt)
        torch.testing.assert_close(compiled(preds, targets), loss_fn(preds, targets), rtol=1e-6, atol=1e-7)


def test_scratch_low_hyp_file_matches_the_fixture_hyp():
    import yaml
    from conftest import ROOT

    d = torch.load(need(FIXTURES / "det_n.pt"), weights_only=True)
    ours = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-low.yaml").read_text())
    assert ours == {k: v for k, v in d["hyp"].items() if k != "label_smoothing"}
    for name in ("med", "high"):
        h = yaml.safe_load((ROOT / f"data/hyps/hyp.scratch-{name}.yaml").read_text())
        assert h.keys() == ours.keys()
        assert (h["lrf"], h["cls"], h["obj"], h["scale"], h["mixup"]) == (0.1, 0.3, 0.7, 0.9, 0.1)
        assert h["copy_paste"] == (0.1 if name == "high" else 0.0)


def _seg_case():
    d = torch.load(need(FIXTURES / "seg_n.pt"), weights_only=True)
    head = _head(d["state_dict"]["model.24.anchors"], STRIDE, d["nc"])
    head.nm = 32
    return d, head


def test_segmentation_loss_parity_with_upstream_fixture():
    from utils.tasks.segment.loss import SegmentationLoss

    d, head = _seg_case()
    loss, items = SegmentationLoss(head, d["hyp"])(d["train_out"], d["targets"], d["masks"])
    assert items.shape == (4,)  # box, seg, obj, cls
    torch.testing.assert_close(loss, d["loss"], rtol=1e-5, atol=0)
    torch.testing.assert_close(items, d["loss_items"].reshape(4), rtol=1e-5, atol=0)


def test_mask_gain_scales_only_the_mask_term():
    """hyp `mask` (default 1.0, upstream's weighting) multiplies the mask term and nothing else."""
    from utils.tasks.segment.loss import SegmentationLoss

    d, head = _seg_case()
    ref = SegmentationLoss(head, d["hyp"])(d["train_out"], d["targets"], d["masks"])[1]
    got = SegmentationLoss(head, {**d["hyp"], "mask": 0.25})(d["train_out"], d["targets"], d["masks"])[1]
    torch.testing.assert_close(got, ref * torch.tensor([1, 0.25, 1, 1]))


def test_segmentation_loss_non_overlap_masks_and_resize_agree():
    from utils.tasks.segment.loss import SegmentationLoss, rank_in_image

    d, head = _seg_case()
    t = d["targets"]
    rank = rank_in_image(t[:, 0].long(), 2)
    per_target = (d["masks"][t[:, 0].long()] == rank[:, None, None].float()).float()  # (nt, h, w) binary
    ref = SegmentationLoss(head, d["hyp"])(d["train_out"], t, d["masks"])[1]
    sep = SegmentationLoss(head, d["hyp"], overlap=False)(d["train_out"], t, per_target)[1]
    big = d["masks"].repeat_interleave(2, 1).repeat_interleave(2, 2)  # full-resolution masks get resized
    resized = SegmentationLoss(head, d["hyp"])(d["train_out"], t, big)[1]
    torch.testing.assert_close(sep, ref)
    torch.testing.assert_close(resized, ref)
