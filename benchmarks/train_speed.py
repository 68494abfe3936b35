"""Training-step speed: images/s, the time split per stage, and the fraction of this machine's measured fp32 peak.

    python benchmarks/train_speed.py                         # yolov5s, 640, batch 8 (CPU) / 16 (GPU)
    python benchmarks/train_speed.py --cfg yolov5n.yaml --img 320 --batch 16 --steps 10
    python benchmarks/train_speed.py --compile                # torch.compile the model first

Every figure is measured in the same run: the peak is a large fp32 matmul timed beside the training steps, and the
model's work is 3 x forward FLOPs (forward + backward) counted by torch.utils.flop_counter.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.info import count_gflops  # noqa: E402
from models.yolo import build_model  # noqa: E402
from utils.data.dataset import create_dataloader  # noqa: E402
from utils.data.dataset_config import check_dataset  # noqa: E402
from utils.device import select_device, time_sync  # noqa: E402
from utils.ema import ModelEMA  # noqa: E402
from utils.log import quiet  # noqa: E402
from utils.loss import DetectionLoss  # noqa: E402
from utils.optim import clip_gradients, smart_optimizer  # noqa: E402


def matmul_peak(device: torch.device, n: int = 4096, reps: int = 5) -> float:
    """fp32 FLOP/s of an n x n matmul: the practical peak this machine reaches on dense math."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.backends.cuda.matmul.allow_tf32 = False
    a @ b
    t = time_sync(device)
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time_sync(device) - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default="yolov5s.yaml")
    p.add_argument("--img", type=int, default=640)
    p.add_argument("--batch", type=int, default=0, help="0: 8 on CPU, 16 on GPU")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true", help="channels_last on CPU too (always on CUDA)")
    opt = p.parse_args()

    device = select_device(opt.device)
    bs = opt.batch or (16 if device.type == "cuda" else 8)
    hyp = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-low.yaml").read_text())
    data = check_dataset(ROOT / "data/shapes.yaml")
    with quiet():
        model = build_model(opt.cfg, nc=data["nc"]).to(device)
        loader, _ = create_dataloader(data["train"], opt.img, bs, 32, hyp=hyp, augment=True, workers=opt.workers,
                                      shuffle=True)
    gflops = count_gflops(model, opt.img)  # forward, per image, 2 x MACs
    amp = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    cl = device.type == "cuda" or opt.channels_last
    if cl:
        model.to(memory_format=torch.channels_last)
    criterion = DetectionLoss(model.model[-1], hyp)
    optimizer = smart_optimizer(model, "SGD", 0.01, 0.937, 5e-4)
    ema = ModelEMA(model)
    train_model = torch.compile(model) if opt.compile else model
    model.train()

    stages = ["data", "forward", "loss", "backward", "optimizer", "ema"]
    acc = dict.fromkeys(stages, 0.0)
    it = iter(loader)
    total = opt.steps + 2
    for step in range(total):
        t0 = time_sync(device)
        try:
            imgs, targets, _, _ = next(it)
        except StopIteration:
            it = iter(loader)
            imgs, targets, _, _ = next(it)
        imgs = imgs.to(device, non_blocking=True).float() / 255
        if cl:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        targets = targets.to(device)
        t1 = time_sync(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            preds = train_model(imgs)
            t2 = time_sync(device)
            loss, _ = criterion(preds, targets)
        t3 = time_sync(device)
        loss.backward()
        t4 = time_sync(device)
        clip_gradients(model, 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t5 = time_sync(device)
        ema.update(model)
        t6 = time_sync(device)
        if step >= 2:
            for k, a, b in zip(stages, (t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6)):
                acc[k] += b - a
    step_s = sum(acc.values()) / opt.steps
    compute_s = step_s - acc["data"] / opt.steps
    peak = matmul_peak(device)
    work = 3 * gflops * 1e9 * bs  # forward + backward (backward ~ 2 x forward)
    print(f"\n{opt.cfg} {opt.img}px batch {bs} on {device} ({torch.get_num_threads()} threads), "
          f"{'compiled' if opt.compile else 'eager'}, AMP {amp}, channels_last {cl}")
    print(f"{bs / step_s:.2f} images/s, {step_s:.3f} s per step ({work / 1e9:.0f} GFLOP per step)")
    print("time split: " + ", ".join(f"{k} {acc[k] / opt.steps * 1e3:.0f} ms ({acc[k] / sum(acc.values()):.0%})"
                                     for k in stages))
    print(f"measured fp32 peak {peak / 1e9:.0f} GFLOP/s; training reaches {work / step_s / 1e9:.0f} GFLOP/s = "
          f"{work / step_s / peak:.0%} of peak ({work / compute_s / peak:.0%} excluding data wait)")


if __name__ == "__main__":
    main()
