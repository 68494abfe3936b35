"""Classification: upstream's evaluation preprocessing, top-1/top-5, training/val/predict through the shared engine."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch
from conftest import DATASETS, FIXTURES, need

from utils.tasks.classify.dataset import ClassifyDataset, check_classify_data
from utils.tasks.classify.metric import ClsMetric
from utils.tasks.classify.synthetic import generate_shapes_cls
from utils.tasks.classify.task import ClassificationTask
from utils.tasks.classify.transforms import IMAGENET_MEAN, IMAGENET_STD, center_crop, normalize, train_transform


@pytest.fixture(scope="module")
def tiny_cls(tmp_path_factory):
    """A small generated ImageFolder set (4 classes, 32 px crops)."""
    return generate_shapes_cls(tmp_path_factory.mktemp("cls") / "shapes-cls", n_train=10, n_val=5, size=32)


def test_center_crop_is_the_centred_square_resized_bilinearly():
    im = np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    out = center_crop(im, 16)
    ref = cv2.resize(im[:, 15:55], (16, 16), interpolation=cv2.INTER_LINEAR)  # left = (70 - 40) // 2
    assert out.shape == (16, 16, 3) and np.array_equal(out, ref)
    tall = np.zeros((9, 4, 3), np.uint8)
    tall[2:6] = 200  # top = (9 - 4) // 2 = 2: the crop is exactly the bright rows
    assert (center_crop(tall, 4) == 200).all()


def test_normalize_is_imagenet_on_rgb_over_255():
    img = torch.tensor([255, 0, 128], dtype=torch.uint8).view(1, 3, 1, 1)
    out = normalize(img).flatten()
    want = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), IMAGENET_MEAN, IMAGENET_STD)]
    assert out.tolist() == pytest.approx(want, abs=1e-6)


def test_dataset_gives_rgb_centre_crops_and_train_indices(tmp_path):
    for split, classes in (("train", ("a", "b", "c")), ("val", ("c", "a"))):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            im = np.zeros((20, 30, 3), np.uint8)
            im[..., 0] = 10  # blue in BGR
            cv2.imwrite(str(tmp_path / split / c / "x.png"), im)
    data = check_classify_data(str(tmp_path))
    assert data["names"] == {0: "a", 1: "b", 2: "c"} and data["val"].endswith("val")
    ds = ClassifyDataset(data["val"], imgsz=8)
    assert [j for _, j in ds.samples] == [0, 2]  # val's own folders map to train's indices
    img, j = ds[0]
    assert img.shape == (3, 8, 8) and img.dtype == torch.uint8
    assert (img[2] == 10).all() and (img[:2] == 0).all()  # RGB: blue is the last channel


def test_test_split_is_preferred_and_train_augmentation_keeps_the_size(tmp_path):
    for split in ("train", "val", "test"):
        (tmp_path / split / "k").mkdir(parents=True)
    assert check_classify_data(str(tmp_path))["val"].endswith("test")
    im = np.random.default_rng(1).integers(0, 256, (50, 30, 3), dtype=np.uint8)
    out = train_transform(im, 24, {"scale": [0.08, 1.0], "fliplr": 0.5, "jitter": 0.4})
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8


def test_top1_top5_on_known_logits_and_topk_clipped_to_nc():
    task = ClassificationTask()
    logits = torch.tensor([[9.0, 1, 2, 3, 4, 5, 6],  # label 0: top-1
                           [0.0, 9, 8, 7, 6, 5, 4],  # label 4: 5th best -> top-5 only
                           [0.0, 9, 8, 7, 6, 5, 4]])  # label 0: worst -> neither
    m = ClsMetric({i: f"c{i}" for i in range(7)})
    m.update(task.postprocess(logits), {"cls": torch.tensor([0, 4, 0])})
    fig = m.compute()
    assert fig["metrics/accuracy_top1"] == pytest.approx(1 / 3) and fig["metrics/accuracy_top5"] == pytest.approx(2 / 3)
    rows = m.summary(verbose=True).splitlines()
    assert rows[0].split() == ["Class", "Images", "top1_acc", "top5_acc"]
    assert rows[1].split() == ["all", "3", "0.333", "0.667"] and rows[2].split() == ["c0", "2", "0.5", "0.5"]
    two = ClsMetric({0: "a", 1: "b"})
    two.update(task.postprocess(torch.tensor([[0.1, 0.9], [0.8, 0.2]])), {"cls": torch.tensor([0, 0])})
    assert list(two.compute().values()) == [0.5, 1.0]  # with 2 classes every label is within the top 5
    assert task.fitness(fig) == pytest.approx(1 / 3)


def test_train_val_predict_through_the_engine(tiny_cls, tmp_path):
    from classify import predict, train, val

    figures = train.run(data=str(tiny_cls), imgsz=64, epochs=1, batch_size=8, workers=0, device="cpu",
                        project=str(tmp_path / "train"), name="exp")
    run = tmp_path / "train" / "exp"
    assert (run / "weights" / "best.pt").exists() and set(figures) == set(ClsMetric.names)
    with open(run / "results.csv") as f:
        row = {k.strip(): v for k, v in next(csv.DictReader(f)).items()}
    assert {"train/loss", "val/loss", "metrics/accuracy_top1", "metrics/accuracy_top5"} <= set(row)
    assert float(row["val/loss"]) > 0

    result = val.run(weights=[str(run / "weights" / "best.pt")], data=str(tiny_cls), imgsz=64, batch_size=16,
                     workers=0, device="cpu", project=str(tmp_path / "val"))
    assert result.figures == pytest.approx(figures)  # the engine's final pass and val.py score best.pt alike

    image = next((tiny_cls / "val" / "star").glob("*.jpg"))
    out = predict.run(weights=[str(run / "weights" / "best.pt")], source=str(image), imgsz=[64], device="cpu",
                      save_txt=True, project=str(tmp_path / "predict"))
    assert (out / image.name).exists()
    lines = (out / "labels" / f"{image.stem}.txt").read_text().splitlines()
    assert len(lines) == 4 and all(float(x.split()[0]) <= 1 for x in lines)  # 4 classes: top-5 clipped to 4


@pytest.mark.parametrize("weights, data, imgsz, want", [
    ("shapes_cls_n.pt", FIXTURES / "shapes_cls", 64, {"all": (85, 85, 85)}),
    ("antsbees_cls_n.pt", DATASETS / "cls_mini", 128, {"all": (153, 96, 153), "ants": (70, 56, 70),
                                                        "bees": (83, 40, 83)}),
])
def test_upstream_checkpoints_score_as_upstream_val(weights, data, imgsz, want, tmp_path):
    """Upstream classify/val.py: shapes 'all 85 1 1'; ants/bees 'all 153 0.627 1, ants 70 0.8 1, bees 83 0.482 1'."""
    from classify import val

    result = val.run(weights=[str(need(FIXTURES / weights))], data=str(need(data)), imgsz=imgsz, workers=0,
                     device="cpu", project=str(tmp_path))
    acc, target = result.metric.accuracy()
    names = {v: k for k, v in result.metric.class_names.items()}
    for cls, (n, n_top1, n_top5) in want.items():
        sel = torch.ones_like(target, dtype=torch.bool) if cls == "all" else target == names[cls]
        assert (int(sel.sum()), int(acc[sel, 0].sum()), int(acc[sel, 1].sum())) == (n, n_top1, n_top5), cls


@pytest.mark.slow
def test_classify_torchrun_two_cpu_processes(tiny_cls, tmp_path):
    """classify/train.py under torchrun (2 gloo processes): one run folder, best.pt, a loss like one process's."""
    from test_ddp import epoch_losses, run_single_and_two_ranks

    from utils.paths import ROOT

    args = [str(ROOT / "classify/train.py"), "--data", str(tiny_cls), "--img", "64", "--batch-size", "8",
            "--epochs", "1", "--workers", "0", "--noplots", "--device", "cpu"]
    run_single_and_two_ranks(args, tmp_path)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["exp"]
    assert (tmp_path / "ddp/exp/weights/best.pt").exists()
    # random crops differ between the runs, so only the scale is compared: a mean CE near ln(4) in both
    for a, b in zip(epoch_losses(tmp_path / "ddp/exp"), epoch_losses(tmp_path / "single/exp")):
        assert a == pytest.approx(b, rel=0.25)


