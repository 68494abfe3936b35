"""Exported weights in val.py, detect.py, segment/* and classify/*: the same figures and files as the .pt."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, need

from utils.checkpoint import CheckpointError
from utils.data.loader import LoaderOptions
from utils.export.backend import BackendError, load_backend, load_exported
from utils.export.exporter import export_model

TINY_NAMES = {0: "rectangle", 1: "ellipse", 2: "triangle", 3: "star"}


def sig3(x: float) -> float:
    return float(f"{x:.3g}")


def confident_checkpoint(cfg: str, path: Path) -> Path:
    """A random-weight model whose objectness is raised so that its boxes reach the metrics (non-zero figures)."""
    from models.build import build_model
    from utils.checkpoint import make_checkpoint, save_checkpoint
    from utils.log import quiet

    with quiet():
        model = build_model(cfg, nc=4)
    with torch.no_grad():
        for conv in model.model[-1].m:
            conv.bias.view(model.model[-1].na, -1)[:, 4] += 4.0
    model.names = dict(TINY_NAMES)
    return save_checkpoint(make_checkpoint(model), path)


def export_to(weights: Path, folder: Path, include: list[str], **kw) -> dict[str, Path]:
    """Export a copy of `weights` placed in `folder` (exports are written beside their weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    w = Path(shutil.copy(weights, folder / weights.name))
    return export_model(load_backend(w), w, include, **kw)


@pytest.fixture(scope="module")
def det(tmp_path_factory) -> dict[str, Path]:
    """A detector and its exports: dynamic TorchScript and ONNX, and a static batch-1 ONNX at 96."""
    root = tmp_path_factory.mktemp("det")
    w = confident_checkpoint("yolov5n.yaml", root / "det.pt")
    dyn = export_to(w, root / "dynamic", ["torchscript", "onnx"], imgsz=[96], dynamic=True)
    static = export_to(w, root / "static", ["onnx"], imgsz=[96])
    return {"pt": w, "torchscript": dyn["torchscript"], "onnx": dyn["onnx"], "static": static["onnx"]}


def test_val_feeds_exports_the_pt_batches_and_square_ones_to_static(det, tiny_data, tmp_path, log):
    """Dynamic exports get val.py's rectangular batches and return the .pt's outputs on them; a static export gets
    square batches at its size. Figures are compared exactly on a trained checkpoint in the last test: a random
    model's scores tie to 1e-7, so export noise (1e-5) can swap boxes at the 0.001 threshold and move its figures."""

    import val
    from utils.tasks.detect.task import DetectionTask

    task = DetectionTask()
    cfg = LoaderOptions(imgsz=96, workers=0)
    loader, _ = task.build_dataloader(task.check_data(tiny_data)["val"], cfg, {}, 2, 32, mode="val")
    models = {k: load_backend(det[k]) for k in ("pt", "torchscript", "onnx")}
    shapes = set()
    for batch in loader:
        img = task.preprocess(batch, torch.device("cpu"))["img"]
        shapes.add(tuple(img.shape[2:]))
        ref = models["pt"](img)[0]
        for k in ("torchscript", "onnx"):
            assert (models[k](img)[0] - ref).abs().max() < 1e-3, k
    assert any(h != w for h, w in shapes)  # rectangular batches reached the exports

    res = {k: val.run(weights=[str(f)], data=tiny_data, imgsz=96, batch_size=2, workers=0, project=str(tmp_path),
                      name=k) for k, f in det.items()}
    for k, r in res.items():
        assert r.metric.seen == 8 and set(r.figures) == set(res["pt"].figures), k
    assert "square letterboxed batches at 96x96" in log.text and "at shape (2, 3, 96, 96)" in log.text


def read_labels(folder: Path) -> dict[str, list[list[float]]]:
    return {p.name: [[float(x) for x in line.split()] for line in p.read_text().splitlines()]
            for p in sorted(folder.glob("*.txt"))}


def test_detect_with_onnx_and_torchscript_writes_the_pt_labels(det, tiny_data, tmp_path):
    import detect

    source = Path(tiny_data).parent / "det" / "images" / "val"
    runs = {k: detect.run(weights=[str(det[k])], source=str(source), imgsz=[96], save_txt=True, save_conf=True,
                          conf_thres=0.001, max_det=5, project=str(tmp_path), name=k)
            for k in ("pt", "onnx", "torchscript")}  # the 5 best boxes per image: clear of threshold ties
    ref = read_labels(runs["pt"] / "labels")
    assert sum(len(v) for v in ref.values()) > 0
    for k in ("onnx", "torchscript"):
        got = read_labels(runs[k] / "labels")
        assert got.keys() == ref.keys(), k
        for name in ref:
            assert torch.tensor(got[name]) == pytest.approx(torch.tensor(ref[name]), abs=2e-3), (k, name)
        assert len(list(runs[k].glob("*.jpg"))) == len(list(source.glob("*.jpg")))


def test_segment_and_classify_scripts_run_exports_like_the_pt(tiny_data, tmp_path):
    from classify import predict as cls_predict
    from classify import val as cls_val
    from segment import val as seg_val
    from utils.tasks.classify.synthetic import generate_shapes_cls
    from utils.tasks.classify.task import ClassificationTask

    seg_yaml = tmp_path / "seg.yaml"
    seg_yaml.write_text(Path(tiny_data).read_text().replace("/det\n", "/seg\n"))
    w = confident_checkpoint("yolov5n-seg.yaml", tmp_path / "seg" / "seg.pt")
    onnx = export_to(w, tmp_path / "seg-export", ["onnx"], imgsz=[96], dynamic=True)["onnx"]
    a, b = (seg_val.run(weights=[str(f)], data=str(seg_yaml), imgsz=96, batch_size=4, workers=0,
                        project=str(tmp_path / "seg-val")) for f in (w, onnx))
    assert b.figures == pytest.approx(a.figures, rel=1e-4, abs=1e-7) and len(a.figures) == 8

    from utils.checkpoint import make_checkpoint, save_checkpoint
    from utils.log import quiet

    data = generate_shapes_cls(tmp_path / "shapes-cls", n_train=4, n_val=3, size=32)
    with quiet():
        model = ClassificationTask().build_model("yolov5n.yaml", nc=4)
    model.names = dict(TINY_NAMES)
    w = save_checkpoint(make_checkpoint(model), tmp_path / "cls" / "cls.pt")
    onnx = export_to(w, tmp_path / "cls-export", ["onnx"], imgsz=[64])["onnx"]  # static: val runs at 64
    a, b = (cls_val.run(weights=[str(f)], data=str(data), imgsz=64, batch_size=8, workers=0,
                        project=str(tmp_path / "cls-val")) for f in (w, onnx))
    assert b.figures == a.figures and b.metric.accuracy()[0].shape[0] == a.metric.accuracy()[0].shape[0] > 0
    image = next((data / "val" / "star").glob("*.jpg"))
    outs = [cls_predict.run(weights=[str(f)], source=str(image), imgsz=[64], save_txt=True,
                            project=str(tmp_path / "cls-predict")) for f in (w, onnx)]
    lines = [(o / "labels" / f"{image.stem}.txt").read_text().splitlines() for o in outs]
    assert lines[0] == lines[1] and len(lines[0]) == 4


def test_wrong_task_augment_and_missing_onnxruntime_are_one_line(det, tiny_data, tmp_path, monkeypatch):
    import detect
    import val
    from segment import predict as seg_predict

    with pytest.raises(CheckpointError, match=r"det\.onnx: a 'detect' model, but this script runs 'segment' models"):
        seg_predict.run(weights=[str(det["onnx"])], source=tiny_data)
    with pytest.raises(BackendError, match=r"det\.pt is a detect model; this script runs classify models"):
        load_backend(det["pt"], task="classify")
    with pytest.raises(BackendError, match="--augment .* needs the .pt weights"):
        val.run(weights=[str(det["onnx"])], data=tiny_data, imgsz=96, workers=0, augment=True,
                project=str(tmp_path))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendError, match=r"det\.onnx: running ONNX models needs onnxruntime \(pip install"):
        detect.run(weights=[str(det["onnx"])], source=tiny_data)


