"""How training steps run on this machine: memory layout and autocast dtype, chosen by measurement on CPUs.

On a GPU the recipe is fixed (channels_last, bf16 AMP from Ampere on, else fp16 with a GradScaler). CPUs differ too
much for a fixed one: channels_last was 1.9x faster than contiguous tensors on one AVX-512 Xeon and 0.91x on an AVX2
EPYC; bf16 autocast doubles the speed of a CPU with native bf16 instructions (AVX512-BF16, AMX) and is slow
emulation elsewhere. So, as cuDNN's benchmark mode does for kernels, the trainer times a few real training steps of
a copy of the model at the real image size and batch for each candidate (more rounds when the leaders are close),
keeps the fastest unless it beats contiguous fp32 by less than PICK_MARGIN, and says so in one line.
The choice is cached per machine, PyTorch version, thread count, model, image size and batch, so only the first run
pays the probe (a few seconds for the default job). `MTYOLO_CPU_RECIPE` forces one recipe by name.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from utils.device import cpu_name
from utils.log import LOGGER
from utils.paths import CACHE_ENV, user_cache_dir  # noqa: F401 (CACHE_ENV: tests set it)

RECIPE_ENV = "MTYOLO_CPU_RECIPE"
# A recipe other than contiguous fp32 is picked only when it beats it by this share. The 2-core AVX2 EPYC's speed
# drifts 20-30% within the hour, and channels_last there won the forward and lost the backward of yolov5s at 640 by
# amounts that flipped from run to run: within such a margin the baseline is the choice that can't be slower.
PICK_MARGIN = 0.05
CLOSE_CALL = 0.10  # leaders closer than this get more rounds...
MAX_ROUNDS = 6  # ...up to this many...
EXTRA_ROUNDS_BUDGET_S = 20.0  # ...while the probe has run less than this long
# Part of the cache key: choices made under an older rule (v1: the fastest, however close) or on older kernels (v2:
# before the fused BatchNorm+SiLU, v3: when it served only the channels_last candidates) are redone.
PROBE_VERSION = 4


@dataclass(frozen=True)
class Recipe:
    """The layout of weights and images and the autocast dtype (None = fp32) of a training step."""

    channels_last: bool
    amp_dtype: torch.dtype | None

    @property
    def name(self) -> str:
        dtype = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        return f"{'channels_last' if self.channels_last else 'contiguous'}-{dtype}"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self, device_type: str) -> Any:
        """The autocast context of this recipe on `device_type`."""
        return torch.autocast(device_type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)


FP32_CONTIGUOUS = Recipe(False, None)  # upstream's CPU recipe, and the baseline every benchmark compares with


def cpu_candidates() -> list[Recipe]:
    """The recipes worth timing on this CPU: both layouts in fp32, and in bf16 where oneDNN has bf16 kernels."""
    out = [FP32_CONTIGUOUS, Recipe(True, None)]
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        out += [Recipe(False, torch.bfloat16), Recipe(True, torch.bfloat16)]
    return out


def recipe_by_name(name: str) -> Recipe:
    """Recipe from its name (contiguous-fp32, channels_last-fp32, contiguous-bf16, channels_last-bf16, ...)."""
    known = {r.name: r for r in [*cpu_candidates(), Recipe(False, torch.bfloat16), Recipe(True, torch.bfloat16),
                                 Recipe(True, torch.float16)]}
    if name not in known:
        raise ValueError(f"{RECIPE_ENV}={name!r} is not a recipe; use auto or one of {', '.join(sorted(known))}")
    return known[name]


def _leaves(out: Any) -> list[torch.Tensor]:
    """Every floating tensor in a model output (a tensor, or nested tuples/lists/dicts of them)."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _leaves(o)]
    return []


