"""Instance segmentation: masks from polygons, mask assembly, box+mask metric, training, validation and prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, ROOT, need

NAMES = "names: {0: rectangle, 1: ellipse, 2: triangle, 3: star}\n"


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory) -> Path:
    """A 24-image synthetic polygon set (16 train, 8 val) and its data YAML."""
    from utils.data.synthetic import generate_shapes

    root = tmp_path_factory.mktemp("segshapes")
    generate_shapes(root, n_train=16, n_val=8, seed=1, imgsz_range=(64, 96))
    y = root / "seg.yaml"
    y.write_text(f"path: {root / 'seg'}\ntrain: images/train\nval: images/val\n{NAMES}")
    return y


@pytest.fixture(scope="module")
def trained(seg_data, tmp_path_factory) -> Path:
    """One epoch of segment/train.py through the shared engine; returns the run folder."""
    from segment import train as seg_train

    project = tmp_path_factory.mktemp("train-seg")
    seg_train.run(data=str(seg_data), imgsz=64, epochs=1, batch_size=8, workers=0, project=str(project),
                  noplots=True, device="cpu")
    return project / "exp"


def square(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32)


def test_masks_from_polygons_overlap_and_per_object():
    from utils.tasks.segment.masks import polygons2masks, polygons2masks_overlap

    small, big = square(8, 8, 16, 16), square(0, 0, 32, 32)  # the small one lies on the big one
    masks = polygons2masks((32, 32), [small, big])
    assert masks.shape == (2, 32, 32) and masks.dtype == np.uint8
    assert masks[0].sum() == 9 * 9 and masks[1].sum() == 32 * 32  # fillPoly includes the closing edges
    index, order = polygons2masks_overlap((32, 32), [small, big])
    assert order.tolist() == [1, 0]  # largest first: the big square gets id 1, the small one id 2 on top of it
    assert index[12, 12] == 2 and index[2, 2] == 1 and set(np.unique(index)) == {1, 2}
    index4, _ = polygons2masks_overlap((32, 32), [small, big], downsample_ratio=4)
    assert index4.shape == (8, 8) and index4[3, 3] == 2 and index4[0, 0] == 1


def test_process_mask_crops_to_boxes_and_upsamples():
    from utils.tasks.segment.masks import crop_mask, mask_iou, process_mask

    protos = torch.ones(32, 16, 16)
    coefs = torch.zeros(2, 32)
    coefs[0, 0], coefs[1, 0] = 5.0, -5.0  # sigmoid(5) > 0.5 everywhere, sigmoid(-5) nowhere
    boxes = torch.tensor([[0.0, 0.0, 32.0, 16.0], [0.0, 0.0, 64.0, 64.0]])  # in 64x64 input pixels
    m = process_mask(protos, coefs, boxes, (64, 64))
    assert m.shape == (2, 16, 16)
    assert m[0, :4, :8].all() and not m[0, 4:].any() and not m[0, :, 8:].any()  # box quarter at 1/4 resolution
    assert not m[1].any()
    up = process_mask(protos, coefs, boxes, (64, 64), upsample=True)
    assert up.shape == (2, 64, 64) and up[0, :14, :30].all() and not up[0, 18:].any()  # bilinear edges
    assert crop_mask(torch.ones(1, 4, 4), torch.tensor([[1.0, 1.0, 3.0, 3.0]])).sum() == 4
    iou = mask_iou(m.flatten(1), m.flatten(1))
    assert iou[0, 0] == pytest.approx(1.0) and iou[1, 1] == 0


def test_metric_scores_a_perfect_prediction_as_upstream_does():
    from utils.tasks.segment.masks import polygons2masks_overlap
    from utils.tasks.segment.task import SegmentationTask

    polys = [square(4, 4, 28, 28), square(36, 30, 60, 60)]
    index, order = polygons2masks_overlap((64, 64), polys)
    boxes = torch.tensor([[4.0, 4, 28, 28], [36, 30, 60, 60]])[torch.from_numpy(order)]
    cls = torch.tensor([0.0, 2.0])[torch.from_numpy(order)]
    xywhn = torch.cat(((boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]), 1) / 64
    targets = torch.cat((torch.zeros(2, 1), cls[:, None], xywhn), 1)
    batch = {"img": torch.zeros(1, 3, 64, 64), "targets": targets, "paths": ["a.jpg"],
             "shapes": [((64, 64), ((1.0, 1.0), (0.0, 0.0)))], "masks": torch.from_numpy(index)[None].float(),
             "overlap": True}
    gt = torch.stack([torch.from_numpy(index == k + 1) for k in range(2)]).float()
    det = torch.cat((boxes, torch.full((2, 1), 0.9), cls[:, None]), 1)
    task = SegmentationTask()
    metric = task.new_metric({0: "rectangle", 1: "ellipse", 2: "triangle", 3: "star"}, Path("."))
    metric.update([(det, gt)], batch)
    f = metric.compute()
    assert list(f) == list(task.metric_names) and len(f) == 8
    p, r, m50, m = (f[k] for k in task.metric_names[4:])
    assert p == pytest.approx(1.0, abs=1e-3) and r == pytest.approx(1.0)
    assert m50 == pytest.approx(0.995) and m == pytest.approx(0.995)  # 101-point interpolation caps AP at 0.995
    assert [f[k] for k in task.metric_names[:4]] == pytest.approx([p, r, m50, m])
    assert task.fitness(f) == pytest.approx(2 * 0.995)
    assert "Mask(P" in metric.summary()


def test_dataset_masks_follow_labels_through_augmentation(seg_data):
    from utils.data.dataset_config import check_dataset
    from utils.tasks.segment.dataset import SegmentDataset

    data = check_dataset(str(seg_data))
    for overlap in (True, False):
        ds = SegmentDataset(data["train"], img_size=64, batch_size=4, augment=True, hyp={"mosaic": 1.0},
                            overlap=overlap, downsample_ratio=4)
        item = ds[0]
        labels, masks = item["targets"], item["masks"]
        n = len(labels)
        assert masks.shape == ((1 if overlap else n), 16, 16)
        inst = [(masks[0] == k + 1) for k in range(n)] if overlap else list(masks.bool())
        for lb, m in zip(labels, inst):  # every mask pixel lies in (or next to) its own label's box
            if not m.any():
                continue
            ys, xs = torch.nonzero(m, as_tuple=True)
            x, y, w, h = (lb[2:] * 16).tolist()
            assert xs.min() >= x - w / 2 - 1.5 and xs.max() <= x + w / 2 + 1.5
            assert ys.min() >= y - h / 2 - 1.5 and ys.max() <= y + h / 2 + 1.5
        batch = SegmentDataset.collate_fn([ds[0], ds[1]])
        assert batch["masks"].shape[0] == (2 if overlap else len(batch["targets"]))


def test_one_epoch_segment_training_writes_best_and_seg_columns(trained):
    assert (trained / "weights" / "best.pt").exists()
    header = (trained / "results.csv").read_text().splitlines()[0]
    cols = [c.strip() for c in header.split(",")]
    for c in ("train/box_loss", "train/seg_loss", "train/obj_loss", "train/cls_loss", "metrics/mAP_0.5(B)",
              "metrics/mAP_0.5:0.95(M)", "val/seg_loss"):
        assert c in cols
    from utils.checkpoint import load_model

    assert type(load_model(trained / "weights" / "best.pt", fuse=False)).__name__ == "SegmentationModel"


def test_predict_writes_masked_images_and_polygon_labels(trained, tmp_path):
    from segment import predict as seg_predict

    out = seg_predict.run(weights=str(trained / "weights" / "best.pt"), source=str(ROOT / "data/images"),
                          imgsz=[64], conf_thres=0.001, project=str(tmp_path), save_txt=True, device="cpu")
    assert sorted(p.name for p in out.glob("*.jpg")) == ["shapes1.jpg", "shapes2.jpg"]
    out2 = seg_predict.run(weights=str(trained / "weights" / "best.pt"), source=str(ROOT / "data/images"),
                           imgsz=[64], project=str(tmp_path), retina_masks=True, device="cpu")
    assert len(list(out2.glob("*.jpg"))) == 2


@pytest.mark.shared
def test_segment_val_reproduces_upstream_figures(tmp_path):
    from segment import val as seg_val

    weights = need(FIXTURES / "shapes_seg_n320.pt")
    data = need(FIXTURES / "shapes_seg_val" / "shapes_seg_val.yaml")
    ref = [float(x) for x in (FIXTURES / "shapes_seg_val" / "REFERENCE").read_text().split()]
    res = seg_val.run(weights=[str(weights)], data=str(data), imgsz=320, project=str(tmp_path), device="cpu",
                      workers=0)
    got = list(res.figures.values())
    assert [float(f"{x:.3g}") for x in got] == pytest.approx(ref)  # upstream prints 3 significant digits
