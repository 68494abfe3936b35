"""export.py: every format x task checked by its runtime against PyTorch, dynamic shapes, metadata, flags, failures."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from torch import nn

from utils.export import ExportError, export_formats, metadata
from utils.export.backend import BackendError, load_backend, load_exported
from utils.export.exporter import export_model

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
FORMATS = ["torchscript", "onnx"] + (["openvino"] if HAS_OPENVINO else [])
NAMES = {0: "rectangle", 1: "ellipse", 2: "triangle"}


def make_checkpoint(kind: str, path: Path) -> Path:
    """A random-weight yolov5n detector, -seg model or -cls classifier (3 classes) saved as our checkpoint."""
    from models.build import build_model
    from utils.checkpoint import make_checkpoint as make
    from utils.checkpoint import save_checkpoint
    from utils.log import quiet
    from utils.tasks.classify.task import ClassificationTask

    with quiet():
        if kind == "classify":
            model = ClassificationTask().build_model("yolov5n.yaml", nc=3)
        else:
            model = build_model("yolov5n-seg.yaml" if kind == "segment" else "yolov5n.yaml", nc=3)
    model.names = dict(NAMES)
    return save_checkpoint(make(model), path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """One random-weight checkpoint per task, built once for the module (copy before exporting next to it)."""
    root = tmp_path_factory.mktemp("ckpts")
    return {k: make_checkpoint(k, root / f"{k}.pt") for k in ("detect", "segment", "classify")}


@pytest.fixture(scope="module")
def pt_models(ckpts) -> dict[str, nn.Module]:
    """The PyTorch models as val.py loads them, the reference every export is compared with."""
    return {k: load_backend(w, task=k) for k, w in ckpts.items()}


def copy_of(src: Path, dst: Path) -> Path:
    import shutil

    return Path(shutil.copy(src, dst))


def exported_path(weights: Path, fmt: str) -> Path:
    if fmt == "openvino":
        return weights.parent / f"{weights.stem}_openvino_model" / f"{weights.stem}.xml"
    return weights.with_suffix(".torchscript" if fmt == "torchscript" else ".onnx")


def eval_outputs(model: nn.Module, im: torch.Tensor):
    with torch.no_grad():
        return model(im)


@pytest.mark.parametrize("task, imgsz", [("detect", [64, 96]), ("segment", [64]), ("classify", [64])])
def test_every_format_of_every_task_runs_like_pytorch(task, imgsz, ckpts, pt_models, tmp_path, log):
    import export

    w = copy_of(ckpts[task], tmp_path / f"{task}.pt")
    export.run(weights=[str(w)], include=FORMATS, imgsz=imgsz, device="cpu")
    text = log.text
    pt = pt_models[task]
    h, wd = (imgsz * 2)[:2]
    im = torch.rand(2, 3, h, wd)
    ref = eval_outputs(pt, im)
    for fmt in FORMATS:
        f = exported_path(w, fmt)
        assert f.exists(), fmt
        assert f"saved as {f}" in text and "largest difference vs PyTorch" in text
        m = load_backend(f, task=task)
        assert (m.task, m.names, m.fixed_imgsz) == (task, NAMES, (h, wd))
        assert m.stride.tolist() == pt.stride.tolist()
        got = eval_outputs(m, im)  # batch 2 through a batch-1 export: sliced, as val.py's batches are
        if task == "classify":
            assert isinstance(got, torch.Tensor) and got.shape == (2, 3)
            assert (got - ref).abs().max() < 1e-3
            assert m.meta["preprocess"]["mean"] == [0.485, 0.456, 0.406]
            continue
        n = 2 if task == "segment" else 1
        assert len(got) == n + 1 and got[-1] == []  # eval layout: predictions(, protos), then the raw maps
        for a, b in zip(got[:n], ref[:n]):
            assert a.shape == b.shape and (a - b).abs().max() < 1e-3
        if task == "segment":
            assert m.meta["nm"] == 32 and m.meta["outputs"] == ["output0", "output1"]


def test_dynamic_onnx_takes_batch_1_and_3_at_two_sizes(ckpts, pt_models, tmp_path, log):
    import export

    w = copy_of(ckpts["segment"], tmp_path / "seg.pt")
    export.run(weights=[str(w)], include=["onnx", "torchscript"], imgsz=[64], dynamic=True, simplify=True,
               opset=17)
    simplifier = any(importlib.util.find_spec(m) for m in ("onnxsim", "onnxslim"))
    assert ("simplifying with" if simplifier else "--simplify skipped") in log.text
    pt = pt_models["segment"]
    for f in (w.with_suffix(".onnx"), w.with_suffix(".torchscript")):
        m = load_exported(f)
        assert m.dynamic and m.fixed_imgsz is None and m.batch is None
        for shape in [(1, 3, 64, 64), (3, 3, 64, 64), (1, 3, 96, 128), (3, 3, 96, 128)]:
            im = torch.rand(shape)
            got, ref = m.outputs(im), eval_outputs(pt, im)
            assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in ref[:2]]
            assert max((a - b).abs().max().item() for a, b in zip(got, ref)) < 1e-3, (f.suffix, shape)
    import onnx

    dims = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
            for o in onnx.load(str(w.with_suffix(".onnx"))).graph.output]
    assert dims[0][:2] == ["batch", "anchors"] and dims[1] == ["batch", 32, "height1", "width1"]


def test_static_export_fixes_size_and_slices_other_batches(pt_models, tmp_path):
    from utils.export.backend import predict_imgsz, val_imgsz

    pt = pt_models["detect"]
    (f,) = export_model(pt, tmp_path / "det.pt", ["onnx"], imgsz=[64, 96], batch_size=2).values()
    m = load_exported(f)
    assert (m.fixed_imgsz, m.batch, m.meta["shape"]) == ((64, 96), 2, [2, 3, 64, 96])
    im = torch.rand(3, 3, 64, 96)
    assert (m.outputs(im)[0] - eval_outputs(pt, im)[0]).abs().max() < 1e-3
    with pytest.raises(BackendError, match=r"static export for 64x96 input, got 64x64.*--dynamic"):
        m(torch.rand(1, 3, 64, 64))
    with pytest.raises(BackendError, match="validation needs a square or --dynamic export"):
        val_imgsz(m, 64)
    assert predict_imgsz(m, [640, 640]) == ([64, 96], False)
    assert predict_imgsz(pt, [640, 640]) == ([640, 640], True)


def test_metadata_round_trips_through_each_container_and_reads_upstream_props():
    meta = {"task": "segment", "stride": 32, "strides": [8.0, 16.0, 32.0], "names": {0: "a", 1: "b"},
            "imgsz": [64, 96], "batch": 1, "dynamic": True, "nm": 32, "eval_layout": [0, 1, None],
            "tensor_output": False, "half": False}
    assert metadata.from_props(metadata.to_props(meta)) == meta
    assert metadata.from_json(metadata.to_json(meta)) == meta
    assert metadata.to_props(meta)["names"] == "{0: 'a', 1: 'b'}"  # the form upstream's loader evaluates
    up = metadata.from_props({"stride": "32", "names": "{0: 'person', 1: 'bicycle'}"})  # an upstream .onnx
    assert (up["names"], up["strides"], up["task"], up["eval_tail"]) == ({0: "person", 1: "bicycle"}, [32.0],
                                                                          "detect", 1)


class TwoHead(nn.Module):
    """Stand-in for the detection + semantic head: eval (boxes, class logits, raw maps); export (boxes, logits)."""

    export = False
    dynamic = False

    def __init__(self, nc: int = 3, nc_seg: int = 5):
        super().__init__()
        self.box = nn.Conv2d(16, 5 + nc, 1)
        self.seg = nn.Conv2d(16, nc_seg, 1)

    def forward(self, x):
        raw = self.box(x)
        det = raw.flatten(2).transpose(1, 2).sigmoid() * 64  # (B, N, 5 + nc)
        seg = nn.functional.interpolate(self.seg(x), scale_factor=4.0, mode="bilinear")  # (B, nc_seg, H, W)
        return (det, seg) if self.export else (det, seg, [raw])


class DetSemStandIn(nn.Module):
    task = "detect_semantic"

    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 16, 3, 4, 1), nn.SiLU(), TwoHead())
        self.names = dict(NAMES)
        self.stride = torch.tensor([4.0])

    def forward(self, x, augment=False, profile=False, visualize=False):
        return self.model(x)


def test_two_output_model_plugs_in_without_special_cases(tmp_path):
    model = DetSemStandIn().eval()
    out = export_model(model, tmp_path / "detsem.pt", ["onnx", "torchscript"], imgsz=[64], dynamic=True)
    im = torch.rand(3, 3, 96, 64)
    ref = eval_outputs(model, im)
    for f in out.values():
        m = load_backend(f, task="detect_semantic")
        assert m.meta["outputs"] == ["output0", "output1"] and m.meta["eval_layout"] == [0, 1, None]
        det, seg, raw = m(im)
        assert det.shape == (3, 24 * 16, 8) and seg.shape == (3, 5, 96, 64) and raw == []
        assert (det - ref[0]).abs().max() < 1e-3 and (seg - ref[1]).abs().max() < 1e-3
    with pytest.raises(BackendError, match="is a detect_semantic model; this script runs detect models"):
        load_backend(out["onnx"], task="detect")


class TracesDifferently(nn.Module):
    """A model whose trace does not reproduce it (Python-side randomness frozen into the graph)."""

    names, stride = {0: "x"}, torch.tensor([32.0])

    def forward(self, x, **_):
        return x.mean((2, 3)) + float(torch.rand(()))


def test_export_fails_with_the_difference_and_removes_the_file(tmp_path, log):
    with pytest.raises(ExportError, match=r"ONNX output differs from PyTorch by [0-9.e-]+ \(> 0.001\)"):
        export_model(TracesDifferently(), tmp_path / "bad.pt", ["onnx"], imgsz=[32])
    assert not (tmp_path / "bad.onnx").exists() and "export failure ❌" in log.text


def test_flags_inplace_optimize_batch_data_and_device(ckpts, tmp_path):
    import export

    w = copy_of(ckpts["detect"], tmp_path / "det.pt")
    c = copy_of(ckpts["classify"], tmp_path / "cls.pt")
    y = tmp_path / "d.yaml"
    y.write_text("names: [red, green, blue]\n")
    out = export.run(weights=[str(w), str(c)], include=["torchscript"], imgsz=[64], batch_size=2, inplace=True,
                     optimize=True, data=str(y), device="cpu")
    assert [o["torchscript"] for o in out] == [w.with_suffix(".torchscript"), c.with_suffix(".torchscript")]
    assert load_backend(out[1]["torchscript"], task="classify").names[2] == "blue"
    m = load_backend(w.with_suffix(".torchscript"))
    assert m.names == {0: "red", 1: "green", 2: "blue"} and m.meta["batch"] == 2
    assert m(torch.rand(1, 3, 64, 64))[0].shape == (1, 252, 8)
    import zipfile

    assert any(n.endswith("bytecode.pkl") for n in zipfile.ZipFile(w.with_suffix(".torchscript")).namelist())
    y.write_text("names: [a, b]\n")
    with pytest.raises(ExportError, match="names 2 classes"):
        export.run(weights=[str(w)], data=str(y), imgsz=[64])


@pytest.mark.parametrize("kw, match", [
    ({"include": ["engine"]}, "TensorRT export is not supported here"),
    ({"include": ["tflitex"]}, "unknown format"),
    ({"half": True}, "--half needs a CUDA --device"),
    ({"batch_size": 0}, "must be at least 1"),
    ({"imgsz": [64, 64, 64]}, "give one size or height and width"),
    ({"include": ["onnx"], "opset": 99}, "ONNX: .*opset"),
])
def test_bad_flags_are_one_clear_error(kw, match, ckpts, tmp_path):
    import export

    w = copy_of(ckpts["classify"], tmp_path / "cls.pt")
    with pytest.raises(ExportError, match=match):
        export.run(**{"weights": [str(w)], "imgsz": [32], **kw})


def test_missing_openvino_and_simplifiers_are_one_line(tmp_path, log, monkeypatch):
    from utils.export import exporter
    from utils.export.onnx import simplify_onnx

    table = [dict(f, available=False) if f["argument"] == "openvino" else f for f in export_formats()]
    monkeypatch.setattr(exporter, "export_formats", lambda: table)
    with pytest.raises(ExportError, match=r"--include openvino: the openvino package is not installed"):
        exporter.check_include(["onnx", "openvino"])
    monkeypatch.setitem(sys.modules, "onnxsim", None)
    monkeypatch.setitem(sys.modules, "onnxslim", None)
    sentinel = object()
    assert simplify_onnx(sentinel) is sentinel
    assert "--simplify skipped: neither onnxsim nor onnxslim is installed" in log.text


def test_cli_prints_one_error_line_and_exits_1(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "export.py"), "--weights", str(tmp_path / "none.pt"),
                        "--include", "saved_model"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    err = [x for x in (r.stdout + r.stderr).splitlines() if x.startswith("ERROR")]
    assert r.returncode == 1 and err == ["ERROR: --include saved_model: TF SavedModel export is not supported here "
                                         "(supported: torchscript, onnx, openvino, tflite, ncnn, paddle, coreml)"]


def test_detection_plus_semantic_exports_boxes_and_class_logits(tmp_path, log):
    """A -city model: output0 detections and output1 class logits, at two sizes through one dynamic ONNX file;
    seg_names travel in the metadata, so detect.py can colour and name the class map."""
    import export
    from models.build import build_model
    from utils.checkpoint import make_checkpoint as make
    from utils.checkpoint import save_checkpoint
    from utils.log import quiet

    torch.manual_seed(0)
    with quiet():
        model = build_model("yolov5n-city.yaml", nc=3, nc_seg=4)
    model.names, model.seg_names = dict(NAMES), {0: "road", 1: "car", 2: "sky", 3: "person"}
    w = save_checkpoint(make(model), tmp_path / "city.pt")
    export.run(weights=[str(w)], include=["onnx", "torchscript"], imgsz=[64, 96], dynamic=True, device="cpu")
    pt = load_backend(w)
    for fmt in ("onnx", "torchscript"):
        m = load_backend(exported_path(w, fmt))
        assert m.task == "semantic" and m.seg_names == {0: "road", 1: "car", 2: "sky", 3: "person"}
        assert m.meta["outputs"] == ["output0", "output1"] and m.meta["eval_layout"] == [0, None, 1]
        for shape in ((1, 3, 64, 96), (3, 3, 96, 128)):  # two sizes (not divisible by the pooling bins x 32)
            im = torch.rand(*shape)
            ref, got = eval_outputs(pt, im), eval_outputs(m, im)
            assert len(got) == len(ref) == 3 and got[1] == []  # (detections, raw maps left out, logits), as the .pt
            assert got[-1].shape == ref[-1].shape == (shape[0], 4, *shape[2:])
            assert (got[0] - ref[0]).abs().max() < 1e-3 and (got[-1] - ref[-1]).abs().max() < 1e-3
