"""Loose ends of the v7.0 flag audit: classify --optimizer RMSProp, --quad where the quad loader is refused,
--cache val, segment/val.py --save-json masks as COCO RLE."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_cls(tmp_path_factory):
    from utils.tasks.classify.synthetic import generate_shapes_cls

    return generate_shapes_cls(tmp_path_factory.mktemp("cls") / "shapes-cls", n_train=6, n_val=3, size=32)


def test_classify_rmsprop(tiny_cls, tmp_path, monkeypatch):
    from classify import train
    from utils.engine import trainer

    built = []
    real = trainer.smart_optimizer
    monkeypatch.setattr(trainer, "smart_optimizer", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    assert train.parse_opt(["--optimizer", "RMSProp"]).optimizer == "RMSProp"  # v7.0's classify choices
    train.run(data=str(tiny_cls), imgsz=64, epochs=1, batch_size=8, workers=0, device="cpu", optimizer="RMSProp",
              project=str(tmp_path), name="exp")
    assert [type(o) for o in built] == [torch.optim.RMSprop]
    assert all("square_avg" in s for s in built[0].state.values()) and built[0].state  # it stepped


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Tiny generated det/ and seg/ trees with their data YAMLs."""
    from tests.conftest import write_tiny_shapes

    det = write_tiny_shapes(tmp_path_factory.mktemp("shapes"), n_train=8, n_val=4)
    seg = det.parent / "seg.yaml"
    seg.write_text(det.read_text().replace("/det", "/seg"))
    return det, seg


def _spy_loss_scaling(task_cls: type, monkeypatch) -> tuple[list, list]:
    """Record the task's loss and the loss handed to backward (GradScaler.scale) at every step."""
    seen, backward = [], []
    criterion, real_scale = task_cls.criterion, torch.amp.GradScaler.scale

    def spy_criterion(self, model, hyp):
        fn = criterion(self, model, hyp)
        return lambda *a: seen.append(fn(*a)) or seen[-1]

    monkeypatch.setattr(task_cls, "criterion", spy_criterion)
    monkeypatch.setattr(torch.amp.GradScaler, "scale",
                        lambda self, x: backward.append(x.detach()) or real_scale(self, x))
    return seen, backward


def _ratio(seen, backward) -> float:
    return float(backward[0] / seen[0][0].detach())


def test_quad_scales_the_loss_only_where_the_quad_loader_runs(shapes, tiny_cls, tmp_path, monkeypatch):
    """Refused (segmentation, classification): --quad leaves the loss alone. Detection: the loader tiles, loss x4."""
    from classify import train as cls_train
    from tests.test_engine import make_cfg
    from utils.engine.trainer import Trainer
    from utils.tasks.classify.task import ClassificationTask
    from utils.tasks.detect.task import DetectionTask
    from utils.tasks.segment.task import SegmentationTask

    det, seg = shapes
    for task, data, kw in ((SegmentationTask, seg, {"cfg": "yolov5n-seg.yaml"}), (DetectionTask, det, {})):
        spies = _spy_loss_scaling(task, monkeypatch)
        t = Trainer(make_cfg(str(data), tmp_path / task.__name__, epochs=1, quad=True, **kw), task())
        t.fit()
        assert (_ratio(*spies), t.train_loader.quad) == ((4.0, True) if task is DetectionTask else (1.0, False))
    spies = _spy_loss_scaling(ClassificationTask, monkeypatch)
    cls_train.run(data=str(tiny_cls), imgsz=64, epochs=1, batch_size=8, workers=0, device="cpu", quad=True,
                  project=str(tmp_path / "cls"))
    assert _ratio(*spies) == 1.0


def test_cache_val_caches_only_the_validation_images(shapes, tiny_cls, tmp_path):
    """v7.0's --cache val: the validation images in RAM, the training images read as usual (detection and
    classification; classification caches as images are first read)."""
    from tests.test_engine import make_cfg
    from utils.data.loader import LoaderOptions
    from utils.engine.trainer import Trainer
    from utils.tasks.classify.task import ClassificationTask
    from utils.tasks.detect.task import DetectionTask

    det, _ = shapes
    t = Trainer(make_cfg(str(det), tmp_path, epochs=1, cache="val"), DetectionTask())
    t.fit()
    assert t.val_loader.dataset.cache_mode == "ram" and all(im is not None for im in t.val_loader.dataset.ims)
    assert t.dataset.cache_mode is None
    task, opts = ClassificationTask(), LoaderOptions(imgsz=64, cache="val", workers=0)
    loaders = {m: task.build_dataloader(tiny_cls / s, opts, {}, 4, 32, mode=m)[1]
               for m, s in (("train", "train"), ("val", "val"))}
    assert loaders["val"].cache_ram and not loaders["train"].cache_ram
    train = task.build_dataloader(tiny_cls / "train", LoaderOptions(imgsz=64, cache="ram", workers=0), {}, 4, 32,
                                  mode="train")[1]
    assert train.cache_ram  # plain --cache still caches the training images


