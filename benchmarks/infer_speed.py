"""Inference speed: ms per image for PyTorch eager (the detect.py path), TorchScript and ONNX Runtime, plus NMS.

    python benchmarks/infer_speed.py                      # yolov5s, 640, batch 1 and 32
    python benchmarks/infer_speed.py --cfg yolov5n.yaml --batch 1 --reps 20

All backends run the same fused model with random weights in the same process, so the ratios are what matters.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.yolo import build_model  # noqa: E402
from utils.log import quiet  # noqa: E402
from utils.nms import non_max_suppression  # noqa: E402


def timed(fn, reps: int) -> float:
    """Median seconds of `reps` calls after two warm-up calls."""
    fn()
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default="yolov5s.yaml")
    p.add_argument("--img", type=int, default=640)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--reps", type=int, default=10)
    opt = p.parse_args()

    with quiet():
        model = build_model(opt.cfg).fuse().eval()
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = True
    print(f"{opt.cfg} {opt.img}px on CPU, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for bs in opt.batch:
        x = torch.rand(bs, 3, opt.img, opt.img)
        res = {}
        with torch.inference_mode():
            res["eager"] = timed(lambda x=x: model(x), max(opt.reps // bs, 3))
            pred = model(x)[0]
            res["NMS"] = timed(lambda p=pred: non_max_suppression(p, 0.25, 0.45), max(opt.reps // bs, 3))
        head = model.model[-1]
        head.export = True  # one output tensor, as exported models have
        try:
            with torch.no_grad():  # tracing and export need ordinary tensors, not inference-mode ones
                ts = torch.jit.trace(model, x, strict=False)
                res["torchscript"] = timed(lambda ts=ts, x=x: ts(x), max(opt.reps // bs, 3))
            try:
                import onnxruntime as ort

                f = io.BytesIO()
                with torch.no_grad():
                    torch.onnx.export(model, x, f, opset_version=17, input_names=["images"],
                                      output_names=["output0"], dynamo=False)
                sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
                xn = x.numpy()
                res["onnxruntime"] = timed(lambda s=sess, xn=xn: s.run(None, {"images": xn}), max(opt.reps // bs, 3))
            except Exception as e:  # noqa: BLE001 - report the backends that work
                print(f"onnxruntime skipped: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
        finally:
            head.export = False
        ref = res.get("onnxruntime")
        line = ", ".join(f"{k} {v / bs * 1e3:.1f} ms" + (f" ({v / ref:.2f}x ORT)" if ref and k != "NMS" else "")
                         for k, v in res.items())
        print(f"batch {bs}: per image {line}")


if __name__ == "__main__":
    main()
