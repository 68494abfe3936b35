"""Output heads: Detect (anchor-based boxes), Segment (boxes + mask coefficients + prototypes) and Classify.

Heads only map features to outputs; losses, targets and training logic live elsewhere.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from models.common import Conv, Proto
from models.registry import register


@register
class Detect(nn.Module):
    """YOLOv5 detection head: one 1x1 conv per pyramid level predicting na anchors x (xywh, obj, nc classes)."""

    yaml_kind = "detect"
    dynamic = False  # rebuild grids on every call (shape-polymorphic export)
    export = False  # eval returns (cat,) instead of (cat, raw maps)

    def __init__(self, nc: int = 80, anchors: tuple | list = (), ch: tuple | list = (), inplace: bool = True):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]
        # Anchors are kept in grid units (pixels / stride) once the model knows its strides; the state dict holds them.
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2))
        # Strides are derived from the architecture, not learnt: kept out of the state dict but moved with .to().
        self.register_buffer("stride", torch.ones(self.nl), persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self.inplace = inplace

    def forward(self, x: list[torch.Tensor]):
        """Train: list of (bs,na,ny,nx,no) raw maps; eval: (decoded (bs,N,no), raw maps); export: (decoded,)."""
        # Eager inference decodes each level in place into its slice of one preallocated output, which saves a full
        # copy of the predictions per level and the final concatenation; export and tracing keep the functional path.
        into = not self.training and self.inplace and not self.export and not torch.jit.is_tracing()
        bs = x[0].shape[0]
        out, z, start = None, [], 0
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            _, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2)
            if self.training:
                # A channels_last map is already (bs, ny, nx, na, no) in memory: the permuted view reads each
                # anchor's outputs contiguously, so the loss takes it as it is (yolov5s 640 b8, AVX2 EPYC: 4 copies
                # of every output map saved). Its gradient still comes back NCHW (the loss's gathers write it into
                # fresh contiguous tensors), which the convolution's backward converts: 0.2 ms per main-job step
                # (bf16, AMX Xeon).
                if x[i].stride(-1) != 1:
                    x[i] = x[i].contiguous()
                continue
            x[i] = x[i].contiguous()
            if self._grid_stale(i, x[i]):
                self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i, x[i])
            n = self.na * ny * nx
            if into:
                if out is None:
                    total = sum(self.na * t.shape[-2] * t.shape[-1] for t in x[i + 1:]) + start + n
                    out = x[i].new_empty(bs, total, self.no)
                self._decode_into(x[i], i, out[:, start:start + n].view(bs, self.na, ny, nx, self.no))
            else:
                z.append(self._decode(x[i], i).view(bs, n, self.no))
            start += n
        if self.training:
            return x
        if not into:
            out = torch.cat(z, 1)
        return (out,) if self.export else (out, x)

    def _decode(self, p: torch.Tensor, i: int) -> torch.Tensor:
        """Raw map -> xywh in input pixels and sigmoid scores."""
        y = p.sigmoid()
        xy, wh, conf = y.split((2, 2, self.no - 4), 4)
        xy = (xy * 2 + self.grid[i]) * self.stride[i]
        wh = wh * 2
        wh = wh * wh * self.anchor_grid[i]  # a product, not ** 2: TFLite's converter cannot lower a float pow
        return torch.cat((xy, wh, conf), 4)

    def _decode_into(self, p: torch.Tensor, i: int, y: torch.Tensor) -> None:
        """_decode written into `y` with in-place ops (same values)."""
        torch.sigmoid(p, out=y)
        self._boxes_inplace(y, i)

    def _boxes_inplace(self, y: torch.Tensor, i: int) -> None:
        y[..., :2].mul_(2).add_(self.grid[i]).mul_(self.stride[i])
        y[..., 2:4].mul_(2).pow_(2).mul_(self.anchor_grid[i])

    def _grid_stale(self, i: int, p: torch.Tensor) -> bool:
        g = self.grid[i]
        return self.dynamic or g.shape[2:4] != p.shape[2:4] or g.device != p.device or g.dtype != p.dtype

    def _make_grid(self, nx: int, ny: int, i: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell offsets (shifted by -0.5 so that 2*sigmoid-0.5 spans [-0.5, 1.5]) and anchor sizes in pixels."""
        d, t = like.device, like.dtype
        shape = (1, self.na, ny, nx, 2)
        yv, xv = torch.meshgrid(torch.arange(ny, device=d, dtype=t), torch.arange(nx, device=d, dtype=t), indexing="ij")
        grid = torch.stack((xv, yv), 2).expand(shape) - 0.5
        anchor_grid = (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2).expand(shape).to(t)
        return grid, anchor_grid


@register
class Segment(Detect):
    """Detect head that also predicts nm mask coefficients per anchor, plus a Proto branch on the finest level."""

    def __init__(self, nc: int = 80, anchors: tuple | list = (), nm: int = 32, npr: int = 256,
                 ch: tuple | list = (), inplace: bool = True):
        super().__init__(nc, anchors, ch, inplace)
        self.nm = nm
        self.npr = npr
        self.no = 5 + nc + nm
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self.proto = Proto(ch[0], self.npr, self.nm)

    def forward(self, x: list[torch.Tensor]):
        """Train: (raw maps, proto); eval: (decoded, proto, raw maps); export: (decoded, proto)."""
        p = self.proto(x[0])
        out = super().forward(x)
        if self.training:
            return out, p
        return (out[0], p) if self.export else (out[0], p, out[1])

    def _decode(self, p: torch.Tensor, i: int) -> torch.Tensor:
        """Boxes and scores as Detect; mask coefficients stay raw (they are mixed linearly with the prototypes)."""
        xy, wh, conf, mask = p.split((2, 2, self.nc + 1, self.nm), 4)
        xy = (xy.sigmoid() * 2 + self.grid[i]) * self.stride[i]
        wh = wh.sigmoid() * 2
        wh = wh * wh * self.anchor_grid[i]  # see Detect._decode
        return torch.cat((xy, wh, conf.sigmoid(), mask), 4)

    def _decode_into(self, p: torch.Tensor, i: int, y: torch.Tensor) -> None:
        """_decode written into `y` with in-place ops (same values)."""
        k = self.nc + 5
        torch.sigmoid(p[..., :k], out=y[..., :k])
        y[..., k:].copy_(p[..., k:])
        self._boxes_inplace(y, i)


@register
class Classify(nn.Module):
    """Classification head: 1x1 Conv to 1280 channels, global average pool, dropout, linear to nc logits."""

    yaml_kind = "classify"

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 dropout_p: float = 0.0):
        super().__init__()
        c_ = 1280  # EfficientNet-B0 width, as upstream
        self.conv = Conv(c1, c_, k, s, p, g)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(p=dropout_p, inplace=True)
        self.linear = nn.Linear(c_, c2)

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """(b,c1,h,w) -> (b,c2) logits; a list input is concatenated along channels first."""
        if isinstance(x, list):
            x = torch.cat(x, 1)
        return self.linear(self.drop(self.pool(self.conv(x)).flatten(1)))
