"""Several models run as one, as upstream v7.0's `--weights a.pt b.pt`: every model predicts on the same batch and
their candidate boxes are concatenated, so that one NMS afterwards picks among all of them."""

from __future__ import annotations

import torch
import torch.nn as nn


class Ensemble(nn.ModuleList):
    """Detection models (eval mode) whose decoded outputs are merged before NMS; names, nc, task from the first,
    stride the largest of any (so that inputs are padded to suit every member)."""

    def __init__(self, models: list[nn.Module]):
        super().__init__(models)
        first = models[0]
        self.names, self.nc = first.names, first.nc
        self.task = getattr(first, "task", "detect")
        self.stride = max((m.stride for m in models), key=lambda s: float(torch.as_tensor(s).max()))

    def forward(self, x: torch.Tensor, augment: bool = False, profile: bool = False, visualize=False):
        """(boxes of every model concatenated along the candidates, []): the eval layout without raw maps (which
        only a single model's validation loss uses)."""
        return torch.cat([m(x, augment=augment)[0] for m in self], 1), []
