"""Export a YOLOv5 model (detection, segmentation, classification) to TorchScript, ONNX or OpenVINO.

    python export.py --weights yolov5s.pt --include torchscript onnx
    python export.py --weights runs/train/exp/weights/best.pt --include onnx --dynamic --simplify
    python export.py --weights yolov5s-cls.pt --include onnx --img 224

Every file is checked right after export: its runtime (torch.jit, onnxruntime, OpenVINO) runs the same input as
PyTorch and the largest difference is printed; above 1e-3 the export fails. val.py, detect.py, segment/* and
classify/* run the exported files directly (--weights yolov5s.onnx).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utils.engine.cli import opt_with, run_main  # noqa: E402
from utils.paths import ROOT  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse export.py flags (YOLOv5 v7.0 names and defaults, for the formats this toolkit exports)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=str, default="", help="(optional) dataset.yaml or class folder for class names")
    p.add_argument("--weights", nargs="+", type=str, default=[str(ROOT / "yolov5s.pt")], help="model.pt path(s)")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640, 640], help="image (h, w)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size")
    p.add_argument("--device", default="cpu", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--half", action="store_true",
                   help="FP16 half-precision export (CUDA only; TFLite, CoreML: fp16 weights)")
    p.add_argument("--inplace", action="store_true", help="set YOLOv5 Detect() inplace=True")
    p.add_argument("--optimize", action="store_true", help="TorchScript: optimize for mobile (CPU only)")
    p.add_argument("--int8", action="store_true", help="TFLite: full-integer quantisation calibrated on --data")
    p.add_argument("--dynamic", action="store_true", help="ONNX/TorchScript/OpenVINO: dynamic batch, height, width")
    p.add_argument("--simplify", action="store_true", help="ONNX: simplify model (onnxsim or onnxslim)")
    p.add_argument("--opset", type=int, default=12, help="ONNX: opset version")
    p.add_argument("--include", nargs="+", default=["torchscript"],
                   help="torchscript, onnx, openvino, tflite, ncnn, coreml")
    return p.parse_args(argv)


def main(opt: argparse.Namespace) -> list[dict]:
    """Export every --weights file; returns one {format: path} dict per file."""
    from utils.export.backend import weights_kind
    from utils.export.exporter import export_weights
    from utils.tasks import registry

    weights = opt.weights if isinstance(opt.weights, (list, tuple)) else [opt.weights]
    kw = {k: v for k, v in vars(opt).items() if k not in ("weights", "batch_size")}
    out = []
    for w in weights:
        # a class folder (classification data) names its classes as the task that reads it says
        names = registry.for_kind(weights_kind(w) or "classify").build().data_names(str(opt.data)) \
            if opt.data and Path(opt.data).is_dir() else None
        out.append(export_weights(weights=w, batch_size=opt.batch_size, names=names, **kw))
    return out


def run(**kwargs) -> list[dict]:
    """Python API: export.run(weights='best.pt', include=['onnx'], imgsz=[320], dynamic=True)."""
    return main(opt_with(parse_opt, **kwargs))


if __name__ == "__main__":
    run_main(main, parse_opt())