def float_outputs(out: Any) -> Any:
    """A model output with every reduced-precision floating tensor cast to fp32 (the loss runs in fp32)."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() and out.dtype != torch.float32 else out
    if isinstance(out, (list, tuple)):
        return type(out)(float_outputs(o) for o in out)
    if isinstance(out, dict):
        return {k: float_outputs(v) for k, v in out.items()}
    return out


def probe_step(model: torch.nn.Module, recipe: Recipe, images: torch.Tensor) -> None:
    """One forward and backward in `recipe`, with the mean of every output as a stand-in loss."""
    x = images.contiguous(memory_format=recipe.memory_format)
    with recipe.autocast(x.device.type):
        out = model(x)
    loss = sum(t.float().mean() for t in _leaves(out))
    loss.backward()
    model.zero_grad(set_to_none=True)


def _close_call(best: dict[Recipe, float]) -> bool:
    """Whether the two fastest candidates are within CLOSE_CALL of each other."""
    first, second = sorted(best.values())[:2]
    return second < first * (1 + CLOSE_CALL)


def time_recipes(model: torch.nn.Module, imgsz: int, batch: int, candidates: list[Recipe], rounds: int = 2,
                 step: Callable[[torch.nn.Module, Recipe, torch.Tensor], None] = probe_step,
                 max_rounds: int = MAX_ROUNDS, budget_s: float = EXTRA_ROUNDS_BUDGET_S) -> dict[Recipe, float]:
    """Seconds per training step of each recipe: the best of `rounds` interleaved steps after one warm-up each, and
    of more rounds (up to max_rounds, while the probe is under budget_s) while the two fastest are a close call.

    Interleaving spreads a busy moment of a shared machine over every candidate instead of one, and the best of a
    few steps is the machine's speed with the least of that noise in it.
    """
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    images = torch.rand(batch, 3, imgsz, imgsz, device=device)
    copies = {r: copy.deepcopy(model).train().to(memory_format=r.memory_format) for r in candidates}
    for r, m in copies.items():
        step(m, r, images)
    best = {r: float("inf") for r in candidates}
    done = 0
    while done < rounds or (len(best) > 1 and done < max_rounds and _close_call(best)
                            and time.perf_counter() - t0 < budget_s):
        done += 1
        for r, m in copies.items():
            t = time.perf_counter()
            step(m, r, images)
            best[r] = min(best[r], time.perf_counter() - t)
    return best


def cache_file() -> Path:
    """Where measured recipes are kept ($MTYOLO_CACHE_DIR, else ~/.cache/mt-yolov5)."""
    return user_cache_dir() / "cpu_recipes.json"


def cache_key(model: torch.nn.Module, imgsz: int, batch: int) -> str:
    """Machine, PyTorch, threads, model architecture, image size and batch: what the fastest recipe depends on."""
    arch = json.dumps(getattr(model, "yaml", None) or str(model), sort_keys=True, default=str)
    digest = hashlib.sha1(arch.encode()).hexdigest()[:12]
    return f"{cpu_name()}|{torch.backends.cpu.get_cpu_capability()}|torch {torch.__version__}|" \
           f"{torch.get_num_threads()} threads|{digest}|{imgsz}|{batch}|probe v{PROBE_VERSION}"


def _read_cache(f: Path) -> dict:
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(f: Path, entries: dict) -> None:
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
        tmp.replace(f)
    except OSError as e:  # a read-only home only costs the next run another probe
        LOGGER.warning(f"WARNING ⚠️ could not cache the CPU recipe in {f}: {e}")


def pick_recipe(times: dict[Recipe, float]) -> tuple[Recipe, str]:
    """The fastest recipe if it beats contiguous fp32 by PICK_MARGIN, else contiguous fp32; and which it is."""
    fastest = min(times, key=times.get)
    base = times.get(FP32_CONTIGUOUS)
    if fastest == FP32_CONTIGUOUS or base is None or times[fastest] * (1 + PICK_MARGIN) <= base:
        return fastest, "the fastest"
    return FP32_CONTIGUOUS, f"the baseline ({fastest.name} was less than {PICK_MARGIN:.0%} faster)"


def choose_recipe(model: torch.nn.Module, imgsz: int, batch: int, device: torch.device,
                  gpu_amp_dtype: torch.dtype | None = None) -> Recipe:
    """The training recipe for this device: fixed on GPUs, forced by $MTYOLO_CPU_RECIPE, else measured on CPUs."""
    if device.type != "cpu":
        return Recipe(True, gpu_amp_dtype)
    forced = os.environ.get(RECIPE_ENV, "auto").strip()
    if forced and forced != "auto":
        recipe = recipe_by_name(forced)
        LOGGER.info(f"CPU recipe: {recipe.name} (set by {RECIPE_ENV})")
        return recipe
    candidates = cpu_candidates()
    f, key = cache_file(), cache_key(model, imgsz, batch)
    cached = _read_cache(f).get(key)
    if cached and cached.get("recipe") in {r.name for r in candidates}:
        recipe = recipe_by_name(cached["recipe"])
        LOGGER.info(f"CPU recipe: {recipe.name}, measured earlier on this machine ({cached['summary']}; {f})")
        return recipe
    t0 = time.perf_counter()
    times = time_recipes(model, imgsz, batch, candidates)
    recipe, why = pick_recipe(times)
    summary = ", ".join(f"{r.name} {s:.2f} s" for r, s in times.items()) + \
        f"; {times[FP32_CONTIGUOUS] / times[recipe]:.2f}x contiguous-fp32"
    LOGGER.info(f"CPU recipe: {recipe.name}, {why} of {len(times)} timed on {cpu_name()} at {imgsz} px, batch "
                f"{batch} ({summary}; probe {time.perf_counter() - t0:.1f} s, cached in {f})")
    entries = _read_cache(f)
    entries[key] = {"recipe": recipe.name, "summary": summary}
    _write_cache(f, entries)
    return recipe
