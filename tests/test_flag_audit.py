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
