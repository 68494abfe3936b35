"""The training engine shared by every task: one loop, read top to bottom in `fit`.

The Trainer owns what is common (device, AMP, accumulation, warmup, EMA, DDP, checkpoints, resume, logging,
early stopping); the Task answers what differs (model, data, loss, metric). It never branches on the task type.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

from utils import dist
from utils.checkpoint import (
    intersect_state_dict,
    load_checkpoint,
    make_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    strip_optimizer,
)
from utils.data.loader import LoaderOptions
from utils.device import autocast_dtype, keep_freed_memory, select_device
from utils.downloads import attempt_download
from utils.ema import EMA_DECAY, EMA_TAU, ModelEMA
from utils.engine.config import TrainConfig
from utils.engine.evaluator import TQDM_BAR, Evaluator
from utils.engine.phases import PhaseClock, format_epoch
from utils.engine.recipe import Recipe, choose_recipe, float_outputs, recipe_by_name
from utils.engine.results import ResultsLog
from utils.engine.resume import find_resume_checkpoint, resume_options
from utils.engine.task import Task, TrainContext
from utils.errors import ConfigError
from utils.log import LOGGER, colorstr
from utils.loggers import Loggers
from utils.optim import clip_gradients, lr_lambda, nominal_accumulate, scale_weight_decay, smart_optimizer, warmup
from utils.paths import find_file, increment_path

DEFAULT_HYP = "data/hyps/hyp.scratch-low.yaml"
NBS = 64  # nominal batch size (hyp key `nbs` overrides): gradients accumulate up to it, whatever --batch-size is


class NonFiniteLoss(RuntimeError):
    """Raised when the training loss turns NaN or infinite."""


class EarlyStopping:
    """Stop when fitness has not improved for `patience` epochs."""

    def __init__(self, patience: int = 30):
        self.best_fitness, self.best_epoch = 0.0, 0
        self.patience = patience or float("inf")
        self.possible_stop = False

    def __call__(self, epoch: int, fitness: float) -> bool:
        if fitness >= self.best_fitness:  # >= so a plateau at zero early in training is not a stop
            self.best_epoch, self.best_fitness = epoch, fitness
        delta = epoch - self.best_epoch
        self.possible_stop = delta >= (self.patience - 1)
        stop = delta >= self.patience
        if stop:
            LOGGER.info(f"Stopping training early: no improvement in the last {self.patience} epochs "
                        f"(best epoch {self.best_epoch}). Set --patience 0 to disable.")
        return stop


def init_seeds(seed: int = 0, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; `deterministic` also asks torch for repeatable kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def hyp_path(given: str, data: dict) -> str:
    """--hyp when given, else the data YAML's recommended `hyp`, else YOLOv5's scratch-low file."""
    return given or data.get("hyp") or DEFAULT_HYP


def check_img_size(imgsz: int, stride: int, floor: int = 0) -> int:
    """Round the image size up to a multiple of the model stride, warning when it changes."""
    new = max(math.ceil(imgsz / stride) * stride, floor)
    if new != imgsz:
        LOGGER.warning(f"WARNING ⚠️ --img-size {imgsz} must be a multiple of max stride {stride}, updating to {new}")
    return new


class Trainer:
    """Trains one model for one task as `cfg` says; `fit()` returns the final figures."""

    def __init__(self, cfg: TrainConfig, task: Task, hyp: dict | None = None, sync_phases: bool = False):
        self.cfg, self.task, self.hyp_given = cfg.check(), task, hyp
        self.sync_phases = sync_phases  # synchronise CUDA around each timed phase (benchmarks/epoch_profile.py)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.main = dist.is_main()
        self.loggers = Loggers()  # none until setup starts rank 0's

    # ------------------------------------------------------------------------------------------ set-up
    def setup(self) -> None:
        """Run folder, data, hyperparameters, model, optimizer, loaders and evaluator, in that order."""
        ckpt = self._resume_checkpoint()
        cfg = self.cfg
        self.device = select_device(cfg.device, batch_size=cfg.batch_size)
        self.clock = PhaseClock(self.device, sync=self.sync_phases)
        dist.init(self.device)
        self._run_folder()
        init_seeds(cfg.seed + 1 + max(self.rank, -1), deterministic=True)
        # cuDNN autotuning picks the fastest convolution kernels once per input shape: a win when shapes are fixed,
        # repeated tuning when --multi-scale changes them every batch
        torch.backends.cudnn.benchmark = self.device.type == "cuda" and not cfg.multi_scale
        keep_freed_memory(self.device)  # CPU activations over 32 MB would come back as fresh pages each step
        with dist.main_first():
            self.data = self.task.check_data(cfg.data)
        hyp = self._hyperparameters(ckpt)
        self.nc = 1 if cfg.single_cls else int(self.data["nc"])
        names = self.data["names"]
        self.names = {0: "item"} if cfg.single_cls and len(names) != 1 else names

        model = self._build_model(ckpt, hyp)
        self._freeze(model)
        self._batching(model, hyp)
        self.recipe = self._recipe(model)
        model.to(memory_format=self.recipe.memory_format)  # before the EMA copies it: its foreach update wants alike
        self._optimization(model, hyp, ckpt)  # restores optimizer, EMA and RNG state when resuming
        opts = dataclasses.replace(LoaderOptions.from_config(cfg, self.data), imgsz=self.imgsz)  # rounded size
        self.train_loader, self.dataset = self.task.build_dataloader(
            self.data["train"], opts, hyp, self.batch, self.max_stride, mode="train", rank=self.rank, nc=self.nc)
        self.batches_per_epoch = len(self.train_loader)
        self.val_loader = None
        if self.main:
            self.val_loader, _ = self.task.build_dataloader(self.data["val"], opts, hyp, self.batch * 2,
                                                            self.max_stride, mode="val", rank=-1, nc=self.nc)
        self.model, self.hyp = model, hyp
        self.ctx = TrainContext(cfg=cfg, model=model, dataset=self.dataset, names=self.names, nc=self.nc, hyp=hyp,
                                imgsz=self.imgsz, save_dir=self.save_dir, main=self.main)
        if not cfg.resume:
            self.task.on_train_start(self.ctx)  # AutoAnchor and label plots (rank 0), before the EMA copies anchors
            if self.ema is not None:
                self.ema = ModelEMA(model, self.ema_decay, self.ema_tau)
        self.hyp = self.task.scale_hyp(hyp, model, self.nc, self.imgsz)
        model.hyp, model.nc, model.names = self.hyp, self.nc, self.names
        self.criterion = self.task.criterion(model, self.hyp)
        self.train_model = self._wrap(model)
        self.evaluator = Evaluator(self.task, self.val_loader, self.names, self.save_dir, plots=False,
                                   training=True, half=self.amp_dtype is not None, cpu_amp_dtype=self.amp_dtype,
                                   post_kw=self.task.val_post_kw(self.data, training=True),
                                   metric_kw={"single_cls": cfg.single_cls}) if self.main else None
        cols = [f"train/{n}" for n in self.task.loss_names] + list(self.task.metric_names) + \
               [f"val/{n}" for n in self.task.loss_names] + ["x/lr0", "x/lr1", "x/lr2"]
        self.results_log = ResultsLog(self.save_dir / "results.csv", cols) if self.main else None
        if self.main:
            self.loggers = Loggers.create(cfg, self.save_dir)
            self.loggers.on_train_start(cfg.to_dict(), self.hyp_unscaled, self.data)

    def _resume_checkpoint(self) -> dict | None:
        """With --resume: load last.pt and continue with the options it was trained with (where to run may change)."""
        cfg = self.cfg
        if not cfg.resume:
            return None
        last = find_resume_checkpoint(cfg.resume, cfg.project)
        ckpt = load_checkpoint(last)
        self.cfg = resume_options(cfg, ckpt, last)
        self.save_dir = Path(last).parent.parent
        LOGGER.info(f"Resuming training from {last} (epoch {ckpt['epoch'] + 1})")
        return ckpt

    def _run_folder(self) -> None:
        """A new runs/train/expN chosen by rank 0 and shared with the others (a resumed run keeps its own)."""
        cfg = self.cfg
        if not cfg.resume:
            save_dir = increment_path(Path(cfg.project) / cfg.name, exist_ok=cfg.exist_ok) if self.main else None
            self.save_dir = Path(dist.broadcast_object(str(save_dir) if save_dir else None))
        self.wdir = self.save_dir / "weights"
        self.last, self.best = self.wdir / "last.pt", self.wdir / "best.pt"
        if self.main:
            self.wdir.mkdir(parents=True, exist_ok=True)

    def _hyperparameters(self, ckpt: dict | None) -> dict:
        """Given hyp, else the resumed run's, else --hyp / the data YAML's `hyp:` / scratch-low; saved with opt."""
        cfg = self.cfg
        hyp = self.hyp_given if self.hyp_given is not None else (ckpt or {}).get("hyp")
        if hyp is None:
            cfg.hyp = hyp_path(cfg.hyp, self.data)
            hyp = yaml.safe_load(find_file(cfg.hyp).read_text())
        # keys the task adds (the semantic gains) show in the log line and hyp.yaml even when the file lacks them
        hyp = {**self.task.hyp_defaults(), **hyp, "label_smoothing": cfg.label_smoothing}
        if not cfg.optimizer:  # the optimizer the hyp values are for (hyp.shapes-adamw.yaml: AdamW), else SGD
            cfg.optimizer = str(hyp.get("optimizer") or "SGD")
        if cfg.close_mosaic < 0:  # the hyp file's close_mosaic when it has one, else never
            cfg.close_mosaic = int(hyp.get("close_mosaic", 0) or 0)
        self.hyp_unscaled = dict(hyp)  # as given, before train-time scaling: what resume starts from
        if self.main:
            LOGGER.info(colorstr("hyperparameters: ") + ", ".join(f"{k}={v}" for k, v in hyp.items()))
            (self.save_dir / "hyp.yaml").write_text(yaml.safe_dump(hyp, sort_keys=False))
            (self.save_dir / "opt.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return hyp

    def _batching(self, model: nn.Module, hyp: dict) -> None:
        """Image size, batch per process (AutoBatch for -1) and accumulation up to the nominal batch."""
        cfg = self.cfg
        self.max_stride = max(int(model.stride.max()), 32) if hasattr(model, "stride") else 32
        self.imgsz = check_img_size(cfg.imgsz, self.max_stride, floor=self.max_stride * 2)
        if cfg.batch_size == -1:
            from utils.autobatch import autobatch

            # rank 0 measures one GPU; every rank trains that batch, so the global batch is that times the world
            b = autobatch(model, self.imgsz, self.device, self.task) if self.main else None
            cfg.batch_size = int(dist.broadcast_object(b)) * self.world
        self.batch = cfg.batch_size // self.world
        self.nbs = int(hyp.get("nbs", NBS) or cfg.batch_size)  # nbs 0: no accumulation (upstream classifiers)
        self.accumulate = nominal_accumulate(cfg.batch_size, self.nbs)
        # decay per nominal batch, not per optimizer step
        hyp["weight_decay"] = scale_weight_decay(hyp["weight_decay"], cfg.batch_size, self.accumulate, self.nbs)

    def _optimization(self, model: nn.Module, hyp: dict, ckpt: dict | None) -> None:
        """Optimizer, LR schedule, EMA and AMP scaler; a resumed run restores their states."""
        cfg = self.cfg
        self.optimizer = smart_optimizer(model, cfg.optimizer, hyp["lr0"], hyp["momentum"], hyp["weight_decay"],
                                         lr_mult=self.task.lr_mults(hyp))
        self.lr_factor = lr_lambda(hyp["lrf"], cfg.epochs, cos=cfg.cos_lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lr_factor)
        # hyp keys ema_decay and ema_tau: the EMA's largest decay and the optimizer steps its ramp takes (upstream's
        # fixed 0.9999 and 2000 average over the last ~10,000 steps, which a run of a thousand never reaches)
        self.ema_decay, self.ema_tau = float(hyp.get("ema_decay", EMA_DECAY)), float(hyp.get("ema_tau", EMA_TAU))
        self.ema = ModelEMA(model, self.ema_decay, self.ema_tau) if self.main else None
        self.amp_dtype = self.recipe.amp_dtype
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.start_epoch, self.best_fitness = 0, 0.0
        if ckpt is not None and cfg.resume:
            self._restore(ckpt)

    def _recipe(self, model: nn.Module) -> Recipe:
        """Layout and autocast dtype of the steps: fixed on GPUs, measured on CPUs by rank 0 and shared."""
        name = None
        if self.main:
            name = choose_recipe(model, self.imgsz, self.batch, self.device, autocast_dtype(self.device)).name
        return recipe_by_name(dist.broadcast_object(name))

    def _build_model(self, ckpt: dict | None, hyp: dict) -> nn.Module:
        cfg = self.cfg
        if cfg.resume:
            model = self.task.build_model(ckpt["model_yaml"], self.nc, hyp).to(self.device)
            model.load_state_dict({k: v.float() for k, v in ckpt["model"].items()})
            return model
        if cfg.weights:
            wckpt = load_checkpoint(attempt_download(cfg.weights))
            model = self.task.build_model(cfg.cfg or wckpt["model_yaml"], self.nc, hyp).to(self.device)
            exclude = ["anchor"] if (cfg.cfg or hyp.get("anchors")) else []
            src = wckpt["model"]  # the raw weights, as upstream fine-tunes from (not the EMA)
            csd = intersect_state_dict({k: v.float() for k, v in src.items()}, model.state_dict(), exclude=exclude)
            model.load_state_dict(csd, strict=False)
            LOGGER.info(f"Transferred {len(csd)}/{len(model.state_dict())} items from {cfg.weights}")
            return model
        if not cfg.cfg:
            raise ConfigError("train: give --cfg (a model YAML) or --weights (a checkpoint)")
        return self.task.build_model(cfg.cfg, self.nc, hyp).to(self.device)

    def _freeze(self, model: nn.Module) -> None:
        f = self.cfg.freeze
        layers = [f"model.{x}." for x in (f if len(f) > 1 else range(f[0]))]
        for k, v in model.named_parameters():
            v.requires_grad = True
            if any(x in k for x in layers):
                v.requires_grad = False
        if layers:
            LOGGER.info(f"freezing {len(layers)} layers")

    def _restore(self, ckpt: dict) -> None:
        if ckpt.get("optimizer") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.ema.load_state_dict({k: v.float() for k, v in ckpt["ema"].items()})
            self.ema.updates = int(ckpt.get("updates", 0))
        self.best_fitness = float(ckpt.get("best_fitness") or 0.0)
        self.start_epoch = int(ckpt["epoch"]) + 1
        if self.start_epoch >= self.cfg.epochs:
            raise ConfigError(f"{self.cfg.resume}: training to {self.cfg.epochs} epochs is finished, nothing to resume")
        self.scheduler.last_epoch = self.start_epoch - 1
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if ckpt.get("train_state"):
            set_rng_state(ckpt["train_state"])

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.world > 1:
            if self.cfg.sync_bn:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                LOGGER.info("Using SyncBatchNorm()")
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids, output_device=ids and ids[0])
        self.eager_model = model
        if self.cfg.compile:
            try:
                model = torch.compile(model)
            except Exception as e:  # noqa: BLE001 - any compiler failure means: train eagerly
                LOGGER.warning(f"WARNING ⚠️ torch.compile failed ({e}); training in eager mode")
        return model

    def _forward(self, img: torch.Tensor):
        """Training forward; a compiled model that fails to compile (lazily, on first use) falls back to eager."""
        try:
            return self.train_model(img)
        except Exception as e:  # noqa: BLE001 - compiler errors come in many types; eager re-raises real bugs
            if self.train_model is self.eager_model:
                raise
            LOGGER.warning(f"WARNING ⚠️ torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                           f"training in eager mode")
            self.train_model = self.eager_model
            return self.train_model(img)

    # ------------------------------------------------------------------------------------------ loop
    def fit(self) -> dict:
        """Set up, train all epochs, validate best.pt; returns the final figures."""
        try:
            self.setup()
            self._loop()
            return self._finish()
        finally:
            self.loggers.close()
            dist.cleanup()

    def _loop(self) -> None:
        """Epochs: train, then (rank 0) validate, log and checkpoint, until done, stopped early or out of time."""
        cfg = self.cfg
        # warmup iterations; warmup_epochs 0 means none (upstream classifiers), not upstream detection's 100 minimum
        warmup_epochs = self.hyp["warmup_epochs"]
        self.warmup_iters = max(round(warmup_epochs * self.batches_per_epoch), 100) if warmup_epochs > 0 else -1
        self.last_opt_step = -1
        stopper, stop = EarlyStopping(cfg.patience), False
        self.final_figures = {}
        t_start = time.time()
        LOGGER.info(f"Image sizes {self.imgsz} train, {self.imgsz} val\nUsing {self.train_loader.num_workers} "
                    f"dataloader workers\nLogging results to {colorstr('bold', str(self.save_dir))}\n"
                    f"Starting training for {cfg.epochs} epochs...")
        for epoch in range(self.start_epoch, cfg.epochs):
            self.clock.start_epoch()
            mean_losses = self._train_epoch(epoch)
            lr = [g["lr"] for g in self.optimizer.param_groups[:3]]  # x/lr0..2; groups past them repeat with a mult
            self.scheduler.step()
            timed_out = cfg.max_train_seconds and time.time() - t_start > cfg.max_train_seconds
            if self.main:
                final = epoch + 1 == cfg.epochs or stopper.possible_stop or bool(timed_out)
                stop = self._end_epoch(epoch, mean_losses, lr, stopper, final)
            self.clock.end_epoch()
            if timed_out:
                LOGGER.info(f"Stopping after epoch {epoch}: --max-train-seconds {cfg.max_train_seconds} reached")
                stop = True
            if dist.broadcast_object(stop):
                break
        self.epochs_done = epoch + 1 - self.start_epoch if cfg.epochs > self.start_epoch else 0
        self.train_hours = (time.time() - t_start) / 3600

    def _train_epoch(self, epoch: int) -> torch.Tensor:
        """One pass over the training data; returns the mean loss items, kept on the device."""
        cfg, dev = self.cfg, self.device
        self.train_model.train()
        self.task.on_epoch_start(self.ctx, epoch)
        if hasattr(self.train_loader.sampler, "set_epoch"):
            self.train_loader.sampler.set_epoch(epoch)
        if getattr(self.train_loader, "generator", None) is not None:
            # Shuffle order as a function of (seed, epoch), so a resumed run sees the epochs it would have seen.
            self.train_loader.generator.manual_seed(cfg.seed * 100003 + epoch)
        mean_losses = torch.zeros(len(self.task.loss_names), device=dev)
        first_bad = torch.full((), -1, device=dev, dtype=torch.long)
        LOGGER.info(("\n" + "%11s" * (4 + len(self.task.loss_names))) %
                    ("Epoch", "GPU_mem", *self.task.loss_names, "Instances", "Size"))
        pbar = tqdm(self.train_loader, bar_format=TQDM_BAR, disable=not self.main)
        self.optimizer.zero_grad(set_to_none=True)
        t_log, clock = 0.0, self.clock
        t_data = clock.now()
        for i, raw in enumerate(pbar):
            iteration = i + self.batches_per_epoch * epoch
            batch = self.task.preprocess(raw, dev)
            clock.add("data", clock.now() - t_data)  # waiting for the loader, and the batch's trip to the device
            loss, items = self._step(batch, iteration, epoch)
            # Device-side bookkeeping only: reading these values every batch would stall the GPU.
            mean_losses.mul_(i / (i + 1)).add_(items.detach().float() / (i + 1))
            bad = ~torch.isfinite(loss.detach()).all()
            first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, i), first_bad)
            if i == self.batches_per_epoch - 1 or time.time() - t_log > 0.5:  # read the device at most twice a second
                t_log = time.time()
                if int(first_bad) >= 0:
                    raise NonFiniteLoss(f"loss became NaN or infinite at epoch {epoch}, batch {int(first_bad)}; "
                                        f"kept the last good checkpoint {self.last}. Try a lower --hyp lr0 "
                                        f"or check the labels of that batch.")
                if self.main:
                    mem = f"{torch.cuda.memory_reserved() / 1e9 if torch.cuda.is_available() else 0:.3g}G"
                    pbar.set_description(("%11s" * 2 + "%11.4g" * (2 + len(mean_losses))) % (
                        f"{epoch}/{cfg.epochs - 1}", mem, *mean_losses.tolist(), self.task.instances(batch),
                        batch["img"].shape[-1]))
            if self.main and not cfg.noplots and iteration < 3:
                with clock("plots"):
                    self.task.plot_train_batch(batch, self.save_dir / f"train_batch{iteration}.jpg", names=self.names)
            t_data = clock.now()
        return mean_losses

    def _step(self, batch: dict, iteration: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward of one batch; the optimizer steps once `accumulate` batches are in."""
        cfg = self.cfg
        if iteration <= self.warmup_iters:
            self.accumulate = warmup(self.optimizer, iteration, self.warmup_iters, epoch, self.lr_factor, self.hyp,
                                     self.nbs, cfg.batch_size)
        if cfg.multi_scale:
            batch["img"] = self._random_resize(batch["img"])
        batch["img"] = batch["img"].contiguous(memory_format=self.recipe.memory_format)
        clock = self.clock
        with clock("forward"), self.recipe.autocast(self.device.type):
            preds = self._forward(batch["img"])
        with clock("loss"):
            loss, items = self.criterion(float_outputs(preds), batch)  # in fp32 whatever the forward ran in
        if getattr(self.train_loader, "quad", False):  # the loader decides: --quad is refused where masks can't tile
            loss = loss * 4.0
        step_now = iteration - self.last_opt_step >= self.accumulate
        # accumulation steps skip DDP's gradient all-reduce; the step that updates weights syncs
        sync_ctx = self.train_model.no_sync() if (self.world > 1 and not step_now) else contextlib.nullcontext()
        with sync_ctx, clock("backward"):
            self.scaler.scale(loss).backward()
        if step_now:
            with clock("optimizer"):
                self.scaler.unscale_(self.optimizer)
                clip_gradients(self.model, 10.0)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                with clock("ema"):
                    self.ema.update(self.model)
            self.last_opt_step = iteration
        return loss, items

    def _end_epoch(self, epoch: int, mean_losses: torch.Tensor, lr: list[float], stopper: EarlyStopping,
                   final: bool) -> bool:
        """Rank 0: validate the EMA, log results.csv, keep best.pt and last.pt; True when early stopping says so."""
        cfg = self.cfg
        self.ema.update_attr(self.model, include=["yaml", "nc", "hyp", "names", "stride"])
        figures, vloss = {}, np.zeros(len(self.task.loss_names))
        if not cfg.noval or final:
            with self.clock("validation"), self.loggers.val_images(self.evaluator, epoch):  # --bbox-interval
                res = self.evaluator(self.ema.ema, self.criterion)
            figures, vloss = res.figures, res.losses if res.losses is not None else vloss
            self.ctx.maps = res.metric.maps
        fitness = self.task.fitness(figures) if figures else 0.0
        stop = stopper(epoch, fitness)
        if fitness >= self.best_fitness:
            self.best_fitness = fitness
        self.final_figures = figures
        with self.clock("logging"):
            row = self.results_log.append(epoch, [*mean_losses.tolist(), *[figures.get(n, 0.0) for n in
                                                                     self.task.metric_names], *vloss.tolist(), *lr])
            self.loggers.on_epoch_end(epoch, row)
        if not cfg.nosave or final:
            with self.clock("checkpoint"):
                self._save(epoch, fitness)
        return stop

    def _random_resize(self, img: torch.Tensor) -> torch.Tensor:
        step = self.max_stride
        size = random.randrange(int(self.imgsz * 0.5), int(self.imgsz * 1.5) + step) // step * step
        scale = size / max(img.shape[2:])
        if scale == 1:
            return img
        new_shape = [math.ceil(x * scale / step) * step for x in img.shape[2:]]
        return nn.functional.interpolate(img, size=new_shape, mode="bilinear", align_corners=False)

    def _checkpoint(self, epoch: int) -> dict:
        m = dist.unwrap(self.model)
        ck = make_checkpoint(m, self.ema.ema, self.ema.updates, self.optimizer, epoch, self.best_fitness,
                             self.cfg.to_dict(), train_state=rng_state(), half=False)
        ck.update(task=self.task.name, scaler=self.scaler.state_dict(), hyp=self.hyp_unscaled)
        return ck

    def _save(self, epoch: int, fitness: float) -> None:
        copies = [self.best] if self.best_fitness == fitness else []
        if self.cfg.save_period > 0 and epoch % self.cfg.save_period == 0:
            copies.append(self.wdir / f"epoch{epoch}.pt")
        save_checkpoint(self._checkpoint(epoch), self.last, *copies)  # serialised once (0.1 s for yolov5n)

    def _finish(self) -> dict:
        if not self.main:
            return {}
        LOGGER.info(f"\n{self.epochs_done} epochs completed in {self.train_hours:.3f} hours.")
        if self.clock.epochs and (self.device.type == "cpu" or self.clock.sync):  # unsynchronised GPU phases mislead
            LOGGER.info(f"Last epoch {format_epoch(self.clock.epochs[-1])}")
        for f in (self.last, self.best):
            if f.exists():
                strip_optimizer(f)
        figures = self.final_figures
        if self.best.exists():
            from utils.checkpoint import load_model

            LOGGER.info(f"\nValidating {self.best}...")
            model = load_model(self.best, device=self.device, fuse=True)
            ev = Evaluator(self.task, self.val_loader, self.names, self.save_dir, plots=not self.cfg.noplots,
                           verbose=True, post_kw=self.task.val_post_kw(self.data, training=False),
                           metric_kw={"single_cls": self.cfg.single_cls})
            figures = ev(model, self.criterion).figures
        if not self.cfg.noplots:
            self.results_log.plot()
        self.loggers.on_fit_end(self.save_dir, self.best, figures)
        LOGGER.info(f"Results saved to {colorstr('bold', str(self.save_dir))}")
        return figures
