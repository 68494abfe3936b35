"""Where an epoch's time goes: the trainer's phases (data wait, forward, loss, backward, ...) summed per epoch.

Timing a phase costs two clock reads; on CUDA the phases are only honest when the clock synchronises (`sync=True`,
which benchmarks/epoch_profile.py sets), because kernels run after the Python call that queued them has returned.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# The order phases are reported in; a phase not listed here is reported after them.
PHASES = ("data", "forward", "loss", "backward", "optimizer", "ema", "plots", "validation", "logging", "checkpoint")


class PhaseClock:
    """Sums the seconds spent in named phases, one record per epoch."""

    def __init__(self, device: torch.device | None = None, sync: bool = False):
        self.sync = bool(sync and device is not None and device.type == "cuda")
        self.current: dict[str, float] = {}
        self.epochs: list[dict[str, float]] = []  # finished epochs: phase -> seconds, plus 'total'
        self._epoch_t0 = 0.0

    def now(self) -> float:
        """Wall-clock seconds, after the GPU's queued work when the clock synchronises."""
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = self.now()
        try:
            yield
        finally:
            self.add(name, self.now() - t)

    def add(self, name: str, seconds: float) -> None:
        """Count `seconds` against phase `name` in the current epoch."""
        self.current[name] = self.current.get(name, 0.0) + seconds

    def start_epoch(self) -> None:
        """Begin a new epoch record."""
        self.current, self._epoch_t0 = {}, self.now()

    def end_epoch(self) -> dict[str, float]:
        """Close the epoch record (its wall time as 'total'); returns it."""
        rec = {**self.current, "total": self.now() - self._epoch_t0}
        self.epochs.append(rec)
        return rec


def ordered(rec: dict[str, float]) -> list[tuple[str, float]]:
    """An epoch record's phases in report order, then 'other' (the part no phase covered)."""
    names = [p for p in PHASES if p in rec] + sorted(k for k in rec if k not in PHASES and k != "total")
    rows = [(n, rec[n]) for n in names]
    return rows + [("other", max(rec.get("total", 0.0) - sum(s for _, s in rows), 0.0))]


def format_epoch(rec: dict[str, float]) -> str:
    """One line: each phase's seconds and share of the epoch."""
    total = max(rec.get("total", 0.0), 1e-9)
    parts = ", ".join(f"{n} {s:.1f} s ({100 * s / total:.0f}%)" for n, s in ordered(rec) if s >= 0.05)
    return f"{total:.1f} s: {parts}"
