"""Export one model to every format available here and benchmark each file, as YOLOv5 v7.0's benchmarks.py.

    python benchmarks.py --weights yolov5s.pt --data data/shapes.yaml --img 320
    python benchmarks.py --weights best.pt --test          # export (and check) only

One row per format: file size, the headline figure of the task's val.py on --data (mAP50-95; mask mAP50-95 for
segmentation; top-1 for classification), inference ms per image, and whether the export passed its check against
PyTorch. A format whose package is not installed is one row saying so.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utils.engine.cli import opt_with, run_main  # noqa: E402
from utils.paths import ROOT  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse benchmarks.py flags (YOLOv5 v7.0 names and defaults)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=str, default=str(ROOT / "yolov5s.pt"), help="weights path")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="inference size (pixels)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size")
    p.add_argument("--data", type=str, default=str(ROOT / "data/shapes.yaml"), help="dataset.yaml (or class folder)")
    p.add_argument("--device", default="cpu", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference")
    p.add_argument("--test", action="store_true", help="test exports only")
    p.add_argument("--pt-only", action="store_true", help="test PyTorch only")
    p.add_argument("--hard-fail", action="store_true", help="fail on the first format that does not export or run")
    return p.parse_args(argv)


def validator(task: str):
    """The val.py `run` of a task."""
    if task == "classify":
        from classify import val
    elif task == "segment":
        from segment import val
    else:
        import val
    return val.run


def headline(figures: dict[str, float]) -> float:
    """top-1 for classification, else the last mAP50-95 (the mask one for segmentation)."""
    if "metrics/accuracy_top1" in figures:
        return figures["metrics/accuracy_top1"]
    return [v for k, v in figures.items() if "0.5:0.95" in k][-1]


def benchmark_format(fmt: dict, weights: Path, opt: argparse.Namespace, task: str) -> dict:
    """Export `weights` to one format (the export checks it) and, unless --test, validate the file."""
    from utils.export import ExportError
    from utils.export.exporter import export_weights

    row = {"format": fmt["format"], "size": None, "figure": None, "ms": None, "check": "-"}
    if not fmt["available"]:
        row["check"] = f"not installed ({fmt['package']})"
        return row
    t = time.perf_counter()
    if fmt["argument"] == "-":
        f = weights
    else:
        try:
            f = export_weights(weights=weights, include=[fmt["argument"]], imgsz=[opt.imgsz], device=opt.device,
                               half=opt.half and fmt["argument"] != "openvino", data=opt.data)[fmt["argument"]]
        except ExportError as e:
            row["check"] = f"failed: {str(e)[:80]}"
            if opt.hard_fail:
                raise
            return row
        row["check"] = f"passed ({time.perf_counter() - t:.0f}s)"
    files = [p for p in f.rglob("*") if p.is_file()] if f.is_dir() else \
        [p for p in f.parent.rglob("*") if p.is_file()] if f.suffix == ".xml" else [f]
    row["size"] = sum(p.stat().st_size for p in files) / 1e6
    if not fmt["runs_here"]:  # exported and its spec checked; its runtime exists on another system only
        row["check"] += f"; {fmt['format']} runs only on macOS, not validated"
    elif not opt.test:
        r = validator(task)(weights=[str(f)], data=opt.data, imgsz=opt.imgsz, batch_size=opt.batch_size,
                            device=opt.device, workers=0, half=opt.half, project=str(ROOT / "runs/benchmarks"),
                            name=fmt["argument"])
        row["figure"], row["ms"] = headline(r.figures), r.speed[1]
    return row


def main(opt: argparse.Namespace) -> list[dict]:
    """Benchmark every format; prints the table and returns its rows."""
    from utils.checkpoint import checkpoint_kind
    from utils.downloads import attempt_download
    from utils.export import export_formats
    from utils.log import LOGGER

    weights = Path(attempt_download(opt.weights))
    task = checkpoint_kind(weights) or "detect"
    formats = export_formats()[:1] if opt.pt_only else export_formats()
    rows = [benchmark_format(f, weights, opt, task) for f in formats]
    figure = "top-1" if task == "classify" else "mAP50-95"
    lines = [f"\nBenchmarks complete: {weights.name} ({task}) at --img {opt.imgsz}, data {opt.data}",
             f"{'Format':<16}{'Size (MB)':>10}{figure:>10}{'ms/img':>9}  Check"]
    for r in rows:
        size, fig, ms = (f"{r['size']:.1f}" if r["size"] is not None else "-",
                         f"{r['figure']:.4f}" if r["figure"] is not None else "-",
                         f"{r['ms']:.1f}" if r["ms"] is not None else "-")
        lines.append(f"{r['format']:<16}{size:>10}{fig:>10}{ms:>9}  {r['check']}")
    LOGGER.info("\n".join(lines))
    return rows


def run(**kwargs) -> list[dict]:
    """Python API: benchmarks.run(weights='best.pt', data='data/shapes.yaml', imgsz=320, test=True)."""
    return main(opt_with(parse_opt, **kwargs))


if __name__ == "__main__":
    run_main(main, parse_opt())
