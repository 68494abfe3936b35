"""ncnn export through pnnx (PyTorch's TorchScript trace -> ncnn param/bin) and ncnn's Python runtime, which checks
and runs the files.

The model is the folder file_ncnn_model/ holding model.ncnn.param, model.ncnn.bin and metadata.yaml (as upstream's
later releases lay it out). ncnn works on one image at a time (its blobs have no batch axis), so the input is
in0 (3, H, W) float RGB 0-1 and the outputs out0, out1, ... are output0, output1, ... without their batch axis; the
runner below feeds a batch image by image and stacks the results.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from utils.export import ExportError, metadata
from utils.export.torchscript import export_torchscript

PARAM, BIN = "model.ncnn.param", "model.ncnn.bin"


def ncnn_dir(file: Path) -> Path:
    """yolov5s_ncnn_model/ beside the weights."""
    file = Path(file)
    return file.parent / f"{file.stem}_ncnn_model"


def export_ncnn(model: torch.nn.Module, im: torch.Tensor, file: Path, meta: dict, dynamic: bool = False) -> Path:
    """Trace `model` on one image of `im`, convert with pnnx, and return the model folder."""
    try:
        import pnnx
    except ImportError:
        raise ExportError("--include ncnn needs pnnx (pip install -r requirements-export.txt)") from None
    if dynamic:
        raise ExportError("ncnn export is static here: export without --dynamic")
    d = ncnn_dir(file).resolve()  # pnnx runs in a temporary folder
    d.mkdir(parents=True, exist_ok=True)
    one = im[:1].float().cpu()
    shape = ",".join(map(str, one.shape))
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        ts = export_torchscript(model.float().cpu(), one, t / "model", meta)
        # pnnx also writes its own intermediate files: all of them go to the temporary folder
        args = [pnnx.EXEC_PATH, str(ts), f"inputshape=[{shape}]", f"ncnnparam={d / PARAM}", f"ncnnbin={d / BIN}",
                f"ncnnpy={t / 'ncnn.py'}", f"pnnxparam={t / 'm.pnnx.param'}", f"pnnxbin={t / 'm.pnnx.bin'}",
                f"pnnxpy={t / 'pnnx.py'}", f"pnnxonnx={t / 'm.pnnx.onnx'}", "fp16=0", "device=cpu"]
        r = subprocess.run(args, capture_output=True, text=True, cwd=tmp)
    if r.returncode != 0 or not (d / PARAM).is_file():
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ExportError(f"pnnx failed (exit {r.returncode}): {tail[0][:200]}")
    metadata.write_folder_meta(d, {**meta, "batch": 1})
    return d


def read_metadata(path: Path) -> dict:
    """The metadata.yaml of an ncnn model folder (given as the folder or its .param file)."""
    return metadata.read_folder_meta(path if path.is_dir() else path.parent)


def load_runner(path: Path) -> tuple[dict, Callable[[torch.Tensor], list[np.ndarray]], tuple[int, int], None]:
    """(metadata, run(batch) -> outputs, (h, w), None = any batch) for an ncnn model folder (or its .param file)."""
    try:
        import ncnn
    except ImportError:
        raise ExportError(f"{path}: running ncnn models needs ncnn (pip install ncnn)") from None
    meta, d = read_metadata(path), path if path.is_dir() else path.parent
    net = ncnn.Net()
    # fp32 throughout: ncnn would otherwise store and compute in fp16 where the CPU allows, off by ~1e-3
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.opt.num_threads = 1  # its OpenMP pool and torch's spin against each other in one process (10-100x slower)
    if net.load_param(str(d / PARAM)) or net.load_model(str(d / BIN)):
        raise ExportError(f"{d}: ncnn cannot load {PARAM}/{BIN}")
    inp, outs = net.input_names()[0], sorted(net.output_names(), key=lambda n: int(n.lstrip("out") or 0))

    def run(x: torch.Tensor) -> list[np.ndarray]:
        per_image = []
        for a in x.detach().cpu().float().numpy():
            with net.create_extractor() as ex:
                ex.input(inp, ncnn.Mat(np.ascontiguousarray(a)).clone())
                per_image.append([np.array(ex.extract(o)[1]) for o in outs])
        return [np.stack(ys) for ys in zip(*per_image)]

    return meta, run, tuple(meta["imgsz"]), None  # any batch: image by image
