"""Detection + semantic segmentation through the engine: loss, metric, one-epoch training, val.py and detect.py."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from utils.engine.cli import run_main

SEM_NAMES = "{0: background, 1: rectangle, 2: ellipse, 3: triangle, 4: star}"


def write_tiny_semantic(root: Path, n_train: int = 16, n_val: int = 8, imgsz_range=(64, 96)) -> Path:
    """The generated shapes images with boxes and class masks (4 box classes, 5 mask classes) and their YAML."""
    from utils.data.synthetic import generate_shapes

    generate_shapes(root, n_train=n_train, n_val=n_val, seed=1, imgsz_range=imgsz_range)
    y = root / "tiny-semantic.yaml"
    y.write_text(f"path: {root / 'semantic'}\ntrain: images/train\nval: images/val\n"
                 f"names: {{0: rectangle, 1: ellipse, 2: triangle, 3: star}}\n"
                 f"semantic:\n  masks_dir: masks\n  names: {SEM_NAMES}\n")
    return y


@pytest.fixture(scope="module")
def sem_data(tmp_path_factory) -> str:
    return str(write_tiny_semantic(tmp_path_factory.mktemp("semantic")))


@pytest.fixture(scope="module")
def trained(sem_data, tmp_path_factory) -> Path:
    """One epoch of joint training of yolov5n-city at 64 px; returns the run folder."""
    import train

    project = tmp_path_factory.mktemp("runs")
    train.run(data=sem_data, cfg="yolov5n-city.yaml", imgsz=64, batch_size=8, epochs=1, workers=0,
              noautoanchor=True, project=str(project), name="sem")
    return project / "sem"


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]


# ---------------------------------------------------------------------------------------------- loss
def test_loss_skips_the_head_an_image_is_not_labelled_for():
    from models.build import build_model
    from utils.log import quiet
    from utils.tasks.semantic.loss import SemanticDetectionLoss, pixel_ce

    torch.manual_seed(0)
    with quiet():
        model = build_model("yolov5n-city.yaml", nc=4, nc_seg=5).train()
    hyp = {"box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0, "anchor_t": 4.0, "fl_gamma": 0.0}
    loss = SemanticDetectionLoss(model.model[-1], hyp, ignore_index=255)
    with torch.no_grad():
        preds = model(torch.rand(2, 3, 64, 64))
    sem = torch.randint(0, 5, (2, 64, 64))
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.3]])
    both = {"targets": targets, "semantic": sem, "has_boxes": torch.tensor([True, True])}
    _, items = loss(preds, both)
    # image 1 has no box labels: its objectness must not count (it is not known to be empty)
    _, masked = loss(preds, {**both, "has_boxes": torch.tensor([True, False])})
    assert masked[1] != items[1] and torch.equal(masked[0], items[0])
    # a mask of ignore pixels adds nothing: the seg term is the other image's alone
    ign = sem.clone()
    ign[1] = 255
    assert float(pixel_ce(preds[1], ign, 255)) == pytest.approx(float(pixel_ce(preds[1][:1], sem[:1], 255)), rel=1e-5)
    assert float(pixel_ce(preds[1], torch.full_like(sem, 255), 255)) == 0.0  # no labelled pixel: 0, not NaN
    hard = pixel_ce(preds[1], sem, 255, ohem_thresh=0.7)
    assert float(hard) >= float(pixel_ce(preds[1], sem, 255))  # OHEM averages the hardest pixels only


# ---------------------------------------------------------------------------------------------- metric
def _score_label_logits(data_yaml: str, imgsz: int) -> dict:
    """Figures of logits made from each batch's letterboxed labels, scored against the full-size mask files."""
    from utils.data.loader import LoaderOptions
    from utils.tasks.semantic.task import SemanticOptions, SemanticPrediction, SemanticTask

    task = SemanticTask(SemanticOptions(data=data_yaml))
    data = task.check_data(data_yaml)
    opts = LoaderOptions(imgsz=imgsz, workers=0).with_data(data)
    loader, _ = task.build_dataloader(data["val"], opts, {}, 4, 32, mode="val")
    metric = task.new_metric(data["names"], Path("."))
    for raw in loader:
        batch = task.preprocess(raw, torch.device("cpu"))
        sem = batch["semantic"].clamp(max=4)  # letterbox padding is ignore (255): any class there
        logits = torch.nn.functional.one_hot(sem, 5).permute(0, 3, 1, 2).float() * 10
        metric.update([SemanticPrediction(torch.zeros(0, 6), lg) for lg in logits], batch)
    assert "IoU" in metric.summary() and "metrics/mAP_0.5" in metric.compute()
    return metric.compute()


