"""ONNX export: input `images`, outputs output0, output1, ...; dynamic batch, height and width with --dynamic;
metadata in metadata_props; optional simplification with onnxsim or onnxslim."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from utils.export import metadata
from utils.export.formats import ExportError
from utils.export.prepare import dynamic_axes
from utils.log import LOGGER


def export_onnx(model: torch.nn.Module, im: torch.Tensor, file: Path, meta: dict, opset: int = 12,
                dynamic: bool = False, simplify: bool = False, prefix: str = "ONNX:") -> Path:
    """Export `model` traced on `im` to file.onnx, checked by onnx.checker, metadata attached."""
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx package (pip install onnx)") from None
    f = Path(file).with_suffix(".onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings, and the notice that this is the TorchScript-based exporter
        # The TorchScript-based exporter: the torch.export one needs onnxscript and opset >= 18.
        torch.onnx.export(model, im, str(f), opset_version=opset, input_names=["images"],
                          output_names=meta["outputs"], do_constant_folding=True,
                          dynamic_axes=dynamic_axes(meta["output_shapes"]) if dynamic else None, dynamo=False)
    m = onnx.load(str(f))
    onnx.checker.check_model(m)
    if simplify:
        m = simplify_onnx(m, prefix)
    del m.metadata_props[:]
    for k, v in metadata.to_props(meta).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, str(f))
    return f


def simplify_onnx(m, prefix: str = "ONNX:"):
    """Simplify with onnxsim if installed, else onnxslim; neither installed, or a failure, leaves `m` as it is."""
    try:
        import onnxsim

        LOGGER.info(f"{prefix} simplifying with onnxsim {getattr(onnxsim, '__version__', '')}...")
        try:
            s, ok = onnxsim.simplify(m)
        except Exception as e:  # noqa: BLE001 - simplification is an optimisation, never a reason to fail
            LOGGER.warning(f"{prefix} WARNING ⚠️ onnxsim failed ({e}); keeping the unsimplified model")
            return m
        return s if ok else m
    except ImportError:
        pass
    try:
        import onnxslim
    except ImportError:
        LOGGER.info(f"{prefix} --simplify skipped: neither onnxsim nor onnxslim is installed (pip install onnxslim)")
        return m
    LOGGER.info(f"{prefix} simplifying with onnxslim {getattr(onnxslim, '__version__', '')}...")
    try:
        return onnxslim.slim(m)
    except Exception as e:  # noqa: BLE001
        LOGGER.warning(f"{prefix} WARNING ⚠️ onnxslim failed ({e}); keeping the unsimplified model")
        return m