def write_coco_gt(image_dir, label_dir, out, nc: int):
    """COCO annotations (polygons, boxes, areas) made from YOLO polygon labels, category ids 1..nc."""
    import json

    import cv2
    import numpy as np

    images, annotations = [], []
    for i, im in enumerate(sorted(image_dir.glob("*.*"))):
        h, w = cv2.imread(str(im)).shape[:2]
        images.append({"id": i, "file_name": im.name, "height": h, "width": w})
        for row in (label_dir / f"{im.stem}.txt").read_text().splitlines():
            v = [float(x) for x in row.split()]
            xy = np.array(v[1:]).reshape(-1, 2) * (w, h)
            x0, y0 = xy.min(0)
            x1, y1 = xy.max(0)
            area = 0.5 * abs(np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], 1)))
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(v[0]) + 1,
                                "segmentation": [xy.ravel().round(2).tolist()], "area": float(area), "iscrowd": 0,
                                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]})
    out.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": k + 1, "name": str(k)} for k in range(nc)]}))
    return out


@pytest.mark.shared
def test_segment_val_save_json_writes_rle_masks_scored_by_pycocotools(tmp_path):
    import json

    import cv2
    from pycocotools import mask as mask_utils

    from segment import val as seg_val
    from tests.conftest import FIXTURES, need

    weights = need(FIXTURES / "shapes_seg_n320.pt")
    root = need(FIXTURES / "shapes_seg_val")
    gt = write_coco_gt(root / "images" / "val", root / "labels" / "val", tmp_path / "gt.json", nc=3)
    data = tmp_path / "seg.yaml"
    data.write_text((root / "shapes_seg_val.yaml").read_text().replace("path: ../shared", f"path: {root.parents[2]}")
                    + f"coco_json: {gt}\n")
    ref = [float(x) for x in (root / "REFERENCE").read_text().split()]
    res = seg_val.run(weights=[str(weights)], data=str(data), imgsz=320, project=str(tmp_path), name="v",
                      device="cpu", workers=0, save_json=True, max_det=30)
    rows = json.loads((tmp_path / "v" / "shapes_seg_n320_predictions.json").read_text())
    sizes = {p.stem: cv2.imread(str(p)).shape[:2] for p in (root / "images" / "val").iterdir()}
    assert rows and all(r["segmentation"]["size"] == list(sizes[str(r["image_id"])]) for r in rows)
    best = max(rows, key=lambda r: r["score"])
    m = mask_utils.decode(best["segmentation"])
    x, y, w, h = (int(round(v)) for v in best["bbox"])
    assert m.sum() > 0.5 * w * h and m[y:y + h + 1, x:x + w + 1].sum() >= 0.98 * m.sum()  # the mask fills its box
    figures = list(res.figures.values())
    box, mask = figures[2:4], figures[6:8]  # pycocotools' mAP50, mAP50-95 for boxes, then for masks
    assert mask != pytest.approx(ref[6:8], abs=1e-3) and mask == pytest.approx(ref[6:8], abs=0.1)
    assert box == pytest.approx(ref[2:4], abs=0.1)


def test_masks_to_original_undoes_the_letterbox_at_prototype_resolution():
    """A box-shaped mask in a 60x90 image, letterboxed into 96x128 (gain 1, pads 19/18.5) and kept at 1/4: back in the
    original it covers the same pixels, and its RLE decodes to it."""
    import numpy as np
    from pycocotools import mask as mask_utils

    from utils.coco import mask_to_rle
    from utils.tasks.segment.masks import masks_to_original

    orig = torch.zeros(60, 90)
    orig[20:44, 12:60] = 1
    ratio_pad = ((1.0, 1.0), (19.0, 18.0))
    canvas = torch.zeros(96, 128)
    canvas[18:78, 19:109] = orig
    low = canvas.reshape(1, 24, 4, 32, 4).mean((2, 4)).gt(0.5).float()  # (1, 24, 32): prototype resolution
    back = masks_to_original(low, (96, 128), (60, 90), ratio_pad)[0].gt(0.5)
    iou = (back & orig.bool()).sum() / (back | orig.bool()).sum()
    ys, xs = back.nonzero().float().mean(0)
    assert back.shape == (60, 90) and iou > 0.7  # 1/4 resolution costs a cell at the edges, not the place
    assert abs(ys - 31.5) < 1.5 and abs(xs - 35.5) < 1.5
    rle = mask_to_rle(back.numpy())
    assert rle["size"] == [60, 90] and isinstance(rle["counts"], str)
    assert (mask_utils.decode(rle) == back.numpy().astype(np.uint8)).all()
