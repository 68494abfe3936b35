"""Adding a task touches nothing outside its own code: a task defined here (does an image hold any object? a two-class
classifier over detection data) registers itself, then trains, validates, predicts and is served by the shared
engine, the hub and the REST server, with no change anywhere else."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import write_tiny_shapes
from torch.utils.data import DataLoader, Dataset

from utils.data.dataset_config import check_dataset
from utils.data.labels import img2label_paths
from utils.data.loader import find_images
from utils.tasks import registry
from utils.tasks.classify.task import CLASSIFY_HYP, ClassificationTask
from utils.tasks.classify.transforms import center_crop

NAMES = {0: "empty", 1: "object"}


class ObjectPresence(Dataset):
    """Detection images, labelled 1 when their label file lists a box."""

    def __init__(self, path: str, imgsz: int):
        self.files, self.imgsz = find_images(path), imgsz
        self.labels = [int(Path(f).is_file() and Path(f).stat().st_size > 0) for f in img2label_paths(self.files)]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        crop = center_crop(cv2.imread(self.files[i]), self.imgsz)  # predict's transform: the same crop
        return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)[::-1])), self.labels[i]


class HasObjectTask(ClassificationTask):
    """Classification's model, loss and metric over detection data."""

    name = "has_object"

    def check_data(self, data):
        return {**check_dataset(data), "names": NAMES, "nc": len(NAMES)}

    def data_names(self, data):
        return NAMES

    def build_dataloader(self, path, opts, hyp, batch_size, stride, mode, rank=-1, nc=None):
        ds = ObjectPresence(path, opts.imgsz)
        return DataLoader(ds, batch_size=min(batch_size, len(ds)), shuffle=mode == "train"), ds


@pytest.fixture
def has_object():
    entry = registry.register(registry.TaskEntry(
        name="has_object", task=HasObjectTask, hub_size=32,
        scripts=registry.Scripts("has_object/train.py", "has_object/val.py", "has_object/predict.py")))
    yield entry
    registry.unregister("has_object")


@pytest.fixture
def presence_data(tmp_path) -> str:
    """The tiny shapes set with every other image's boxes removed (so both classes occur)."""
    y = write_tiny_shapes(tmp_path / "shapes", n_train=12, n_val=6)
    for i, f in enumerate(sorted((tmp_path / "shapes" / "det" / "labels").rglob("*.txt"))):
        if i % 2:
            f.write_text("")
    return str(y)


def test_a_task_defined_here_trains_validates_predicts_and_serves(has_object, presence_data, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from utils.engine.config import TrainConfig
    from utils.engine.predictor import Predictor, add_predict_arguments
    from utils.engine.trainer import Trainer
    from utils.engine.validate import add_val_arguments, validate
    from utils.hub.create import custom
    from utils.serve import Served, create_app

    task = has_object.build()
    cfg = TrainConfig(data=presence_data, cfg="yolov5n.yaml", epochs=1, imgsz=32, batch_size=4, workers=0,
                      project=str(tmp_path / "train"), noplots=True)
    trainer = Trainer(cfg, task, hyp=dict(CLASSIFY_HYP))
    figures = trainer.fit()
    best = trainer.save_dir / "weights" / "best.pt"
    assert best.is_file() and set(figures) == set(task.metric_names)

    opt = add_val_arguments(argparse.ArgumentParser(), HasObjectTask, presence_data, str(best),
                            str(tmp_path / "val"), batch_size=4, imgsz=32).parse_args(["--workers", "0"])
    result = validate(opt, has_object.build(opt))
    assert 0.0 <= result.figures[task.metric_names[0]] <= 1.0

    val_images = check_dataset(presence_data)["val"]
    opt = add_predict_arguments(argparse.ArgumentParser(), HasObjectTask, str(best), val_images,
                                str(tmp_path / "predict"), imgsz=32).parse_args(["--save-txt", "--device", "cpu"])
    run = Predictor(opt, has_object.build(opt)).run()
    image = sorted(find_images(val_images))[0]
    written = (run / "labels" / f"{Path(image).stem}.txt").read_text().split()

    client = TestClient(create_app({"m": Served(custom(best, device="cpu", _verbose=False))}, imgsz=32))
    served = client.post("/v1/object-detection/m", files={"image": ("a.png", Path(image).read_bytes())}).json()
    assert client.get("/health").json()["models"]["m"]["task"] == "has_object"
    assert {r["name"] for r in served} == set(NAMES.values())
    assert written[1] == served[0]["name"] and float(written[0]) == pytest.approx(served[0]["confidence"], abs=0.006)
