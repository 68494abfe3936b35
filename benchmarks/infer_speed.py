"""Inference speed: ms per image through detect.py's own path, against PyTorch, TorchScript, ONNX Runtime, OpenVINO.

    python benchmarks/infer_speed.py                      # yolov5s, 640, batch 1 and 32
    python benchmarks/infer_speed.py --cfg yolov5n.yaml --batch 1 --reps 20
    python benchmarks/infer_speed.py --compile            # add torch.compile (slow to build on small CPUs)

The model is a random-weight checkpoint loaded by detect.py's Predictor (load_model: fused, channels_last, in-place
decoding), fed a letterboxed real image preprocessed as detect.py does. 'detect.py path' is whatever the Predictor
runs on this CPU (PyTorch, or the faster export utils/export/fastest.py picked: its name in brackets); 'eager' is the
PyTorch model itself; 'openvino' is the --dynamic export fastest.py made. Every backend runs that same fused model in
the same process, and the backends are timed in interleaved rounds, so slow drifts of a shared machine hit them all
alike: compare the ratios, not the milliseconds across runs. For batches above 1, 'val path' is the Evaluator's
forward (cache-sized chunks on CPU) and 'eager' is one whole-batch call.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.build import build_model  # noqa: E402
from utils.checkpoint import make_checkpoint, save_checkpoint  # noqa: E402
from utils.data.imageio import imread, letterbox  # noqa: E402
from utils.engine.evaluator import forward_batch  # noqa: E402
from utils.engine.predictor import Predictor, add_predict_arguments  # noqa: E402
from utils.export.backend import load_exported  # noqa: E402
from utils.export.fastest import RUNTIME_ENV  # noqa: E402
from utils.log import quiet  # noqa: E402
from utils.nms import non_max_suppression  # noqa: E402
from utils.tasks.detect.task import DetectionTask  # noqa: E402


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, pause: float = 0.1) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin after one warm-up call each.

    The pause before each call lets the previous backend's thread pool go idle: ONNX Runtime's workers spin for a
    while after a run, and would otherwise steal the cores from whatever is timed next.
    """
    for fn in fns.values():
        fn()
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            time.sleep(pause)
            t = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in ts.items()}


def onnx_session(model: torch.nn.Module, x: torch.Tensor):
    """An ONNX Runtime CPU session of `model` exported at x's shape, or None with a reason printed."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime skipped: not installed")
        return None
    m = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    m.model[-1].export = True  # one output tensor, as exported models have
    f = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about Python-side branches fixed at export
        torch.onnx.export(m, x.contiguous(), f, opset_version=17, input_names=["images"], output_names=["output0"],
                          dynamo=False)
    return ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def forced_runtime(name: str) -> Iterator[None]:
    """$MTYOLO_CPU_RUNTIME set to `name` for the duration (the Predictor then skips the runtime choice)."""
    old = os.environ.get(RUNTIME_ENV)
    os.environ[RUNTIME_ENV] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ[RUNTIME_ENV]
        else:
            os.environ[RUNTIME_ENV] = old


def exported_openvino(weights: Path) -> torch.nn.Module | None:
    """The OpenVINO export the Predictor's runtime choice made beside `weights`, loaded; None if it made none."""
    found = sorted(weights.parent.glob(f"{weights.stem}_cpu_runtimes/*_openvino_model"))
    return load_exported(found[0]) if found else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default="yolov5s.yaml")
    p.add_argument("--img", type=int, default=640)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--reps", type=int, default=16, help="timed rounds at batch 1 (fewer at larger batches)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the loaded model")
    p.add_argument("--no-torchscript", action="store_true")
    opt = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp, quiet():
        torch.manual_seed(0)
        w = save_checkpoint(make_checkpoint(build_model(opt.cfg)), Path(tmp) / "bench.pt")
        popt = add_predict_arguments(argparse.ArgumentParser(), DetectionTask(), str(w), str(ROOT / "data/images"),
                                     tmp, imgsz=opt.img).parse_args(["--device", "cpu"])
        pred = Predictor(popt, DetectionTask())  # detect.py's path: PyTorch or the export that ran fastest here
        with forced_runtime("pytorch"):
            model = Predictor(popt, DetectionTask()).model
        openvino = exported_openvino(w)
    path_name = f"detect.py path [{getattr(pred.model, 'format', 'pytorch')}]"
    im = letterbox(imread(ROOT / "data/images/shapes1.jpg"), (opt.img, opt.img), auto=False)[0]
    im = torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)[::-1]))[None].float() / 255
    print(f"{opt.cfg} {opt.img}px on CPU, torch {torch.__version__}, {torch.get_num_threads()} threads")

    for bs in opt.batch:
        x = im.expand(bs, -1, -1, -1).contiguous(memory_format=torch.channels_last)
        fns: dict[str, Callable[[], object]] = {}
        with torch.inference_mode():
            xp = x.contiguous(memory_format=pred.memory_format)  # as Predictor.run hands it over
            fns[path_name] = lambda xp=xp: pred.model(xp, augment=False, visualize=False)
            fns["eager"] = lambda x=x: model(x, augment=False, visualize=False)
            if bs > 1:
                fns["val path"] = lambda x=x: forward_batch(model, x)
            if opt.compile:
                cm = torch.compile(model)
                fns["compiled"] = lambda x=x, cm=cm: cm(x)
        if not opt.no_torchscript:
            head = model.model[-1]
            head.export = True
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ts = torch.jit.freeze(torch.jit.trace(model, x, strict=False, check_trace=False).eval())
            head.export = False
            fns["torchscript"] = lambda x=x, ts=ts: ts(x)
        sess = onnx_session(model, x)
        if sess is not None:
            xn = x.contiguous().numpy()
            fns["onnxruntime"] = lambda s=sess, xn=xn: s.run(None, {"images": xn})
        if openvino is not None:
            fns["openvino"] = lambda x=x: openvino(x)
        rounds = max(opt.reps // bs, 3)
        with torch.inference_mode():
            res = interleaved(fns, rounds)
            out = model(x)[0]
            res["NMS"] = interleaved({"nms": lambda o=out: non_max_suppression(o, 0.25, 0.45)}, rounds)["nms"]
        ref = res.get("onnxruntime")
        line = ", ".join(f"{k} {v / bs * 1e3:.1f} ms" + (f" ({v / ref:.2f}x ORT)" if ref and k not in
                                                         ("NMS", "onnxruntime") else "") for k, v in res.items())
        print(f"batch {bs}: per image {line}")
        others = {k: v for k, v in res.items() if k not in ("NMS", path_name, "val path")}
        best = min(others, key=others.get)
        print(f"batch {bs}: detect.py path {res[path_name] / others[best]:.2f}x the fastest other backend ({best})")


if __name__ == "__main__":
    main()
