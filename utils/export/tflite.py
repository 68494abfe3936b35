"""TensorFlow Lite export through litert-torch (PyTorch -> LiteRT flatbuffer, no TensorFlow), fp16 weights and full
integer quantisation through ai-edge-quantizer, and the LiteRT interpreter that checks and runs the files.

The file keeps PyTorch's layout: input `images` (B, 3, H, W) float RGB 0-1 (an int8 file takes it quantised with
the scale and zero point its input carries), outputs output0, output1, ... as the ONNX export. The metadata rides as
metadata.json in a zip archive appended to the flatbuffer (LiteRT ignores trailing bytes), so one file carries it.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from utils.export import ExportError, metadata
from utils.log import LOGGER

META_NAME = "metadata.json"


def tflite_path(file: Path, half: bool = False, int8: bool = False) -> Path:
    """yolov5s.tflite, yolov5s-fp16.tflite or yolov5s-int8.tflite beside the weights (upstream's suffixes)."""
    file = Path(file)
    return file.with_name(file.stem + ("-int8" if int8 else "-fp16" if half else "") + ".tflite")


@contextlib.contextmanager
def _quiet_native():
    """litert-torch and the quantiser print progress bars and notes on stdout/stderr: keep them out of the log."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def export_tflite(model: torch.nn.Module, im: torch.Tensor, file: Path, meta: dict, half: bool = False,
                  int8: bool = False, calibration: Callable[[], list[np.ndarray]] | None = None,
                  dynamic: bool = False, prefix: str = "TensorFlow Lite:") -> Path:
    """Convert `model` at the input shape of `im` to a .tflite (fp32; fp16 weights; or int8 calibrated)."""
    try:
        import litert_torch
    except ImportError:
        raise ExportError("--include tflite needs litert-torch (pip install -r requirements-export.txt)") from None
    if dynamic:
        raise ExportError("TFLite files have a fixed input shape: export without --dynamic")
    f = tflite_path(file, half, int8)
    model, im = model.float().cpu(), im.float().cpu()  # the converter traces on the CPU in float32
    with _quiet_native():
        edge = litert_torch.convert(model, (im,))
    if not (half or int8):
        edge.export(str(f))
    else:
        with _tmp_file(f) as plain:
            edge.export(str(plain))
            _quantize(plain, f, half, int8, calibration, prefix)
    meta = {**meta, "half": bool(half), "int8": bool(int8)}
    with zipfile.ZipFile(f, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr(META_NAME, json.dumps(meta))
    return f


@contextlib.contextmanager
def _tmp_file(f: Path):
    tmp = f.with_name(f".{f.stem}-fp32.tflite")
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _quantize(src: Path, dst: Path, half: bool, int8: bool, calibration, prefix: str) -> None:
    """fp16: weights stored as float16, computed in float32. int8: weights and activations int8, calibrated on
    images; the input is int8 too, while concatenations and the outputs stay float, because one int8 scale cannot
    hold box pixels (hundreds) and scores (0-1) of the same tensor."""
    try:
        from ai_edge_quantizer import qtyping, quantizer, recipe
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
    except ImportError:
        raise ExportError("--half/--int8 TFLite needs ai-edge-quantizer (pip install -r requirements-export.txt)") \
            from None
    op = qtyping.TFLOperationName
    q = quantizer.Quantizer(str(src))
    if int8:
        images = calibration() if calibration else []
        LOGGER.info(f"{prefix} calibrating int8 on {len(images)} images...")
        q.load_quantization_recipe(recipe.static_wi8_ai8())
        for name in (op.CONCATENATION, op.OUTPUT):
            q.update_quantization_recipe(regex=".*", operation_name=name, algorithm_key=AlgorithmName.NO_QUANTIZE)
        from ai_edge_litert.interpreter import Interpreter

        sig = Interpreter(model_path=str(src)).get_signature_list()
        key = next(iter(sig))
        name = sig[key]["inputs"][0]
        with _quiet_native():
            qsv = q.calibrate({key: [{name: x} for x in images]})
            q.quantize(qsv).export_model(str(dst), overwrite=True)
    else:
        q.add_weight_only_config(regex=".*", operation_name=op.ALL_SUPPORTED, num_bits=16,
                                 algorithm_key=AlgorithmName.FLOAT_CASTING)
        with _quiet_native():
            q.quantize().export_model(str(dst), overwrite=True)


def read_metadata(path: Path) -> dict:
    """The metadata appended to a .tflite by export_tflite; upstream-style files without it are one clear error."""
    try:
        with zipfile.ZipFile(path) as z:
            return metadata.from_json(z.read(META_NAME))
    except (zipfile.BadZipFile, KeyError):
        raise ExportError(f"{path}: no {META_NAME} inside (export it with export.py)") from None


def load_runner(path: Path) -> tuple[dict, Callable[[torch.Tensor], list[np.ndarray]], tuple[int, int], int]:
    """(metadata, run(batch) -> outputs, (h, w), batch) of a .tflite for the LiteRT interpreter."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ExportError(f"{path}: running TFLite models needs ai-edge-litert (pip install ai-edge-litert)") \
            from None
    meta = read_metadata(path)
    with _quiet_native():
        interpreter = Interpreter(model_path=str(path))
    key = next(iter(interpreter.get_signature_list()))
    runner = interpreter.get_signature_runner(key)
    (in_name, inp), = runner.get_input_details().items()
    outs = runner.get_output_details()
    order = sorted(outs, key=lambda n: int(n.rsplit("_", 1)[-1]))  # output_0, output_1, ... = output0, output1
    scale, zero = inp["quantization"]

    def run(x: torch.Tensor) -> list[np.ndarray]:
        a = x.detach().cpu().float().numpy()
        if inp["dtype"] != np.float32:  # an int8 file: quantise the input as calibrated
            info = np.iinfo(inp["dtype"])
            a = np.clip(np.round(a / scale + zero), info.min, info.max)
        y = runner(**{in_name: a.astype(inp["dtype"])})
        res = []
        for n in order:
            v, (s, z) = y[n], outs[n]["quantization"]
            res.append((v.astype(np.float32) - z) * s if v.dtype != np.float32 and s else v)
        return res

    b, _, h, w = (int(d) for d in inp["shape"])
    return meta, run, (h, w), b
