"""PaddlePaddle export through x2paddle's ONNX frontend (our ONNX export -> Paddle inference model), and Paddle
Inference (paddle.inference), which checks and runs the files.

The model is the folder file_paddle_model/ holding model.json (Paddle 3's program), model.pdiparams and
metadata.yaml, as upstream v7.0 lays out file_paddle_model/. It keeps PyTorch's layout: input (B, 3, H, W) float
RGB 0-1 at the export's batch and size, outputs output0, output1, ... in the ONNX export's order.
x2paddle runs in a child process (utils/export/x2paddle_compat.py says why, and what it shims).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from utils.export import ExportError, metadata
from utils.export.onnx import export_onnx

PARAMS = "model.pdiparams"
OPSET = 12  # the intermediate ONNX: x2paddle 1.6.0 reads opsets 7-15, whatever --opset the .onnx export uses


def paddle_dir(file: Path) -> Path:
    """yolov5s_paddle_model/ beside the weights."""
    file = Path(file)
    return file.parent / f"{file.stem}_paddle_model"


def export_paddle(model: torch.nn.Module, im: torch.Tensor, file: Path, meta: dict, dynamic: bool = False,
                  prefix: str = "PaddlePaddle:") -> Path:
    """Export `model` at the shape of `im` to ONNX, convert it with x2paddle, and return the model folder."""
    missing = [m for m in ("x2paddle", "paddle", "onnxslim") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"--include paddle needs {', '.join(missing)} (pip install -r requirements-export.txt)")
    if dynamic:
        raise ExportError("PaddlePaddle export is static here: export without --dynamic")
    d = paddle_dir(file).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        onnx_file = export_onnx(model.float().cpu(), im.float().cpu(), t / "model", meta, opset=OPSET, prefix=prefix)
        compat = Path(__file__).with_name("x2paddle_compat.py")
        # run as __main__ without putting utils/export/ on sys.path, where our onnx.py and paddle.py would shadow
        # the packages of those names
        run_main = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
        r = subprocess.run([sys.executable, "-c", run_main, str(compat), str(onnx_file), str(t / "x2paddle")],
                           capture_output=True, text=True, cwd=tmp)
        src = t / "x2paddle" / "inference_model"
        if r.returncode != 0 or not (src / PARAMS).is_file():
            lines = [x for x in (r.stderr + r.stdout).strip().splitlines() if x.strip() and "Warning" not in x]
            raise ExportError(f"x2paddle failed (exit {r.returncode}): {(lines[-1:] or ['no output'])[0][:200]}")
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for f in src.iterdir():
            shutil.copy2(f, d / f.name)
    metadata.write_folder_meta(d, meta)
    return d


def load_runner(path: Path) -> tuple[dict, Callable[[torch.Tensor], list[np.ndarray]], tuple[int, int], int]:
    """(metadata, run(batch) -> outputs, (h, w), batch) of a Paddle model folder (or its model.pdiparams)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # paddle warns on import that ccache (for building its C++ ops) is absent
            from paddle import inference
    except ImportError:
        raise ExportError(f"{path}: running PaddlePaddle models needs paddlepaddle (pip install paddlepaddle)") \
            from None
    d = path if path.is_dir() else path.parent
    meta = metadata.read_folder_meta(d)
    program = next((d / n for n in ("model.json", "model.pdmodel") if (d / n).is_file()), None)
    if program is None or not (d / PARAMS).is_file():
        raise ExportError(f"{d}: no Paddle inference model (model.json or model.pdmodel, and {PARAMS}) in it")
    config = inference.Config(str(program), str(d / PARAMS))
    config.disable_gpu()
    # Paddle's oneDNN kernels reject the float-array attribute of the upsampling x2paddle writes ("not support
    # pir::ArrayAttribute<pir::DoubleAttribute>"); its plain CPU kernels run the whole graph
    config.disable_onednn()
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    inp = predictor.get_input_handle(predictor.get_input_names()[0])
    names = sorted(predictor.get_output_names(), key=lambda n: int(n.rsplit("_", 1)[-1]))  # fetch_name_0, _1, ...
    outs = [predictor.get_output_handle(n) for n in names]

    def run(x: torch.Tensor) -> list[np.ndarray]:
        a = np.ascontiguousarray(x.detach().cpu().float().numpy())
        inp.reshape(list(a.shape))
        inp.copy_from_cpu(a)
        predictor.run()
        return [o.copy_to_cpu() for o in outs]

    return meta, run, tuple(meta["imgsz"]), int(meta["batch"])