def test_export_without_onnxruntime_says_it_was_not_checked(det, tmp_path, log, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    export_to(det["pt"], tmp_path, ["onnx"], imgsz=[64])
    assert "not checked: onnxruntime is not installed" in log.text
    monkeypatch.delitem(sys.modules, "onnxruntime")
    assert load_exported(tmp_path / "det.onnx").fixed_imgsz == (64, 64)


def test_half_and_deepcopy_as_the_evaluator_uses_them(det):
    import copy

    m = load_backend(det["onnx"])
    c = copy.deepcopy(m).half()
    assert next(c.parameters()).dtype == torch.float16 and next(m.parameters()).dtype == torch.float32
    y = c(torch.rand(1, 3, 64, 64).half())
    assert y[0].dtype == torch.float16 and y[0].shape == (1, 252, 9)
    ts = load_backend(det["torchscript"])
    assert copy.deepcopy(ts).module is not ts.module


def test_onnx_sessions_spin_within_a_run_and_stop_after_it(det, monkeypatch):
    """Spinning off slowed every run by 5-10%; spinning on starved the next image's pre-process. Stop after runs."""
    import onnxruntime as ort

    seen = []
    real = ort.InferenceSession

    def recording(path, options=None, **kw):
        seen.append(options)
        return real(path, options, **kw)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    load_exported(det["onnx"])
    assert len(seen) == 1 and seen[0].get_session_config_entry("session.force_spinning_stop") == "1"
    with pytest.raises(RuntimeError):  # never set: spinning stays on within a run
        seen[0].get_session_config_entry("session.intra_op.allow_spinning")


@pytest.mark.shared
def test_upstream_checkpoint_val_on_pt_torchscript_onnx(tmp_path, log):
    """Upstream's val.py prints 0.971 0.996 0.986 0.789 for the .pt and 0.983 0.999 0.994 0.792 for its (static)
    .onnx; ours prints the .pt's figures for dynamic exports, and upstream's .onnx figures for a static one."""
    import val

    weights = need(FIXTURES / "shapes_n320.pt")
    data = str(need(FIXTURES / "shapes_val" / "shapes_val.yaml"))
    dyn = export_to(weights, tmp_path / "dynamic", ["torchscript", "onnx"], imgsz=[320], dynamic=True)
    static = export_to(weights, tmp_path / "static", ["onnx"], imgsz=[320])
    files = {"pt": weights, **dyn, "static": static["onnx"]}
    got = {}
    for k, f in files.items():
        p, r, m50, m = val.run(weights=[str(f)], data=data, imgsz=320, batch_size=32, workers=0,
                               project=str(tmp_path), name=k).figures.values()
        got[k] = (sig3(p), sig3(r), sig3(m50), sig3(m))
    want = (0.971, 0.996, 0.986, 0.789)
    assert got == {"pt": want, "torchscript": want, "onnx": want, "static": (0.983, 0.999, 0.994, 0.792)}
