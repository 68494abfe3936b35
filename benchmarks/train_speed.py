"""Training-step speed: images/s, the time split per stage, and the fraction of this machine's measured peak.

    python benchmarks/train_speed.py                         # yolov5s, 640, batch 8 (CPU) / 16 (GPU)
    python benchmarks/train_speed.py --cfg yolov5n.yaml --img 320 --batch 16 --steps 10
    python benchmarks/train_speed.py --compile                # torch.compile the model first
    python benchmarks/train_speed.py --baseline               # also the unoptimised recipe, and the speed-up
    python benchmarks/train_speed.py --baseline --batch 64 --compile --steps 20   # GPU: the issue's comparison

Every figure is measured in the same run: the peak is the better of a large matmul and a large
channels_last 3x3 convolution timed beside the training steps (bf16 or fp16
when the steps run under AMP, fp32 with TF32 off otherwise), and the model's work is 3 x forward FLOPs (forward +
backward) counted by torch.utils.flop_counter.

"ours" is what the trainer does: AMP on CUDA (bf16 where the GPU has it natively, else fp16 with a GradScaler) and
channels_last; on a CPU the layout and autocast dtype the trainer measures for this machine, model, size and batch
(utils/engine/recipe.py: the cached choice, or a probe of a few seconds; $MTYOLO_CPU_RECIPE forces one); fused
optimizer kernels (CUDA and CPU), the fused BatchNorm+SiLU CPU kernel (models/bn_silu.py), foreach EMA, and
torch.compile with `--compile`. `--baseline` adds, in the same run on the same data, the recipe without those: fp32,
contiguous tensors, PyTorch's own BatchNorm and SiLU, the per-parameter optimizer loop (foreach=False), eager. On
CUDA both report peak memory (torch.cuda.max_memory_allocated) of their training steps.
Every model kind is timed with its task's own loss (memory.make_criterion: yolov5s-seg with box-shaped instance masks,
-city models with a random class map).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.memory import make_criterion  # noqa: E402
from models.bn_silu import pytorch_kernels  # noqa: E402
from models.build import build_model  # noqa: E402
from models.info import count_gflops  # noqa: E402
from utils.data.dataset_config import check_dataset  # noqa: E402
from utils.device import autocast_dtype, keep_freed_memory, select_device, time_sync  # noqa: E402
from utils.ema import ModelEMA  # noqa: E402
from utils.engine.recipe import choose_recipe, float_outputs  # noqa: E402
from utils.log import quiet  # noqa: E402
from utils.optim import clip_gradients, smart_optimizer  # noqa: E402
from utils.tasks.detect.dataset import create_dataloader  # noqa: E402

STAGES = ("data", "forward", "loss", "backward", "optimizer", "ema")
WARMUP_STEPS = 2


@dataclass
class Recipe:
    """How one set of training steps is run."""

    name: str
    amp: torch.dtype | None
    channels_last: bool
    fast_optimizer: bool
    compile: bool
    fused_bn_silu: bool = True


@dataclass
class Result:
    """Mean seconds per stage over the timed steps, and peak device memory (bytes, CUDA only)."""

    recipe: Recipe
    stage_s: dict[str, float]
    peak_mem: int | None
    stand_in_loss: bool = False

    @property
    def step_s(self) -> float:
        return sum(self.stage_s.values())


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 4096, reps: int = 5) -> float:
    """FLOP/s of an n x n matmul in `dtype`: the practical peak this machine reaches on dense math."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # an fp32 peak means fp32 arithmetic, not TF32 tensor cores
    try:
        for _ in range(2 if device.type == "cuda" else 1):
            a @ b
        t = time_sync(device)
        for _ in range(reps):
            a @ b
        return 2 * n ** 3 * reps / (time_sync(device) - t)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def conv_peak(device: torch.device, dtype: torch.dtype = torch.float32, reps: int = 5) -> float:
    """FLOP/s of a large channels_last 3x3 convolution: oneDNN/cuDNN's best case, often above the matmul's on CPU."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(device, dtype, memory_format=torch.channels_last)
    x = torch.randn(8, 256, 80, 80, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(2):
            conv(x)
        t = time_sync(device)
        for _ in range(reps):
            conv(x)
        dt = time_sync(device) - t
    return 2 * 256 * 256 * 9 * 8 * 80 * 80 * reps / dt


def next_batch(state: dict, loader) -> dict:
    """The next batch, restarting the loader when it runs out."""
    try:
        return next(state["it"])
    except (StopIteration, KeyError):
        state["it"] = iter(loader)
        return next(state["it"])


def run_recipe(r: Recipe, cfg: str, nc: int, hyp: dict, loader, state: dict, device: torch.device,
               steps: int) -> Result:
    """Build a fresh model, optimizer and EMA for recipe `r` and time `steps` training steps after a warm-up."""
    torch.manual_seed(0)
    with quiet():
        model = build_model(cfg, nc=nc).to(device)
    if r.channels_last:
        model.to(memory_format=torch.channels_last)
    criterion, stand_in = make_criterion(model, hyp)
    with quiet():
        optimizer = smart_optimizer(model, "SGD", 0.01, 0.937, 5e-4, fast=r.fast_optimizer)
    ema = ModelEMA(model)
    scaler = torch.amp.GradScaler("cuda", enabled=r.amp == torch.float16)
    train_model = torch.compile(model) if r.compile else model
    model.train()
    acc = dict.fromkeys(STAGES, 0.0)
    cuda = device.type == "cuda"
    for step in range(steps + WARMUP_STEPS):
        if cuda and step == WARMUP_STEPS:  # the peak of steady-state steps, not of compilation or autotuning
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time_sync(device)
        batch = next_batch(state, loader)
        imgs, targets = batch["img"], batch["targets"]
        imgs = imgs.to(device, non_blocking=True).float() / 255
        if r.channels_last:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        t1 = time_sync(device)
        with torch.autocast(device.type, dtype=r.amp, enabled=r.amp is not None):
            preds = train_model(imgs)
        t2 = time_sync(device)
        loss, _ = criterion(float_outputs(preds), targets)  # in fp32, as the trainer
        t3 = time_sync(device)
        scaler.scale(loss).backward()
        t4 = time_sync(device)
        scaler.unscale_(optimizer)
        clip_gradients(model, 10.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        t5 = time_sync(device)
        ema.update(model)
        t6 = time_sync(device)
        if step >= WARMUP_STEPS:
            for k, a, b in zip(STAGES, (t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6)):
                acc[k] += b - a
    peak_mem = torch.cuda.max_memory_allocated(device) if cuda else None
    del model, train_model, optimizer, ema
    if cuda:
        torch.cuda.empty_cache()
    return Result(r, {k: v / steps for k, v in acc.items()}, peak_mem, stand_in)


def report(res: Result, bs: int, work: float, peak: float, peak_name: str, fp32_peak: float) -> None:
    """The per-recipe lines: images/s, the time split and the fraction of the measured peak (in the recipe's dtype,
    and of the fp32 peak too when that differs: the fp32 fraction compares recipes of different dtypes)."""
    step_s, compute_s = res.step_s, res.step_s - res.stage_s["data"]
    print(f"{bs / step_s:.2f} images/s, {step_s:.3f} s per step ({work / 1e9:.0f} GFLOP per step)")
    print("time split: " + ", ".join(f"{k} {res.stage_s[k] * 1e3:.0f} ms ({res.stage_s[k] / step_s:.0%})"
                                     for k in STAGES))
    print(f"measured {peak_name} peak {peak / 1e9:.0f} GFLOP/s; training reaches {work / step_s / 1e9:.0f} GFLOP/s = "
          f"{work / step_s / peak:.0%} of peak ({work / compute_s / peak:.0%} excluding data wait)")
    if peak_name != "fp32":
        print(f"measured fp32 peak {fp32_peak / 1e9:.0f} GFLOP/s; training reaches {work / step_s / fp32_peak:.0%} "
              f"of it ({work / compute_s / fp32_peak:.0%} excluding data wait)")
    if res.peak_mem is not None:
        print(f"peak GPU memory of the timed steps {res.peak_mem / 2 ** 30:.2f} GiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default="yolov5s.yaml")
    p.add_argument("--img", type=int, default=640)
    p.add_argument("--batch", type=int, default=0, help="0: 8 on CPU, 16 on GPU")
    p.add_argument("--steps", type=int, default=5, help=f"timed steps (after {WARMUP_STEPS} warm-up steps)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--baseline", action="store_true",
                   help="also time fp32, contiguous, plain-loop optimizer, eager; print the speed-up")
    opt = p.parse_args()

    device = select_device(opt.device)
    cuda = device.type == "cuda"
    bs = opt.batch or (16 if cuda else 8)
    hyp = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-low.yaml").read_text())
    data = check_dataset(ROOT / "data/shapes.yaml")
    with quiet():  # cache 'auto' as train.py without --cache: a small set (the shapes set) is kept decoded in RAM
        loader, _ = create_dataloader(data["train"], opt.img, bs, 32, hyp=hyp, augment=True, workers=opt.workers,
                                      shuffle=True, cache="auto")
        gflops = count_gflops(build_model(opt.cfg, nc=data["nc"]), opt.img)  # forward, per image, 2 x MACs
    held = "kept decoded in RAM" if loader.dataset.cache_mode == "ram" else "read from disk"
    print(f"data: {len(loader.dataset)} shapes images, {held} as train.py does without --cache, "
          f"{opt.workers} loader workers")
    work = 3 * gflops * 1e9 * bs  # forward + backward (backward ~ 2 x forward)
    n = 8192 if cuda else 4096  # a GPU needs a larger matmul to reach its peak
    with quiet():  # the trainer's own choice: fixed on GPUs, measured on CPUs (cached per machine, model, size, batch)
        chosen = choose_recipe(build_model(opt.cfg, nc=data["nc"]), opt.img, bs, device, autocast_dtype(device))
    print(f"ours = the trainer's recipe for this machine: {chosen.name}")
    recipes = [Recipe("ours", chosen.amp_dtype, chosen.channels_last, True, opt.compile)]
    if opt.baseline:
        recipes.append(Recipe("baseline", None, False, False, False, fused_bn_silu=False))
    state: dict = {}
    # The baseline runs first, under glibc's default policy as upstream does; then, on a CPU, ours keeps freed memory
    # in the process as the trainer does (a process-wide setting that can't be undone for a later baseline).
    timed = {}
    for r in reversed(recipes):
        if r.name == "ours":
            keep_freed_memory(device)
        with contextlib.nullcontext() if r.fused_bn_silu else pytorch_kernels():
            timed[r.name] = run_recipe(r, opt.cfg, data["nc"], hyp, loader, state, device, opt.steps)
    results = [timed[r.name] for r in recipes]
    peaks = {}  # measured after the steps, so the GPU clocks are where training left them
    for dt in {torch.float32, *(r.amp or torch.float32 for r in recipes)}:
        # the better of the two dense kernels: a fraction above 100% would mean the peak was measured too low
        peaks[dt] = max(matmul_peak(device, dt, n=n, reps=20 if cuda else 5), conv_peak(device, dt))

    for res in results:
        r = res.recipe
        dt = r.amp or torch.float32
        name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dt]
        label = f" [{r.name}]" if opt.baseline else ""
        print(f"\n{opt.cfg} {opt.img}px batch {bs} on {device} ({torch.get_num_threads()} threads){label}, "
              f"{'compiled' if r.compile else 'eager'}, AMP {r.amp}, channels_last {r.channels_last}, "
              f"optimizer {'fused' if r.fast_optimizer else 'for-loop'}")
        if cuda:  # PyTorch's default lets cuDNN run fp32 convolutions on TF32 tensor cores: say which applied
            print(f"cuDNN TF32 {torch.backends.cudnn.allow_tf32}, matmul TF32 {torch.backends.cuda.matmul.allow_tf32}")
        if res.stand_in_loss:
            print("note: the head is not a plain Detect; a stand-in loss (mean of every output) was timed")
        report(res, bs, work, peaks[dt], name, peaks[torch.float32])
    if opt.baseline:
        ours, base = results
        line = f"\nspeed-up ours / baseline: {base.step_s / ours.step_s:.2f}x images/s " \
               f"({bs / ours.step_s:.2f} vs {bs / base.step_s:.2f})"
        if ours.peak_mem is not None:
            line += f"; peak memory {ours.peak_mem / 2 ** 30:.2f} vs {base.peak_mem / 2 ** 30:.2f} GiB " \
                    f"({ours.peak_mem / base.peak_mem:.2f}x)"
        print(line)


if __name__ == "__main__":
    main()
