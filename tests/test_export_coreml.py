"""--include coreml: every task exports an ML Program whose spec (input, outputs, shapes, types) and metadata match
the PyTorch export; off macOS the numbers cannot be run, which the export and the loader each say in one line.

Skipped in one line without coremltools."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from test_export import NAMES, make_checkpoint
from test_export_formats import city_checkpoint

from utils.export import ExportError
from utils.export.backend import BackendError, load_backend, weights_kind

needs_coreml = pytest.mark.skipif(importlib.util.find_spec("coremltools") is None,
                                  reason="coreml: coremltools not installed (pip install -r requirements-export.txt)")
off_macos = pytest.mark.skipif(sys.platform == "darwin", reason="on macOS Core ML runs the file")


def spec_features(path: Path) -> tuple[list, list]:
    """(name, shape) of the inputs and of the outputs in a Core ML file's spec."""
    import coremltools as ct

    d = ct.utils.load_spec(str(path)).description
    return [[(x.name, list(x.type.multiArrayType.shape)) for x in xs] for xs in (d.input, d.output)]


@needs_coreml
@pytest.mark.parametrize("task, outputs", [
    ("detect", [(1, 252, 8)]),
    ("segment", [(1, 252, 40), (1, 32, 16, 16)]),
    ("classify", [(1, 3)]),
    ("semantic", [(1, 252, 8), (1, 4, 64, 64)]),
])
def test_every_task_exports_a_spec_like_the_pytorch_export(task, outputs, tmp_path, log):
    import export
    from utils.export.coreml import read_metadata

    w = city_checkpoint(tmp_path / "city.pt") if task == "semantic" else make_checkpoint(task, tmp_path / f"{task}.pt")
    export.run(weights=[str(w)], include=["coreml"], imgsz=[64], device="cpu")
    f = w.with_suffix(".mlpackage")
    assert f.is_dir() and f"saved as {f}" in log.text
    if sys.platform != "darwin":
        assert "numbers not checked: Core ML models run only on macOS (checked here: the spec's" in log.text
    inputs, outs = spec_features(f)
    assert inputs == [("images", [1, 3, 64, 64])]
    assert outs == [(f"output{i}", list(s)) for i, s in enumerate(outputs)]
    meta = read_metadata(f)
    assert weights_kind(f) == meta["task"] == task
    assert (meta["names"], meta["imgsz"], meta["stride"], meta["half"]) == (NAMES, [64, 64], 32, False)
    assert meta["strides"] == load_backend(w).stride.tolist()
    if task == "semantic":
        assert meta["seg_names"][3] == "person"


@needs_coreml
@off_macos
def test_loading_off_macos_is_one_line_for_every_script(tmp_path):
    import detect
    import export
    import val

    w = make_checkpoint("detect", tmp_path / "det.pt")
    f = export.run(weights=[str(w)], include=["coreml"], imgsz=[64], half=True)[0]["coreml"]
    assert f.name == "det-fp16.mlpackage"
    with pytest.raises(BackendError, match=r"det-fp16.mlpackage: Core ML models run only on macOS \(this is linux\)"):
        load_backend(f)
    with pytest.raises(BackendError, match="run only on macOS"):
        detect.run(weights=[str(f)], source=str(tmp_path), imgsz=[64], project=str(tmp_path))
    with pytest.raises(BackendError, match="run only on macOS"):
        val.run(weights=[str(f)], data=str(tmp_path / "never-read.yaml"), imgsz=64, project=str(tmp_path))


@needs_coreml
def test_half_stores_float16_weights_behind_float32_features(tmp_path):
    import export
    from utils.export.coreml import read_metadata

    w = make_checkpoint("classify", tmp_path / "cls.pt")
    full = export.run(weights=[str(w)], include=["coreml"], imgsz=[32])[0]["coreml"]
    half = export.run(weights=[str(w)], include=["coreml"], imgsz=[32], half=True)[0]["coreml"]

    def size(d: Path) -> int:
        return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())

    assert read_metadata(half)["half"] and not read_metadata(full)["half"]
    assert 0.4 * size(full) < size(half) < 0.6 * size(full)  # weights are nearly all of the package
    assert spec_features(half) == spec_features(full)  # the input and outputs stay float32 either way


def test_flags_missing_package_and_foreign_files_are_one_line(tmp_path, monkeypatch):
    import export
    from utils.export import coreml, exporter

    w = make_checkpoint("classify", tmp_path / "cls.pt")
    if importlib.util.find_spec("coremltools") is not None:
        with pytest.raises(ExportError, match="Core ML export is static here: export without --dynamic"):
            export.run(weights=[str(w)], include=["coreml"], imgsz=[32], dynamic=True)
    table = [dict(f, available=False) if f["argument"] == "coreml" else f for f in exporter.export_formats()]
    monkeypatch.setattr(exporter, "export_formats", lambda: table)
    with pytest.raises(ExportError, match=r"--include coreml: the coremltools package is not installed"):
        export.run(weights=[str(w)], include=["coreml"], imgsz=[32])
    monkeypatch.setitem(sys.modules, "coremltools", None)
    with pytest.raises(ExportError, match=r"cls.mlpackage: reading Core ML files needs coremltools"):
        coreml.read_metadata(tmp_path / "cls.mlpackage")
    with pytest.raises(ExportError, match=r"--include coreml needs coremltools"):
        coreml.export_coreml(torch.nn.Identity(), torch.zeros(1, 3, 32, 32), w, {})
    assert weights_kind(tmp_path / "cls.mlpackage") is None  # unreadable here: the loader says why when run
