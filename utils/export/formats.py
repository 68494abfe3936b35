"""The format table: the one list of what this toolkit exports, and the error an export raises."""

from __future__ import annotations

import importlib.util
import sys

from utils.checkpoint import CheckpointError

# name, --include argument, file suffix (or folder ending), runs on CPU, runs on GPU, Python package it needs
FORMATS = (
    ("PyTorch", "-", ".pt", True, True, "torch"),
    ("TorchScript", "torchscript", ".torchscript", True, True, "torch"),
    ("ONNX", "onnx", ".onnx", True, True, "onnx"),
    ("OpenVINO", "openvino", "_openvino_model", True, False, "openvino"),
    ("TensorFlow Lite", "tflite", ".tflite", True, False, "litert_torch"),
    ("ncnn", "ncnn", "_ncnn_model", True, False, "pnnx"),
    ("PaddlePaddle", "paddle", "_paddle_model", True, False, "x2paddle"),
    ("CoreML", "coreml", ".mlpackage", True, False, "coremltools"),
)
# Formats whose --half means float16 weights in the file, which needs no GPU to write.
HALF_WEIGHTS = ("tflite", "coreml")
# Formats whose runtime exists only on macOS: elsewhere they export and check their spec, but do not run.
MACOS_ONLY = ("coreml",)


class ExportError(CheckpointError):
    """An export that could not be made or does not reproduce the PyTorch model (printed as one line by the CLI)."""


def export_formats() -> list[dict]:
    """The format table as dicts, with whether the package each format needs is installed here, and whether its
    runtime can run the file on this system."""
    keys = ("format", "argument", "suffix", "cpu", "gpu", "package")
    return [{**dict(zip(keys, row)), "available": importlib.util.find_spec(row[5]) is not None,
             "runs_here": row[1] not in MACOS_ONLY or sys.platform == "darwin"} for row in FORMATS]
