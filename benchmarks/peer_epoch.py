"""Time upstream YOLOv5 v7.0's training epoch, the peer side of benchmarks/gpu_side_by_side.sh.

    cd .peer/yolov5 && PYTHONPATH=../shim python ../../benchmarks/peer_epoch.py --data D.yaml --cfg models/yolov5s.yaml

Runs from the upstream tree (its `models` and `utils` packages clash with ours, so nothing of this repository is
imported) and drives upstream's own modules the way its train.py / segment/train.py do on the given device:
init_seeds(deterministic=True), its Model / SegmentationModel, smart_optimizer, ModelEMA, create_dataloader with
mosaic augmentation, ComputeLoss inside autocast, GradScaler, accumulation up to the nominal batch 64, gradient
clipping at 10 and the progress bar's per-batch loss read. Two differences, the same on our side: the warm-up ramp
is skipped (steady-state accumulation from the first batch) and AMP is on for CUDA without check_amp (which needs
yolov5n.pt from the internet). Epoch 0 warms up (workers, cuDNN, allocator); epoch 1 is timed, with its peak
torch.cuda.max_memory_allocated. Prints one `RESULT {json}` line.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.getcwd())  # the upstream root: run from it

import torch  # noqa: E402
import yaml  # noqa: E402
from tqdm import tqdm  # noqa: E402
from utils.general import TQDM_BAR_FORMAT, check_dataset, init_seeds, labels_to_class_weights  # noqa: E402
from utils.torch_utils import ModelEMA, select_device, smart_optimizer  # noqa: E402

NBS = 64  # upstream's nominal batch size


def sync(device: torch.device) -> float:
    """Wall time after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.time()


def build(opt: argparse.Namespace, device: torch.device):
    """Model, optimizer, EMA, loader, loss and scaler as upstream's train script sets them up."""
    data = check_dataset(opt.data)
    nc = int(data["nc"])
    hyp = yaml.safe_load(open(opt.hyp, errors="ignore"))
    if opt.seg:
        from utils.segment.dataloaders import create_dataloader
        from utils.segment.loss import ComputeLoss

        from models.yolo import SegmentationModel as Net
        extra = dict(mask_downsample_ratio=4, overlap_mask=True)
    else:
        from utils.dataloaders import create_dataloader
        from utils.loss import ComputeLoss

        from models.yolo import Model as Net
        extra = {}
    model = Net(opt.cfg, ch=3, nc=nc, anchors=hyp.get("anchors")).to(device)
    gs = max(int(model.stride.max()), 32)
    accumulate = max(round(NBS / opt.batch), 1)
    hyp["weight_decay"] *= opt.batch * accumulate / NBS
    optimizer = smart_optimizer(model, "SGD", hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    ema = ModelEMA(model)
    loader, dataset = create_dataloader(data["train"], opt.img, opt.batch, gs, False, hyp=hyp, augment=True,
                                        cache=None, rect=False, rank=-1, workers=opt.workers, image_weights=False,
                                        quad=False, prefix="train: ", shuffle=True, **extra)
    nl = model.model[-1].nl
    hyp["box"] *= 3 / nl
    hyp["cls"] *= nc / 80 * 3 / nl
    hyp["obj"] *= (opt.img / 640) ** 2 * 3 / nl
    hyp["label_smoothing"] = 0.0
    model.nc, model.hyp, model.names = nc, hyp, data["names"]
    model.class_weights = labels_to_class_weights(dataset.labels, nc).to(device) * nc
    amp = device.type == "cuda"
    scaler = torch.cuda.amp.GradScaler(enabled=amp)
    loss_fn = ComputeLoss(model, overlap=True) if opt.seg else ComputeLoss(model)
    return model, optimizer, ema, loader, loss_fn, scaler, amp, accumulate


def run_epoch(epoch: int, parts, device: torch.device, state: dict, seg: bool) -> tuple[int, float]:
    """One pass over the loader as upstream's epoch loop runs it; returns (batches, seconds waiting for data)."""
    model, optimizer, ema, loader, loss_fn, scaler, amp, accumulate = parts
    nb = len(loader)
    model.train()
    mloss = torch.zeros(4 if seg else 3, device=device)
    pbar = tqdm(enumerate(loader), total=nb, bar_format=TQDM_BAR_FORMAT)
    optimizer.zero_grad()
    data_s, t_data = 0.0, time.time()
    for i, batch in pbar:
        imgs, targets = batch[0], batch[1]
        ni = i + nb * epoch
        imgs = imgs.to(device, non_blocking=True).float() / 255
        data_s += time.time() - t_data
        with torch.cuda.amp.autocast(amp):
            pred = model(imgs)
            if seg:
                loss, items = loss_fn(pred, targets.to(device), masks=batch[4].to(device).float())
            else:
                loss, items = loss_fn(pred, targets.to(device))
        scaler.scale(loss).backward()
        if ni - state["last_opt_step"] >= accumulate:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            ema.update(model)
            state["last_opt_step"] = ni
        mloss = (mloss * i + items) / (i + 1)
        mem = f"{torch.cuda.memory_reserved() / 1E9 if torch.cuda.is_available() else 0:.3g}G"
        pbar.set_description(("%11s" * 2 + "%11.4g" * (len(mloss) + 2)) %
                             (f"{epoch}/1", mem, *mloss, targets.shape[0], imgs.shape[-1]))  # reads the device
        t_data = time.time()
    return nb, data_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--cfg", default="models/yolov5s.yaml")
    p.add_argument("--hyp", default="data/hyps/hyp.scratch-low.yaml")
    p.add_argument("--img", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--device", default="")
    p.add_argument("--seg", action="store_true", help="segment/train.py's model, loader (overlap masks) and loss")
    p.add_argument("--case", default="", help="a label copied into the RESULT line")
    opt = p.parse_args()

    device = select_device(opt.device, batch_size=opt.batch)
    init_seeds(0, deterministic=True)  # train.py: opt.seed + 1 + RANK = 0 + 1 - 1
    parts = build(opt, device)
    state = {"last_opt_step": -1}
    run_epoch(0, parts, device, state, opt.seg)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = sync(device)
    nb, data_s = run_epoch(1, parts, device, state, opt.seg)
    epoch_s = sync(device) - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    print("RESULT " + json.dumps({"side": "upstream", "case": opt.case, "epoch_s": epoch_s, "batches": nb,
                                  "images": len(parts[3].dataset), "batch": opt.batch, "data_s": data_s,
                                  "peak_mem": peak, "amp": bool(parts[6]), "accumulate": parts[7],
                                  "device": str(device)}), flush=True)


if __name__ == "__main__":
    main()
