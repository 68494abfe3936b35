"""Blocks that upstream's models/hub/ YAMLs and older releases name: CSP variants (BottleneckCSP, C3TR, C3SPP, C3Ghost,
C3x), Ghost and transformer layers, CrossConv, MixConv2d, Contract/Expand.

Submodule names follow upstream's so that upstream checkpoints of these models map onto ours key for key.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from models.common import C3, SPP, Bottleneck, Conv, DWConv, cat_channels
from models.registry import register


@register
class BottleneckCSP(nn.Module):
    """CSP bottleneck of YOLOv4/YOLOv5 <= v3: like C3, but the bypass is a plain conv and BatchNorm + SiLU act on
    the concatenation before the merging Conv."""

    yaml_kind = "channels_repeat"

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = nn.Conv2d(c1, c_, 1, 1, bias=False)
        self.cv3 = nn.Conv2d(c_, c_, 1, 1, bias=False)
        self.cv4 = Conv(2 * c_, c2, 1, 1)
        self.bn = nn.BatchNorm2d(2 * c_)
        self.act = nn.SiLU()
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transformed half and bypass half, normalised together, merged."""
        y1 = self.cv3(self.m(self.cv1(x)))
        return self.cv4(self.act(self.bn(cat_channels((y1, self.cv2(x))))))


