"""Bad input tried as a new user would: one clear line and exit code 1 (or a warning and a skip), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_imageio import huge_header_png
from utils.engine.cli import run_main


def _exits_with_one_line(log, fn, *args) -> str:
    """Run an entry point as the CLI does; it must exit 1 after one ERROR line (no traceback)."""
    with pytest.raises(SystemExit) as e:
        run_main(fn, *args)
    assert e.value.code == 1
    errors = [r.getMessage() for r in log.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in log.text
    return errors[0]


@pytest.mark.parametrize("flags,needle", [
    (["--img", "0"], "--img must be a positive"),
    (["--img", "-64"], "--img must be a positive"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--workers", "-1"], "--workers must be 0 or more"),
    (["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1)"),
    (["--patience", "-3"], "--patience must be 0"),
    (["--device", "7"], "--device 7 requested but CUDA is not available"),
])
def test_train_flags_out_of_range(tiny_data, tmp_path, log, flags, needle):
    import train

    if flags[0] == "--device" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a GPU 7")
    opt = train.parse_opt(["--data", tiny_data, "--project", str(tmp_path), "--noplots", *flags])
    assert needle in _exits_with_one_line(log, train.main, opt)
    assert not list(tmp_path.glob("exp*/weights/*.pt"))  # refused before anything ran


def test_val_and_detect_flags_out_of_range(tmp_path, log):
    import detect
    import val

    opt = val.parse_opt(["--batch-size", "0", "--project", str(tmp_path)])
    assert "--batch-size must be at least 1" in _exits_with_one_line(log, val.main, opt)
    log.clear()
    opt = detect.parse_opt(["--imgsz", "0", "--project", str(tmp_path)])
    assert "--imgsz takes one or two positive sizes" in _exits_with_one_line(log, detect.main, opt)


def test_a_dataset_of_unreadable_images_is_one_line(tmp_path, log):
    import train

    root = tmp_path / "broken"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(3):
            (root / "images" / split / f"{i}.jpg").write_bytes(b"not a jpeg at all")
            (root / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data = tmp_path / "broken.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: {{0: a}}\n")
    opt = train.parse_opt(["--data", str(data), "--project", str(tmp_path / "runs"), "--noplots", "--workers", "0"])
    message = _exits_with_one_line(log, train.main, opt)
    assert "No usable images" in message and str(root / "images" / "train") in message


def test_scan_line_prints_its_prefix_once(tiny_data, tmp_path, log):
    from utils.data.dataset_config import check_dataset
    from utils.tasks.detect.dataset import YoloDataset

    data = check_dataset(tiny_data)
    for cache in Path(data["path"]).rglob("*.cache"):
        cache.unlink()  # a fresh scan, not the cached line
    YoloDataset(data["val"], 64, prefix="val: ")
    scans = [r.getMessage() for r in log.records if "Scanning" in r.getMessage()]
    assert scans and all(m.startswith("val: Scanning") and "val: val:" not in m for m in scans)


def test_detect_skips_an_image_whose_header_claims_a_huge_size(tmp_path, log):
    import detect
    from models.build import build_model
    from utils.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    w = save_checkpoint(make_checkpoint(build_model("yolov5n.yaml", nc=2)), tmp_path / "w.pt")
    src = tmp_path / "src"
    src.mkdir()
    huge_header_png(src / "huge.png")
    (src / "ok.jpg").write_bytes(_a_jpeg())
    out = detect.run(weights=str(w), source=str(src), imgsz=[64], project=str(tmp_path / "runs"), device="cpu")
    assert (out / "ok.jpg").is_file() and not (out / "huge.png").exists()
    assert "huge.png" in log.text  # the skip is reported by name


def _a_jpeg() -> bytes:
    import cv2
    import numpy as np

    return cv2.imencode(".jpg", np.full((48, 64, 3), 127, np.uint8))[1].tobytes()


@pytest.mark.parametrize("script", ["detect", "val"])
def test_a_classification_checkpoint_names_the_right_script(tiny_data, tmp_path, log, script):
    import importlib

    from utils.checkpoint import make_checkpoint, save_checkpoint
    from utils.log import quiet
    from utils.tasks.classify.task import ClassificationTask

    torch.manual_seed(0)
    with quiet():
        model = ClassificationTask().build_model("yolov5n.yaml", nc=3)
    w = save_checkpoint(make_checkpoint(model), tmp_path / "cls.pt")
    mod = importlib.import_module(script)
    extra = ["--source", str(tmp_path)] if script == "detect" else ["--data", tiny_data]
    opt = mod.parse_opt(["--weights", str(w), "--project", str(tmp_path / "runs"), "--device", "cpu", *extra])
    message = _exits_with_one_line(log, mod.main, opt)
    assert "a 'classify' model" in message and "classify/predict.py" in message