def test_metric_maps_class_maps_back_to_each_mask_file(tmp_path, sem_data):
    # 64x64 images at --img 64: no resize, no padding, so the label's own logits must score exactly 1
    exact = _score_label_logits(str(write_tiny_semantic(tmp_path, 2, 4, imgsz_range=(64, 64))), 64)
    assert exact["metrics/mIoU"] == 1.0 and exact["metrics/pixel_acc"] == 1.0
    # 64-96 px images upscaled to 96 and mapped back: only the class edges move (by resampling)
    assert _score_label_logits(sem_data, 96)["metrics/pixel_acc"] > 0.95


# ---------------------------------------------------------------------------------------------- engine
def test_one_epoch_joint_training_logs_both_heads(trained):
    rows = _rows(trained / "results.csv")
    assert len(rows) == 1
    for k in ("train/box_loss", "train/seg_loss", "metrics/mIoU", "metrics/pixel_acc", "val/seg_loss"):
        assert np.isfinite(float(rows[0][k])), k
    assert float(rows[0]["train/seg_loss"]) > 0
    from utils.checkpoint import load_checkpoint

    ck = load_checkpoint(trained / "weights" / "best.pt")
    assert ck["task"] == "semantic" and ck["nc_seg"] == 5 and ck["seg_names"][4] == "star"
    import yaml

    hyp = yaml.safe_load((trained / "hyp.yaml").read_text())  # the default hyp file has no semantic keys
    assert (hyp["seg"], hyp["seg_lr_mult"], hyp["fitness_seg"]) == (0.2, 10.0, 0.5)


def test_val_prints_both_tables(trained, sem_data, tmp_path, log):
    import val

    res = val.run(weights=str(trained / "weights" / "best.pt"), data=sem_data, imgsz=64, project=str(tmp_path))
    assert {"metrics/mAP_0.5", "metrics/mIoU", "metrics/pixel_acc"} <= set(res.figures)
    assert "mAP50-95" in log.text and "IoU" in log.text and "background" in log.text


def test_val_and_detect_augment_on_a_joint_model(trained, sem_data, tmp_path):
    """--augment (flips and scales) merges boxes and averages the class logits; no validation loss without raw maps."""
    import detect
    import val

    w = str(trained / "weights" / "best.pt")
    res = val.run(weights=w, data=sem_data, imgsz=64, augment=True, project=str(tmp_path), name="v")
    assert 0 <= res.figures["metrics/mIoU"] <= 1 and 0 <= res.figures["metrics/mAP_0.5"] <= 1
    src = sorted((Path(sem_data).parent / "semantic" / "images" / "val").glob("*.jpg"))[0]
    detect.run(weights=w, source=str(src), imgsz=[64], augment=True, project=str(tmp_path), name="d")
    assert (tmp_path / "d" / src.name).is_file() and (tmp_path / "d" / "maps" / f"{src.stem}.png").is_file()


