"""Peak memory of one full training step (forward, loss, backward, optimizer, EMA), ours against a plain baseline.

    python benchmarks/memory.py                                   # yolov5s, 640, batch 16
    python benchmarks/memory.py --cfg yolov5s-seg.yaml            # any model YAML
    python benchmarks/memory.py --cfg yolov5s-city.yaml --img 512 1024   # height width: the semantic 1024x512 case
    python benchmarks/memory.py --device cpu --recipe both        # CPU: each recipe in its own child process

On CUDA the figure is torch.cuda.max_memory_allocated over the steps, above what was allocated before the model was
built, for "ours" (the trainer's recipe: AMP in bf16 where the GPU has it natively else fp16 with a GradScaler,
channels_last, fused optimizer, foreach EMA, fused BatchNorm+SiLU on a CPU) and "baseline" (fp32, contiguous,
PyTorch's own BatchNorm and SiLU, per-parameter optimizer loop), both in
the same run. Without a GPU it reports the growth of the process's peak resident memory (ru_maxrss) over a step of
the CPU recipe instead, which includes allocator caching and is not comparable with the GPU figure.

Inputs are random images and random boxes (memory does not depend on the pixels). Each model kind is trained
against its task's own loss (make_criterion): instance segmentation with each box filled as its object's mask,
detection + semantic with a class map of random ids.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import resource
import subprocess
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.bn_silu import pytorch_kernels  # noqa: E402
from models.build import build_model  # noqa: E402
from utils.device import autocast_dtype, select_device  # noqa: E402
from utils.ema import ModelEMA  # noqa: E402
from utils.log import quiet  # noqa: E402
from utils.optim import clip_gradients, smart_optimizer  # noqa: E402
from utils.tasks.detect.loss import DetectionLoss  # noqa: E402

GIB = 2 ** 30


def rss_now() -> int:
    """Current resident memory of this process in bytes (Linux /proc; psutil elsewhere; 0 when unknown)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize()
    except (OSError, IndexError, ValueError):
        try:
            import psutil

            return psutil.Process().memory_info().rss
        except ImportError:
            return 0


