"""Flags no other test runs: detect.py's drawing and NMS switches, val.py --save-hybrid, the classify scripts'
compatibility flags, and the helper CLIs (models/yolo.py --line-profile, synthetic --samples, data_speed --samples)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2

from tests.conftest import ROOT, write_checkpoint


def _run(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


def test_detect_drawing_and_nms_flags(tmp_path, log, monkeypatch):
    """--save-crop writes one crop per kept box; --hide-labels/--hide-conf/--line-thickness change the drawing;
    --agnostic-nms keeps no two overlapping boxes of different classes; --view-img without a display says so once."""
    import detect

    monkeypatch.delenv("DISPLAY", raising=False)
    w = write_checkpoint(tmp_path / "m.pt", sharp=True)
    src = ROOT / "data" / "images" / "shapes1.jpg"  # wide enough that a tag's confidence is not cut off
    kw = dict(weights=str(w), source=str(src), imgsz=[64], conf_thres=0.3, project=str(tmp_path), save_txt=True)
    plain = detect.run(**kw, name="plain")
    crop = detect.run(**kw, name="crop", save_crop=True, view_img=True)
    n_boxes = len((plain / "labels" / f"{src.stem}.txt").read_text().splitlines())
    assert n_boxes > 0 and len(list((crop / "crops").rglob("*.jpg"))) == n_boxes
    assert log.text.count("--view-img needs a display") == 1  # once, then the run goes on without windows
    bare = detect.run(**kw, name="bare", hide_labels=True, line_thickness=1)
    noconf = detect.run(**kw, name="noconf", hide_conf=True)
    ims = [cv2.imread(str(d / src.name)) for d in (plain, bare, noconf)]
    assert (ims[0] != ims[1]).any() and (ims[0] != ims[2]).any() and (ims[1] != ims[2]).any()
    agn = detect.run(**kw, name="agn", agnostic_nms=True)
    assert len((agn / "labels" / f"{src.stem}.txt").read_text().splitlines()) <= n_boxes


def test_val_save_hybrid_writes_labels_with_predictions(tiny_data, tmp_path):
    import val

    w = write_checkpoint(tmp_path / "m.pt", sharp=True)
    val.run(weights=str(w), data=tiny_data, imgsz=64, save_hybrid=True, project=str(tmp_path), name="v")
    files = list((tmp_path / "v" / "labels").glob("*.txt"))
    assert files and all(len(line.split()) == 5 for f in files for line in f.read_text().splitlines())


def test_classify_compatibility_flags_change_nothing(tmp_path):
    from classify import predict, val
    from utils.tasks.classify.synthetic import generate_shapes_cls

    data = generate_shapes_cls(tmp_path / "cls", n_train=4, n_val=3, size=32)
    w = write_checkpoint(tmp_path / "c.pt", cls=True)
    kw = dict(weights=[str(w)], data=str(data), imgsz=32, batch_size=4, workers=0, project=str(tmp_path / "val"))
    assert val.run(**kw, dnn=True).figures == val.run(**kw).figures
    image = next((data / "val").rglob("*.jpg"))
    out = predict.run(weights=[str(w)], source=str(image), imgsz=[32], update=True, dnn=True,
                      project=str(tmp_path / "pred"))
    assert (out / image.name).is_file()


def test_model_cli_line_profile_prints_every_layer():
    r = _run("models/yolo.py", "--cfg", "yolov5n.yaml", "--line-profile")
    out = r.stdout + r.stderr
    assert "Total" in out and "Detect" in out


def test_synthetic_samples_and_data_speed_samples(tmp_path, tiny_data):
    r = _run("utils/data/synthetic.py", "--samples", str(tmp_path / "s"))
    written = [Path(x) for x in r.stdout.split()]
    assert written and all(p.is_file() for p in written)
    r = _run("benchmarks/data_speed.py", "--data", tiny_data, "--img", "64", "--samples", "4", "--repeats", "1",
             "--workers", "0")
    assert "images/s" in r.stdout + r.stderr


def test_one_yolov5_speed_flags_are_accepted_and_said_to_be_always_on(tiny_data, tmp_path):
    """A one-yolov5 command line runs unchanged: --bbox_iou_optim --multi_tensor_optimizer train as without them."""
    r = _run("train.py", "--data", tiny_data, "--cfg", "yolov5n.yaml", "--weights", "", "--img", "64", "--epochs",
             "1", "--batch-size", "8", "--workers", "0", "--noplots", "--noautoanchor", "--project", str(tmp_path),
             "--bbox_iou_optim", "--multi_tensor_optimizer")
    out = r.stdout + r.stderr
    assert out.count("--bbox_iou_optim --multi_tensor_optimizer: always on here") == 1
    assert (tmp_path / "exp" / "weights" / "last.pt").is_file()
    from segment import train as seg_train

    opt = seg_train.parse_opt(["--bbox-iou-optim", "--multi_tensor_optimizer"])
    assert opt.bbox_iou_optim and opt.multi_tensor_optimizer
