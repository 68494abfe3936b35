"""Core ML export through coremltools from a torch.export ExportedProgram, and the macOS-only runtime that runs it.

The file is an ML Program saved as <stem>.mlpackage (coremltools converts an ExportedProgram only to ML Programs,
and those keep their weights beside the protobuf, in a package folder). It keeps PyTorch's layout, as the other
exports: input `images` (B, 3, H, W) float RGB 0-1, outputs output0, output1, ... as the ONNX export; the metadata
rides in the model's user-defined metadata (upstream's keys, as ONNX metadata_props). Core ML runs only on macOS:
elsewhere the export checks the spec (input, outputs, shapes, metadata) instead of the numbers.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from utils.export import metadata
from utils.export.formats import ExportError

RUNS_HERE = sys.platform == "darwin"  # the Core ML framework that predicts exists only on Apple's systems
NOT_HERE = "Core ML models run only on macOS"
SOURCE_KEYS = "com.github.apple.coremltools."  # what coremltools itself writes into the user-defined metadata


def coreml_path(file: Path, half: bool = False) -> Path:
    """yolov5s.mlpackage, or yolov5s-fp16.mlpackage with --half, beside the weights."""
    file = Path(file)
    return file.with_name(file.stem + ("-fp16" if half else "") + ".mlpackage")


@contextlib.contextmanager
def _quiet():
    """coremltools logs a warning per missing macOS library on import and draws progress bars while converting."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _coremltools(why: str):
    """The coremltools module, imported quietly; one clear line when it is missing."""
    try:
        with _quiet():
            import coremltools
    except ImportError:
        raise ExportError(f"{why} needs coremltools (pip install -r requirements-export.txt)") from None
    return coremltools


def export_coreml(model: torch.nn.Module, im: torch.Tensor, file: Path, meta: dict, half: bool = False,
                  dynamic: bool = False) -> Path:
    """Convert `model` at the input shape of `im` to an ML Program (.mlpackage), fp32 or fp16, and check its spec."""
    ct = _coremltools("--include coreml")
    if dynamic:
        raise ExportError("Core ML export is static here: export without --dynamic")
    f = coreml_path(file, half)
    model, im = model.float().cpu(), im.float().cpu()
    # torch.export rather than torch.jit.trace: a trace reads sizes from shapes through aten::Int, which coremltools
    # 9.0 folds with int() of a 1-element array, an error under our numpy 2.4. torch.export makes every
    # shape a constant; the default decompositions turn aten.__and__ (which coremltools does not map) into
    # bitwise_and (which it does).
    with _quiet():
        program = torch.export.export(model, (im,), strict=False).run_decompositions()
        mlmodel = ct.convert(program, inputs=[ct.TensorType(name="images", shape=tuple(im.shape))],
                             outputs=[ct.TensorType(name=n) for n in meta["outputs"]], convert_to="mlprogram",
                             compute_precision=ct.precision.FLOAT16 if half else ct.precision.FLOAT32)
    meta = {**meta, "half": bool(half)}
    mlmodel.short_description = f"MT-YOLOv5 {meta['task']} model ({len(meta['names'])} classes)"
    mlmodel.user_defined_metadata.update(metadata.to_props(meta))
    if f.exists():  # an .mlpackage is a folder: saving over an old one would mix files
        import shutil

        shutil.rmtree(f)
    mlmodel.save(str(f))
    check_spec(f, meta, list(im.shape))
    return f


def _features(features) -> list[tuple[str, list[int], str]]:
    """(name, shape, data type) of each input or output in a spec's description."""
    from coremltools.proto.FeatureTypes_pb2 import ArrayFeatureType

    return [(x.name, [int(d) for d in x.type.multiArrayType.shape],
             ArrayFeatureType.ArrayDataType.Name(x.type.multiArrayType.dataType)) for x in features]


def check_spec(path: Path, meta: dict, shape: list[int]) -> None:
    """What can be checked without Core ML: the saved file loads as a spec, its input and outputs have the names,
    shapes and float32 type of the PyTorch export, and its metadata reads back."""
    ct = _coremltools("checking a Core ML file")
    with _quiet():
        spec = ct.utils.load_spec(str(path))
    want_in = [("images", shape, "FLOAT32")]
    want_out = [(n, list(s), "FLOAT32") for n, s in zip(meta["outputs"], meta["output_shapes"])]
    got_in, got_out = _features(spec.description.input), _features(spec.description.output)
    if got_in != want_in or got_out != want_out:
        raise ExportError(f"{path}: spec input {got_in} and outputs {got_out}, expected {want_in} and {want_out}")
    back = read_metadata(path)
    for k in ("task", "names", "stride", "strides", "imgsz", "outputs"):
        if back.get(k) != metadata.normalize(meta).get(k):
            raise ExportError(f"{path}: metadata '{k}' reads back as {back.get(k)}, expected {meta.get(k)}")


def read_metadata(path: Path) -> dict:
    """The metadata export_coreml wrote into a .mlpackage (or .mlmodel); one clear error for files without it."""
    ct = _coremltools(f"{path}: reading Core ML files")
    try:
        with _quiet():
            spec = ct.utils.load_spec(str(path))
    except Exception as e:  # coremltools raises several types for unreadable packages
        raise ExportError(f"{path}: not a Core ML model ({str(e).strip().splitlines()[0][:200]})") from None
    props = {k: v for k, v in spec.description.metadata.userDefined.items() if not k.startswith(SOURCE_KEYS)}
    if "task" not in props:
        raise ExportError(f"{path}: no MT-YOLOv5 metadata inside (export it with export.py)")
    return metadata.from_props(props)


def load_runner(path: Path) -> tuple[dict, Callable[[torch.Tensor], list[np.ndarray]], tuple[int, int], int]:
    """(metadata, run(batch) -> outputs, (h, w), batch) of a Core ML model; macOS only."""
    if not RUNS_HERE:
        raise ExportError(f"{path}: {NOT_HERE} (this is {sys.platform}); use the .pt or another export here")
    ct = _coremltools(f"{path}: running Core ML models")
    meta = read_metadata(path)
    # CPU only: the GPU and Neural Engine compute in float16, ~1e-3 off the fp32 model the export is checked against
    with _quiet():
        model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
    (name, shape, _), = _features(model.get_spec().description.input)
    outs = list(meta["outputs"])

    def run(x: torch.Tensor) -> list[np.ndarray]:
        y = model.predict({name: x.detach().cpu().float().numpy()})
        return [np.asarray(y[n]) for n in outs]

    b, _, h, w = shape
    return meta, run, (h, w), b