def memory_start(device: torch.device) -> int:
    """Where a measurement starts: CUDA allocated bytes after clearing the cache and the peak, else the RSS."""
    if device.type != "cuda":
        return rss_now()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def rss_peak() -> int:
    """Peak resident memory of this process so far, in bytes."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # Linux reports KiB, macOS bytes


def make_criterion(model: torch.nn.Module, hyp: dict):
    """The task's own loss for the model's kind, as (criterion(preds, targets), stand_in): the labels other than the
    boxes (instance masks, class maps) are made up to match; stand_in is True only for a kind with no loss here."""
    kind, head = getattr(model, "task", "detect"), model.model[-1]
    if kind == "detect":
        return DetectionLoss(head, hyp), False
    if kind == "segment":
        from utils.tasks.segment.loss import SegmentationLoss

        seg = SegmentationLoss(head, hyp, overlap=True)

        def segment_loss(preds, targets):
            masks = box_index_masks(targets, preds[1])  # on the device, no host read: timed like the loss
            return seg(preds, targets, masks)

        return segment_loss, False
    if kind == "semantic":
        from utils.tasks.semantic.loss import SemanticDetectionLoss

        sem = SemanticDetectionLoss(head, hyp)

        def semantic_loss(preds, targets):
            logits = preds[1]  # (B, nc_seg, H, W): a class map of random ids
            g = torch.Generator(device=logits.device).manual_seed(0)
            cls = torch.randint(0, logits.shape[1], (logits.shape[0], *logits.shape[2:]), device=logits.device,
                                generator=g)
            ones = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
            return sem(preds, {"targets": targets, "semantic": cls, "has_boxes": ones})

        return semantic_loss, False

    def flat(o):
        if torch.is_tensor(o):
            yield o
        elif isinstance(o, (list, tuple)):
            for x in o:
                yield from flat(x)

    return (lambda preds, targets: (sum(t.float().mean() for t in flat(preds)), None)), True


def box_index_masks(targets: torch.Tensor, proto: torch.Tensor) -> torch.Tensor:
    """Overlap-form instance masks (B, H/4, W/4) for (image, class, x, y, w, h) rows: each box filled with its
    1-based rank in its image, later boxes on top, built on the device."""
    from utils.tasks.segment.loss import rank_in_image

    (b, _, h, w), t = proto.shape, targets.to(proto.device)
    ys = (torch.arange(h, device=t.device) + 0.5)[None, :, None] / h
    xs = (torch.arange(w, device=t.device) + 0.5)[None, None, :] / w
    x, y, bw, bh = (t[:, i, None, None] for i in range(2, 6))
    inside = (ys >= y - bh / 2) & (ys < y + bh / 2) & (xs >= x - bw / 2) & (xs < x + bw / 2)  # (nt, h, w)
    rank = rank_in_image(t[:, 0].long(), b).float()
    vals = (inside * rank[:, None, None]).view(len(t), -1)
    index = t[:, 0].long()[:, None].expand_as(vals)
    return torch.zeros(b, h * w, device=t.device).scatter_reduce_(0, index, vals, "amax").view(b, h, w)


def random_targets(bs: int, nc: int, per_image: int, device: torch.device) -> torch.Tensor:
    """(image, class, x, y, w, h) rows, normalised, `per_image` boxes per image."""
    n = bs * per_image
    img = torch.arange(bs).repeat_interleave(per_image).float()[:, None]
    cls = torch.randint(0, nc, (n, 1)).float()
    xy, wh = torch.rand(n, 2) * 0.8 + 0.1, torch.rand(n, 2) * 0.2 + 0.02
    return torch.cat((img, cls, xy, wh), 1).to(device)


def measure(recipe: str, cfg: str, nc: int, hw: tuple[int, int], bs: int, steps: int,
            device: torch.device) -> dict:
    """Run `steps` training steps under `recipe` ('ours' or 'baseline'); returns peak bytes above the start."""
    cuda = device.type == "cuda"
    ours = recipe == "ours"
    hyp = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-low.yaml").read_text())
    amp = autocast_dtype(device) if ours else None
    cl = ours  # the trainer runs channels_last on every device
    torch.manual_seed(0)
    imgs = torch.rand(bs, 3, *hw, device=device)
    if cl:  # the loader's batch is converted in the trainer too; done before `start` so both count inputs alike
        imgs = imgs.contiguous(memory_format=torch.channels_last)
    targets = random_targets(bs, nc, 8, device)
    gc.collect()
    start = memory_start(device)
    with quiet():
        model = build_model(cfg, nc=nc).to(device).train()
        optimizer = smart_optimizer(model, "SGD", 0.01, 0.937, 5e-4, fast=ours)
    if cl:
        model.to(memory_format=torch.channels_last)
    criterion, stand_in = make_criterion(model, hyp)
    ema = ModelEMA(model)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    for _ in range(steps):  # the first step also allocates the optimizer state: the peak covers it
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss, _ = criterion(model(imgs), targets)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        clip_gradients(model, 10.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)
    if cuda:
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - start
    else:
        peak = rss_peak() - start
    del model, optimizer, ema, criterion
    return {"recipe": recipe, "amp": amp, "channels_last": cl, "peak": peak, "weights": weights,
            "stand_in": stand_in}


def describe(r: dict, cuda: bool) -> str:
    """One line per recipe."""
    what = "peak GPU memory (max_memory_allocated)" if cuda else "peak RSS growth (ru_maxrss)"
    optim = ("fused" if cuda else "foreach") if r["recipe"] == "ours" else "for-loop"
    return (f"{r['recipe']:>8}: {what} {r['peak'] / GIB:.2f} GiB   [AMP {r['amp']}, channels_last "
            f"{r['channels_last']}, optimizer {optim}; weights {r['weights'] / 2 ** 20:.1f} MiB]")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default="yolov5s.yaml", help="model YAML (the semantic model's, once it exists)")
    p.add_argument("--img", type=int, nargs="+", default=[640], help="size, or height width")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--nc", type=int, default=80)
    p.add_argument("--steps", type=int, default=2, help="training steps; the peak is taken over all of them")
    p.add_argument("--device", default="")
    p.add_argument("--recipe", choices=("both", "ours", "baseline"), default="both")
    opt = p.parse_args()
    hw = (opt.img[0], opt.img[0]) if len(opt.img) == 1 else (opt.img[0], opt.img[1])

    with quiet():
        device = select_device(opt.device)
    cuda = device.type == "cuda"
    if not cuda and opt.recipe == "both":
        # ru_maxrss never goes down, so each CPU recipe needs a process of its own to be measured honestly
        for name in ("ours", "baseline"):
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--recipe", name], check=True)
        return
    recipes = ("ours", "baseline") if opt.recipe == "both" else (opt.recipe,)
    results = []
    for r in recipes:
        with contextlib.nullcontext() if r == "ours" else pytorch_kernels():
            results.append(measure(r, opt.cfg, opt.nc, hw, opt.batch, opt.steps, device))

    where = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\n{opt.cfg} {hw[0]}x{hw[1]} (h x w) batch {opt.batch}, {opt.steps} training steps on {where}")
    if results[0]["stand_in"]:
        print("note: the head is not a plain Detect; a stand-in loss (mean of every output) was used")
    for r in results:
        print(describe(r, cuda))
    if len(results) == 2:
        o, b = results
        print(f"ours / baseline: {o['peak'] / b['peak']:.2f}x")
    if not cuda:
        print("note: CPU figure (resident memory, allocator caching included); the GPU peak needs a CUDA device")


if __name__ == "__main__":
    main()
