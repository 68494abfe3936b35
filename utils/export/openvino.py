"""OpenVINO export (optional package): file_openvino_model/file.xml + .bin, converted from an ONNX export, with the
metadata in file.yaml beside them as upstream writes it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import yaml

from utils.export.formats import ExportError
from utils.export.onnx import export_onnx


def export_openvino(model: torch.nn.Module, im: torch.Tensor, file: Path, meta: dict, opset: int = 12,
                    dynamic: bool = False, half: bool = False) -> Path:
    """Export to the folder file_openvino_model (FP16 weights with half=True) and return its .xml."""
    try:
        import openvino as ov
    except ImportError:
        raise ExportError("--include openvino needs the openvino package (pip install openvino)") from None
    file = Path(file)
    d = file.parent / f"{file.stem}_openvino_model"
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = export_onnx(model, im, Path(tmp) / file.stem, meta, opset=opset, dynamic=dynamic)
        ov_model = ov.convert_model(str(onnx_file))
    xml = d / f"{file.stem}.xml"
    ov.save_model(ov_model, str(xml), compress_to_fp16=half)
    xml.with_suffix(".yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return xml
