"""Extra cost of the semantic head: parameters, GFLOPs and inference memory of the multi-task model against its
plain detector, with the issue's targets (at most +30% FLOPs and +400 MB at 1024x512).

    python benchmarks/semantic_cost.py                              # yolov5s-city, psp and bise, 1024x512
    python benchmarks/semantic_cost.py --cfg yolov5n-city.yaml --img 512 1024 --device cpu
    python benchmarks/semantic_cost.py --device 0 --half           # CUDA, FP16 weights and input (detect.py --half)

The plain detector is the same YAML without its semantic section (identical layers and weights, as the model's
tests check), so every difference is the head's. GFLOPs are counted by torch.utils.flop_counter on one eval forward
at the real input size (2 x multiply-accumulates; resizes and pooling are not counted). Memory is that of one
inference forward at batch 1 (no_grad, eval, fused, channels_last, as detect.py runs the model): on CUDA
torch.cuda.max_memory_allocated above what was allocated before the model was built (weights included); on CPU the
growth of the peak resident set of a child process over the same span (ru_maxrss never goes down, so every model
is measured in a process of its own; allocator caching included, so not comparable with the GPU figure). Times are
medians over interleaved rounds of one forward per model in one process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.memory import memory_start, rss_peak  # noqa: E402
from models.build import build_model  # noqa: E402
from models.semantic import with_semantic_head  # noqa: E402
from models.yolo import DetectionModel, load_yaml_cfg  # noqa: E402
from utils.device import select_device  # noqa: E402
from utils.log import quiet  # noqa: E402

MB = 2 ** 20
FLOPS_TARGET, MEMORY_TARGET_MB = 0.30, 400


def build(cfg: str, head: str) -> torch.nn.Module:
    """'plain': the YAML's detector alone; otherwise the multi-task model with that semantic head."""
    d = load_yaml_cfg(cfg)
    d["yaml_file"] = Path(cfg).name
    with quiet():
        return DetectionModel(d) if head == "plain" else build_model(with_semantic_head(d, head))


def count(model: torch.nn.Module, hw: tuple[int, int]) -> dict:
    """Parameters (total and semantic head) and GFLOPs of one eval forward at hw."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, *hw))
    head = getattr(model, "semantic", None)
    return {"params": sum(p.numel() for p in model.parameters()),
            "head_params": sum(p.numel() for p in head.parameters()) if head is not None else 0,
            "gflops": counter.get_total_flops() / 1e9}


def inference_model(cfg: str, head: str, device: torch.device, half: bool = False) -> torch.nn.Module:
    """The model as detect.py runs it: eval, fused, channels_last (FP16 with half)."""
    model = build(cfg, head).eval()
    with quiet():
        model.fuse()
    model.to(device).to(memory_format=torch.channels_last)
    return model.half() if half else model


def memory(cfg: str, head: str, hw: tuple[int, int], device: torch.device, half: bool = False) -> dict:
    """Peak memory over building the inference model and two forwards at batch 1 (weights included)."""
    cuda = device.type == "cuda"
    x = torch.rand(1, 3, *hw).contiguous(memory_format=torch.channels_last)
    start = memory_start(device)
    model = inference_model(cfg, head, device, half)
    x = x.to(device, torch.float16 if half else torch.float32)
    with torch.no_grad():
        for _ in range(2):  # the first call also builds the Detect grids
            model(x)
    peak = (torch.cuda.max_memory_allocated(device) if cuda else rss_peak()) - start
    del model, x
    return {"peak_mb": peak / MB}


def timings(cfg: str, heads: list[str], hw: tuple[int, int], device: torch.device, reps: int,
            half: bool = False) -> dict[str, float]:
    """Median ms per forward of each model, timed in interleaved rounds so that a shared machine's drifts hit all
    models alike (compare the ratios, not the milliseconds across runs)."""
    models = {h: inference_model(cfg, h, device, half) for h in heads}
    x = torch.rand(1, 3, *hw, device=device, dtype=torch.float16 if half else torch.float32)
    x = x.contiguous(memory_format=torch.channels_last)
    ts = {h: [] for h in heads}
    with torch.no_grad():
        for r in range(reps + 1):  # round 0 warms up
            for h, m in models.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t = time.perf_counter()
                m(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if r:
                    ts[h].append(time.perf_counter() - t)
    return {h: statistics.median(v) * 1000 for h, v in ts.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default="yolov5s-city.yaml", help="a YAML whose detector is measured (semantic "
                                                               "section replaced by each --heads head)")
    p.add_argument("--heads", nargs="+", default=["psp", "bise"])
    p.add_argument("--img", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    p.add_argument("--device", default="")
    p.add_argument("--reps", type=int, default=5, help="timed rounds (one forward of each model per round)")
    p.add_argument("--half", action="store_true", help="FP16 inference (CUDA only)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)  # one model's memory, in a process of its own
    opt = p.parse_args()
    hw = tuple(opt.img)
    with quiet():
        device = select_device(opt.device)
    if opt.half and device.type != "cuda":
        raise SystemExit("error: --half needs a CUDA device")
    if opt.child:
        print(json.dumps(memory(opt.cfg, opt.child, hw, device)))
        return

    rows = {}
    heads = ["plain", *opt.heads]
    for head in heads:
        r = count(build(opt.cfg, head), hw)
        if device.type == "cuda":
            r.update(memory(opt.cfg, head, hw, device, opt.half))
        else:  # ru_maxrss never goes down: each model's peak needs a process of its own
            args = [sys.executable, __file__, "--cfg", opt.cfg, "--img", *map(str, hw), "--device", "cpu",
                    "--child", head]
            out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
            r.update(json.loads(out.strip().splitlines()[-1]))
        rows[head] = r
    for head, ms in timings(opt.cfg, heads, hw, device, opt.reps, opt.half).items():
        rows[head]["ms"] = ms

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    what = "CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS growth"
    print(f"\n{opt.cfg} detector at {hw[1]}x{hw[0]} (w x h), batch 1, inference (fused, channels_last"
          f"{', FP16' if opt.half else ''}) on {where}")
    print(f"{'model':>8} {'params':>10} {'head':>9} {'GFLOPs':>8} {'memory MB':>10} {'ms':>8}   memory = {what}")
    base = rows["plain"]
    for head, r in rows.items():
        print(f"{head:>8} {r['params']:10d} {r['head_params']:9d} {r['gflops']:8.2f} {r['peak_mb']:10.0f} "
              f"{r['ms']:8.1f}")
    for head in opt.heads:
        r = rows[head]
        df, dm = r["gflops"] / base["gflops"] - 1, r["peak_mb"] - base["peak_mb"]
        print(f"{head}: +{r['head_params'] / 1e6:.2f}M parameters, FLOPs {df:+.1%} (target <= +{FLOPS_TARGET:.0%}: "
              f"{'met' if df <= FLOPS_TARGET else 'MISSED'}), memory {dm:+.0f} MB (target <= +{MEMORY_TARGET_MB} MB: "
              f"{'met' if dm <= MEMORY_TARGET_MB else 'MISSED'}), time {r['ms'] / base['ms']:.2f}x the detector")


if __name__ == "__main__":
    main()
