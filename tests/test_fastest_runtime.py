"""detect.py's automatic CPU runtime: exports made once beside the weights, the fastest chosen, the same detections."""

from __future__ import annotations

import json

import pytest
import torch

from models.build import build_model
from utils.checkpoint import load_model, make_checkpoint, save_checkpoint
from utils.export import fastest
from utils.log import quiet


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    with quiet():
        model = build_model("yolov5n.yaml", nc=3)
    return save_checkpoint(make_checkpoint(model), tmp_path / "w" / "best.pt")


def _load(w):
    with quiet():
        return load_model(w)


def test_fastest_export_is_chosen_cached_and_equal(weights, monkeypatch, log):
    monkeypatch.delenv(fastest.RUNTIME_ENV, raising=False)
    if "onnx" not in fastest.available_runtimes():
        pytest.skip("onnxruntime not installed")
    speed = {"pytorch": 2.0, "onnx": 1.0, "openvino": 3.0}
    timed = []

    def fake_time(models, imgsz, rounds=3):
        timed.append(sorted(models))
        return {k: speed[k] for k in models}

    monkeypatch.setattr(fastest, "time_models", fake_time)
    model = _load(weights)
    chosen = fastest.fastest_cpu_model(model, weights, [64, 96])
    assert type(chosen).__name__ == "ExportedModel" and chosen.format == "onnx"
    folder = weights.parent / "best_cpu_runtimes"
    assert (folder / "best.onnx").is_file() and "CPU runtime: onnx" in log.text
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        a, b = model(x)[0], chosen(x)[0]
    assert a.shape == b.shape and (a - b).abs().max() < 1e-3  # the same fp32 model, another runtime
    # a second run asks the cache: no new timing, the same choice
    assert fastest.fastest_cpu_model(_load(weights), weights, [64, 96]).format == "onnx" and len(timed) == 1
    saved = json.loads((folder / "choice.json").read_text())
    assert saved["weights"] == fastest.weights_fingerprint(weights) and len(saved["choices"]) == 1
    # new weights: the old exports are dropped and the choice measured again
    speed["onnx"] = 9.0
    save_checkpoint(make_checkpoint(build_model("yolov5n.yaml", nc=3)), weights)
    assert fastest.fastest_cpu_model(_load(weights), weights, [64, 96]) is not None and len(timed) == 2
    assert "CPU runtime: PyTorch, the fastest here" in log.text


def test_forced_and_failing_runtimes(weights, monkeypatch, log):
    model = _load(weights)
    monkeypatch.setenv(fastest.RUNTIME_ENV, "pytorch")
    assert fastest.fastest_cpu_model(model, weights, [64, 64]) is model
    monkeypatch.setenv(fastest.RUNTIME_ENV, "tensorrt")
    with pytest.raises(ValueError, match="MTYOLO_CPU_RUNTIME"):
        fastest.fastest_cpu_model(model, weights, [64, 64])
    monkeypatch.delenv(fastest.RUNTIME_ENV)
    monkeypatch.setattr(fastest, "time_models", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    assert fastest.fastest_cpu_model(model, weights, [64, 64]) is model  # any failure: PyTorch predicts
    assert "staying on PyTorch (RuntimeError: boom)" in log.text


def test_read_only_weights_folder_uses_the_user_cache(weights, monkeypatch, tmp_path):
    monkeypatch.setenv("MTYOLO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fastest.os, "access", lambda p, mode: False)
    f = fastest.runtime_folder(weights, "abc")
    assert f == tmp_path / "cache" / "cpu_runtimes" / "best-abc"


def test_detect_runs_the_chosen_runtime(weights, monkeypatch, tmp_path, log):
    import detect

    monkeypatch.delenv(fastest.RUNTIME_ENV, raising=False)
    if "onnx" not in fastest.available_runtimes():
        pytest.skip("onnxruntime not installed")
    monkeypatch.setattr(fastest, "time_models", lambda models, imgsz, rounds=3: {
        k: (0.5 if k == "onnx" else 1.0) for k in models})
    detect.run(weights=str(weights), source="data/images", imgsz=[128], project=str(tmp_path / "r"), name="e",
               save_txt=True, conf_thres=0.0)
    assert "CPU runtime: onnx" in log.text
    assert sorted(p.name for p in (tmp_path / "r" / "e").glob("*.jpg")) == ["shapes1.jpg", "shapes2.jpg"]


def test_each_runtime_is_timed_and_fed_in_its_own_layout(weights, monkeypatch):
    """An export is given a contiguous image (its runtime copied a channels_last one, 2-3 ms per yolov5n 256 image on
    ONNX Runtime, enough to lose the choice), the PyTorch model a channels_last one, by the probe and by detect.py."""
    from utils.engine.predictor import Predictor  # noqa: F401 - the predictor asks the same function
    from utils.export.backend import ExportedModel, input_memory_format

    seen = {}
    meta = {"task": "detect", "names": {0: "a"}, "strides": [8, 16, 32]}

    def run(x):
        seen["export"] = x.is_contiguous()
        return [torch.zeros(1, 1, 8)]

    exported = ExportedModel(weights, "onnx", meta, run, dynamic=True, imgsz=(64, 64), batch=None)

    class Torch(torch.nn.Module):
        def forward(self, x):
            seen["pytorch"] = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            return x

    assert input_memory_format(exported) == torch.contiguous_format
    assert input_memory_format(_load(weights)) == torch.channels_last
    times = fastest.time_models({"pytorch": Torch(), "onnx": exported}, [64, 64], rounds=1)
    assert set(times) == {"pytorch", "onnx"} and seen == {"export": True, "pytorch": True}


def test_detect_hands_an_export_a_contiguous_image(weights, monkeypatch, tmp_path):
    import detect
    from utils.export.backend import ExportedModel

    monkeypatch.setenv(fastest.RUNTIME_ENV, "onnx")
    if "onnx" not in fastest.available_runtimes():
        pytest.skip("onnxruntime not installed")
    layouts = []
    original = ExportedModel.outputs

    def outputs(self, im):
        layouts.append(im.is_contiguous())
        return original(self, im)

    monkeypatch.setattr(ExportedModel, "outputs", outputs)
    detect.run(weights=str(weights), source="data/images", imgsz=[128], project=str(tmp_path / "r"), name="e")
    assert len(layouts) >= 2 and all(layouts)  # both images (and any warm-up), each contiguous
