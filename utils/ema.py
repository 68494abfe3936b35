"""Exponential moving average of model weights (params and float buffers), updated with foreach kernels."""

from __future__ import annotations

import math
from copy import deepcopy

import torch
import torch.nn as nn

from utils.dist import unwrap as unwrap_model


def float_state(model: nn.Module) -> list[torch.Tensor]:
    """Floating-point entries of the state dict (params and buffers such as BN running stats), as live tensors."""
    return [v for v in model.state_dict(keep_vars=True).values() if v.dtype.is_floating_point]


def _match_layout(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """Give each dst tensor the strides of its src tensor, in place (the tensor objects stay the same)."""
    # The EMA copy is usually made before the model goes channels_last; foreach kernels take their fast,
    # single-launch path only when both lists share strides, so a mismatch would cost one launch per tensor.
    for d, s in zip(dst, src):
        if d.stride() != s.stride():
            d.data = torch.empty_like(s, device=d.device, dtype=d.dtype).copy_(d)


EMA_DECAY = 0.9999  # YOLOv5's largest decay: at full decay the EMA averages over about the last 10,000 updates
EMA_TAU = 2000.0  # YOLOv5's ramp: after 2000 updates the decay is 63% of its maximum


class ModelEMA:
    """Keeps `ema` = moving average of a model; decay ramps up as decay * (1 - exp(-updates / tau))."""

    def __init__(self, model: nn.Module, decay: float = EMA_DECAY, tau: float = EMA_TAU, updates: int = 0):
        self.ema = deepcopy(unwrap_model(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.updates = updates
        self.decay_max, self.tau = decay, tau
        self._src_model: nn.Module | None = None
        self._src_list: list[torch.Tensor] = []
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the cached tensor lists; call it after moving or casting `ema` (buffers are replaced then)."""
        # keep_vars entries are the Parameter objects themselves, so in-place steps and .data swaps stay visible.
        self._ema_list = float_state(self.ema)
        self._src_model, self._src_list = None, []

    def decay(self, updates: int | None = None) -> float:
        """Decay used at a given update count (the current one by default)."""
        n = self.updates if updates is None else updates
        return self.decay_max * (1 - math.exp(-n / self.tau))

    def _source(self, model: nn.Module) -> list[torch.Tensor]:
        model = unwrap_model(model)
        # The live tensors stay valid across optimizer steps (they update in place): build the list once per model.
        if model is not self._src_model:
            src = float_state(model)
            if len(src) != len(self._ema_list) or any(a.shape != b.shape for a, b in zip(src, self._ema_list)):
                raise ValueError("ModelEMA.update: model state does not match the EMA copy (different architecture?)")
            _match_layout(self._ema_list, src)
            self._src_model, self._src_list = model, src
        return self._src_list

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema = d * ema + (1 - d) * model over all floating-point params and buffers."""
        self.updates += 1
        d = self.decay()
        src = self._source(model)
        if src[0].device != self._ema_list[0].device:  # EMA kept elsewhere (e.g. CPU): copy, then blend
            src = [s.to(e.device) for s, e in zip(src, self._ema_list)]
        if self._ema_list[0].dtype != src[0].dtype:
            src = [s.to(e.dtype) for s, e in zip(src, self._ema_list)]
        torch._foreach_lerp_(self._ema_list, src, 1.0 - d)

    def update_attr(self, model: nn.Module, include: tuple = (), exclude: tuple = ("process_group", "reducer")) -> None:
        """Copy plain attributes (names, hyp, stride...) from model to the EMA copy."""
        for k, v in unwrap_model(model).__dict__.items():
            # 'training' is skipped too: the EMA copy must stay in eval mode.
            if (include and k not in include) or k.startswith("_") or k in exclude or k == "training":
                continue
            setattr(self.ema, k, v)

    def state_dict(self) -> dict:
        """Checkpoint form: the EMA weights and the update count."""
        return {"ema": self.ema.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict() output (weights copied in place, so cached lists stay valid)."""
        self.ema.load_state_dict(state["ema"])
        self.updates = int(state["updates"])