@register
class CrossConv(nn.Module):
    """A k x k convolution factorised into 1 x k then k x 1, with an optional residual."""

    yaml_kind = "channels"

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, g: int = 1, e: float = 1.0, shortcut: bool = False):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, (1, k), (1, s))
        self.cv2 = Conv(c_, c2, (k, 1), (s, 1), g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Row then column convolution."""
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


@register
class C3x(C3):
    """C3 whose bottlenecks are CrossConvs."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(CrossConv(c_, c_, 3, 1, g, 1.0, shortcut) for _ in range(n)))


class TransformerLayer(nn.Module):
    """Transformer encoder layer without LayerNorm (arXiv 2010.11929 minus the norms): attention and a two-layer
    linear block, each with a residual. Input (sequence, batch, c)."""

    def __init__(self, c: int, num_heads: int):
        super().__init__()
        self.q = nn.Linear(c, c, bias=False)
        self.k = nn.Linear(c, c, bias=False)
        self.v = nn.Linear(c, c, bias=False)
        self.ma = nn.MultiheadAttention(embed_dim=c, num_heads=num_heads)
        self.fc1 = nn.Linear(c, c, bias=False)
        self.fc2 = nn.Linear(c, c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention then feed-forward, both residual."""
        x = self.ma(self.q(x), self.k(x), self.v(x))[0] + x
        return self.fc2(self.fc1(x)) + x


class TransformerBlock(nn.Module):
    """Vision-transformer block on a feature map: optional Conv to c2, a learnt linear position embedding added to
    the flattened pixels, then num_layers TransformerLayers."""

    def __init__(self, c1: int, c2: int, num_heads: int, num_layers: int):
        super().__init__()
        self.conv = Conv(c1, c2) if c1 != c2 else None
        self.linear = nn.Linear(c2, c2)
        self.tr = nn.Sequential(*(TransformerLayer(c2, num_heads) for _ in range(num_layers)))
        self.c2 = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c1, h, w) -> (b, c2, h, w)."""
        if self.conv is not None:
            x = self.conv(x)
        b, _, h, w = x.shape
        p = x.flatten(2).permute(2, 0, 1)  # (h*w, b, c2)
        return self.tr(p + self.linear(p)).permute(1, 2, 0).reshape(b, self.c2, h, w)


@register
class C3TR(C3):
    """C3 whose bottleneck stack is a TransformerBlock of n layers with 4 heads."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = TransformerBlock(c_, c_, 4, n)


@register
class C3SPP(C3):
    """C3 whose bottleneck stack is an SPP (upstream's form: output width c_; Multi YOLO V5 has its own, wider one)."""

    yaml_kind = "channels"  # upstream passes no repeat count: args are (c2, k, ...)

    def __init__(self, c1: int, c2: int, k: tuple[int, ...] = (5, 9, 13), shortcut: bool = True, g: int = 1,
                 e: float = 0.5):
        super().__init__(c1, c2, 1, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = SPP(c_, c_, k)


class GhostConv(nn.Module):
    """Ghost convolution (arXiv 1911.11907): half the outputs from a Conv, the other half a cheap 5x5 depth-wise
    Conv of those."""

    yaml_kind = "channels"

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: bool | nn.Module = True):
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, k, s, None, g, act=act)
        self.cv2 = Conv(c_, c_, 5, 1, None, c_, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Primary features and their cheap ghosts, concatenated."""
        y = self.cv1(x)
        return cat_channels((y, self.cv2(y)))


class GhostBottleneck(nn.Module):
    """Ghost bottleneck: GhostConv -> (depth-wise stride-2 Conv) -> GhostConv without activation, plus a shortcut
    that is the identity at stride 1 and a depth-wise + 1x1 Conv at stride 2."""

    yaml_kind = "channels"

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1):
        super().__init__()
        c_ = c2 // 2
        self.conv = nn.Sequential(GhostConv(c1, c_, 1, 1),
                                  DWConv(c_, c_, k, s, act=False) if s == 2 else nn.Identity(),
                                  GhostConv(c_, c2, 1, 1, act=False))
        self.shortcut = (nn.Sequential(DWConv(c1, c1, k, s, act=False), Conv(c1, c2, 1, 1, act=False)) if s == 2
                         else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual ghost block."""
        return self.conv(x) + self.shortcut(x)


register(GhostConv)
register(GhostBottleneck)


@register
class C3Ghost(C3):
    """C3 whose bottlenecks are GhostBottlenecks."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(GhostBottleneck(c_, c_) for _ in range(n)))


@register
class MixConv2d(nn.Module):
    """Mixed depth-wise convolution (arXiv 1907.09595): output channels split over several kernel sizes, with
    equal channels per group (equal_ch) or equal parameters per group."""

    yaml_kind = "channels"

    def __init__(self, c1: int, c2: int, k: tuple[int, ...] = (1, 3), s: int = 1, equal_ch: bool = True):
        super().__init__()
        n = len(k)
        if equal_ch:
            idx = torch.linspace(0, n - 1e-6, c2).floor()
            c_ = [int((idx == g).sum()) for g in range(n)]
        else:  # channel counts summing to c2 whose groups hold equal weights: c_i * k_i^2 equal for all i
            rows = np.eye(n + 1, n, k=-1)
            rows -= np.roll(rows, 1, axis=1)
            rows *= np.array(k) ** 2
            rows[0] = 1
            c_ = np.linalg.lstsq(rows, np.array([c2] + [0] * n), rcond=None)[0].round().astype(int).tolist()
        self.m = nn.ModuleList(nn.Conv2d(c1, c, ki, s, ki // 2, groups=math.gcd(c1, c), bias=False)
                               for ki, c in zip(k, c_))
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each kernel size on its channel group, concatenated, normalised, activated."""
        return self.act(self.bn(cat_channels([m(x) for m in self.m])))


@register
class DWConvTranspose2d(nn.ConvTranspose2d):
    """Depth-wise transposed convolution (groups = gcd of channel counts)."""

    yaml_kind = "channels"

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p1: int = 0, p2: int = 0):
        super().__init__(c1, c2, k, s, p1, p2, groups=math.gcd(c1, c2))


class _PixelRegroup(nn.Module):
    """Moves gain x gain pixel blocks between space and channels (no parameters)."""

    def __init__(self, gain: int = 2):
        super().__init__()
        self.gain = gain


@register
class Contract(_PixelRegroup):
    """Space-to-depth by `gain`: (b, c, h, w) -> (b, c*gain^2, h/gain, w/gain)."""

    yaml_kind = "contract"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fold gain x gain pixel blocks into channels."""
        b, c, h, w = x.shape
        s = self.gain
        x = x.view(b, c, h // s, s, w // s, s).permute(0, 3, 5, 1, 2, 4).contiguous()
        return x.view(b, c * s * s, h // s, w // s)


@register
class Expand(_PixelRegroup):
    """Depth-to-space by `gain`: (b, c, h, w) -> (b, c/gain^2, h*gain, w*gain); the inverse of Contract."""

    yaml_kind = "expand"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unfold channels into gain x gain pixel blocks."""
        b, c, h, w = x.shape
        s = self.gain
        x = x.view(b, s, s, c // s ** 2, h, w).permute(0, 3, 4, 1, 5, 2).contiguous()
        return x.view(b, c // s ** 2, h * s, w * s)