def test_val_on_a_dynamic_onnx_export_prints_the_pt_figures(trained, sem_data, tmp_path):
    """The exported file has no raw maps between boxes and logits: the backend must put the logits where the
    task reads them (a bug once: val.py took the empty placeholder for the class logits)."""
    import export
    import val

    w = tmp_path / "best.pt"
    w.write_bytes((trained / "weights" / "best.pt").read_bytes())
    export.run(weights=[str(w)], include=["onnx"], imgsz=[64], dynamic=True, device="cpu")
    pt = val.run(weights=str(w), data=sem_data, imgsz=64, project=str(tmp_path), name="pt").figures
    ox = val.run(weights=str(w.with_suffix(".onnx")), data=sem_data, imgsz=64, project=str(tmp_path),
                 name="onnx").figures
    for k in ("metrics/mAP_0.5", "metrics/mIoU", "metrics/pixel_acc"):
        assert ox[k] == pytest.approx(pt[k], abs=1e-3), k


def test_detect_writes_overlays_class_maps_and_a_video(trained, tmp_path, log):
    import detect

    w = str(trained / "weights" / "best.pt")
    frames = Path(write_tiny_semantic(tmp_path / "frames", 2, 4, imgsz_range=(80, 80))).parent
    src = frames / "semantic" / "images" / "val"  # four 80x80 frames, predicted at 64 and mapped back
    out = detect.run(weights=w, source=str(src), imgsz=[64], conf_thres=0.0, project=str(tmp_path), name="a",
                     save_as_video=True, fps=5, alpha=0.3, save_txt=True)
    images = sorted(src.glob("*.jpg"))
    maps = sorted((out / "maps").glob("*.png"))
    assert len(list(out.glob("*.jpg"))) == len(images) == len(maps) == 4
    im0 = cv2.imread(str(images[0]))
    assert cv2.imread(str(maps[0])).shape == im0.shape  # the class map at the original size
    cap = cv2.VideoCapture(str(out / f"{out.name}.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    # frames of different sizes cannot make one video: one line naming the frame
    mixed = Path(write_tiny_semantic(tmp_path / "mixed", 2, 4)).parent / "semantic" / "images" / "val"
    opt = detect.parse_opt(["--weights", w, "--source", str(mixed), "--imgsz", "64", "--project", str(tmp_path),
                            "--name", "b", "--save-as-video"])
    with pytest.raises(SystemExit):
        run_main(detect.main, opt)
    assert "a video needs frames of one size" in log.text


def test_submit_needs_cityscapes_classes_and_detectors_refuse_semantic_flags(trained, tiny_data, tmp_path, log):
    import detect
    from models.build import build_model
    from utils.checkpoint import make_checkpoint, save_checkpoint

    opt = detect.parse_opt(["--weights", str(trained / "weights" / "best.pt"), "--source", str(tmp_path),
                            "--project", str(tmp_path / "r"), "--submit"])
    with pytest.raises(SystemExit):
        run_main(detect.main, opt)
    assert "not the 19 Cityscapes train-id classes" in log.text
    torch.manual_seed(0)
    w = save_checkpoint(make_checkpoint(build_model("yolov5n.yaml", nc=4)), tmp_path / "det.pt")
    opt = detect.parse_opt(["--weights", str(w), "--source", str(tmp_path), "--project", str(tmp_path / "r"),
                            "--submit"])
    with pytest.raises(SystemExit):
        run_main(detect.main, opt)
    assert "--submit is for semantic models" in log.text and "holds a 'detect' model" in log.text


def test_train_picks_the_task_from_the_model(sem_data, tmp_path):
    from utils.engine.config import TrainConfig
    from utils.tasks.pick import task_for_training

    def pick_train_task(cfg):
        return task_for_training("train.py", cfg)[1]

    assert pick_train_task(TrainConfig(cfg="yolov5n-city.yaml")).name == "semantic"
    assert pick_train_task(TrainConfig(cfg="yolov5n.yaml")).name == "detect"
    assert pick_train_task(TrainConfig(cfg="", weights=str(tmp_path / "missing.pt"))).name == "detect"
