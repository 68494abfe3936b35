"""Classification scoring: top-1 and top-5 accuracy over a dataset, overall and per class, as YOLOv5 v7.0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from utils import dist
from utils.engine.task import Metric


class ClsMetric(Metric):
    """Collects each image's top-5 predicted classes and its label; accuracy = label among the first k (k <= nc)."""

    names = ("metrics/accuracy_top1", "metrics/accuracy_top5")
    header = f"{'Class':>24}{'Images':>12}{'top1_acc':>12}{'top5_acc':>12}"

    def __init__(self, names: dict[int, str], save_dir: Path = Path("."), plots: bool = False, training: bool = False,
                 **_: Any):
        # detection-only options (single_cls, save_txt, ...) arrive through the shared validate(); none apply here
        self.class_names, self.save_dir, self.training = names, Path(save_dir), training
        self.preds: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self._acc: torch.Tensor | None = None

    def update(self, preds: torch.Tensor, batch: dict) -> None:
        """preds: (B, k) class indices by descending score (k = min(5, nc)); batch['cls']: (B,) labels."""
        self.preds.append(preds.cpu())
        self.targets.append(batch["cls"].cpu())

    def reduce(self) -> None:
        """Under DDP, gather every rank's predictions and labels."""
        if dist.world_size() > 1:
            parts = dist.all_gather_objects((self.preds, self.targets))
            self.preds = [p for part in parts for p in part[0]]
            self.targets = [t for part in parts for t in part[1]]

    def accuracy(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-image [top1, top5] correctness (n, 2), labels (n,))."""
        if self._acc is None:
            pred = torch.cat(self.preds) if self.preds else torch.zeros((0, 1), dtype=torch.long)
            target = torch.cat(self.targets) if self.targets else torch.zeros(0, dtype=torch.long)
            correct = (target[:, None] == pred).float()
            self._acc = torch.stack((correct[:, 0], correct.max(1).values), 1) if len(pred) else torch.zeros((0, 2))
            self._target = target
        return self._acc, self._target

    def compute(self) -> dict[str, float]:
        """Mean top-1 and top-5 accuracy (0 for an empty set)."""
        acc, _ = self.accuracy()
        values = acc.mean(0).tolist() if len(acc) else [0.0, 0.0]
        return dict(zip(self.names, values))

    def summary(self, verbose: bool = False) -> str:
        """The 'all' row, and with verbose one row per class (classes without images show nan, as upstream)."""
        acc, target = self.accuracy()
        top1, top5 = self.compute().values()
        lines = [self.header, f"{'all':>24}{len(target):>12}{top1:>12.3g}{top5:>12.3g}"]
        if verbose:
            for i, c in self.class_names.items():
                aci = acc[target == i]
                t1, t5 = aci.mean(0).tolist() if len(aci) else (float("nan"), float("nan"))
                lines.append(f"{c:>24}{aci.shape[0]:>12}{t1:>12.3g}{t5:>12.3g}")
        return "\n".join(lines)
