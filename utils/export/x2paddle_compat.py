"""ONNX -> Paddle inference model with x2paddle 1.6.0, run as a child process by utils/export/paddle.py:
`python utils/export/x2paddle_compat.py model.onnx out_dir`.

x2paddle 1.6.0 (its latest release) was written for onnx < 1.15 and for onnx files of its time. Measured with onnx
1.23 and this toolkit's exports, four things stand in its way, each fixed here without touching its code:
- `onnx.mapping` (TENSOR_TYPE_TO_NP_TYPE) and `onnx.version.version` are gone from onnx: both are put back, built
  from onnx.helper.tensor_dtype_to_np_dtype and onnx.__version__;
- torch's exporter shares equal initializers (the zero biases of freshly fused convolutions) through Identity
  nodes, which x2paddle's Conv cannot find among the weights ("... not a key in ..."), and
- shape arithmetic (Shape, Mod, Where, ... of adaptive pooling) that x2paddle turns into code Paddle cannot trace
  ("Cannot interpret '1' as a data type"): onnxslim removes the Identity nodes and folds the arithmetic into
  constants (the input shape is static);
- MaxPool carries dilations=[1, 1], which x2paddle rejects: dilations of 1 are the default and are dropped.

It runs in its own process because x2paddle imports the code it generates through sys.path, can exit() or abort
the process on a model it cannot convert, and the onnx shims must not leak into the exporting process. Nothing here
imports the toolkit, so the child starts without torch.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path


def add_onnx_shims() -> None:
    """Give onnx back the two names x2paddle 1.6.0 reads (removed from onnx in 1.15+)."""
    import onnx
    from onnx import TensorProto, helper

    if not hasattr(onnx, "version"):
        onnx.version = types.SimpleNamespace(version=onnx.__version__)
    if "onnx.mapping" not in sys.modules:
        mapping = types.ModuleType("onnx.mapping")
        table = {}
        for v in TensorProto.DataType.values():
            try:
                table[v] = helper.tensor_dtype_to_np_dtype(v)
            except (KeyError, ValueError, TypeError):  # UNDEFINED and types numpy has no dtype for
                continue
        mapping.TENSOR_TYPE_TO_NP_TYPE = table
        sys.modules["onnx.mapping"] = onnx.mapping = mapping


def readable_graph(src: str | Path, dst: str | Path) -> None:
    """Rewrite the ONNX file `src` into the form x2paddle 1.6.0 reads (see the module docstring), saved as `dst`."""
    import onnx
    import onnxslim

    m = onnxslim.slim(onnx.load(str(src)))
    for n in m.graph.node:
        if n.op_type == "MaxPool":
            keep = [a for a in n.attribute if not (a.name == "dilations" and all(v == 1 for v in a.ints))]
            del n.attribute[:]
            n.attribute.extend(keep)
    onnx.save(m, str(dst))


def convert(src: str | Path, out: str | Path) -> Path:
    """x2paddle's ONNX frontend on `src`; returns the folder of the inference model it saves (model.json/.pdiparams)."""
    add_onnx_shims()
    from x2paddle.convert import onnx2paddle

    out = Path(out)
    fixed = out / "x2paddle_input.onnx"
    out.mkdir(parents=True, exist_ok=True)
    readable_graph(src, fixed)
    # disable_feedback: x2paddle otherwise reports each conversion to its authors over the network
    onnx2paddle(str(fixed), str(out), convert_to_lite=False, disable_feedback=True, enable_onnx_checker=True)
    d = out / "inference_model"
    if not (d / "model.pdiparams").is_file():
        raise RuntimeError(f"x2paddle wrote no inference model in {d}")
    return d


if __name__ == "__main__":
    convert(sys.argv[1], sys.argv[2])