def test_resume_continues_a_classification_run(tiny_cls, tmp_path, monkeypatch):
    """An interrupted run resumes with its own classify options (ClassifyConfig fields), ending as a whole run."""
    from classify import train
    from utils.engine.trainer import Trainer

    kw = {"data": str(tiny_cls), "imgsz": 64, "epochs": 2, "batch_size": 8, "workers": 0, "device": "cpu",
          "noplots": True, "lr0": 0.002}
    train.run(project=str(tmp_path / "a"), **kw)
    real_save = Trainer._save

    def save_then_die(self, epoch, fi):
        real_save(self, epoch, fi)
        raise KeyboardInterrupt  # killed right after the epoch-0 checkpoint landed

    monkeypatch.setattr(Trainer, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.run(project=str(tmp_path / "b"), **kw)
    monkeypatch.setattr(Trainer, "_save", real_save)
    last = tmp_path / "b/exp/weights/last.pt"
    assert torch.load(last, weights_only=True)["opt"]["lr0"] == 0.002
    train.run(resume=str(last), workers=0)

    def rows(run):
        with open(run / "results.csv") as f:
            return [{k.strip(): float(v) for k, v in r.items()} for r in csv.DictReader(f)]

    full, resumed = rows(tmp_path / "a/exp"), rows(tmp_path / "b/exp")
    assert [r["epoch"] for r in resumed] == [0, 1]
    assert resumed[1]["train/loss"] == pytest.approx(full[1]["train/loss"], rel=1e-5)
    assert resumed[1]["x/lr1"] == pytest.approx(full[1]["x/lr1"], rel=1e-9)


def test_build_model_cuts_detection_yaml_and_resizes_a_cls_head():
    task = ClassificationTask()
    model = task.build_model("yolov5n.yaml", 3, {"dropout": 0.3, "cutoff": 10})
    head = model.model[-1]
    assert len(model.model) == 10 and head.linear.out_features == 3 and head.drop.p == 0.3
    again = task.build_model({**model.yaml, "head": [[-1, 1, "Classify", [3]]]}, 5)  # a count fixed in the YAML
    assert again.model[-1].linear.out_features == 5 and again.nc == 5
    x = torch.zeros(2, 3, 64, 64)
    assert again.eval()(x).shape == (2, 5)
