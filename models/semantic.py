"""Semantic-segmentation heads that sit on a detector's neck (SemanticPSP, SemanticBiSe), their blocks, and the
`semantic:` YAML section that wires them to any detection model.

A head reads three neck levels at strides 8, 16 and 32 and predicts per-pixel class logits at the input resolution.
Contract shared by every head (the model relies on it): eval -> logits (B, nc, H, W); train -> (logits, aux) where
aux is a list of auxiliary logits at the input resolution too (empty when the head has none). Heads know nothing
about losses.

Every layer that sees a globally pooled map (pyramid bins, channel attention, global context) is a BiasConv, a
convolution with a bias and no BatchNorm: BatchNorm over a 1x1 map of a batch of one has a single value per channel
and fails in training, which made the reference skip batches of one image.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.common import Concat, Conv, autopad, cat_channels
from models.registry import lookup, register
from utils.errors import ModelConfigError

# short names a CLI flag may offer; lab and base are Multi YOLO V5's heads (models/multiyolo.py)
SEMANTIC_HEADS = {"psp": "SemanticPSP", "bise": "SemanticBiSe", "lab": "SegMaskLab", "base": "SegMaskBase"}


def _bin_matrix(n, k: int, like: torch.Tensor) -> torch.Tensor:
    """(k, n) averaging matrix of adaptive average pooling along one axis of length n into k bins.

    Bin i covers [floor(i*n/k), ceil((i+1)*n/k)), PyTorch's rule, so the result equals F.adaptive_avg_pool2d.
    """
    i = torch.arange(k, device=like.device)
    j = torch.arange(n, device=like.device)
    start = torch.div(i * n, k, rounding_mode="floor")
    end = torch.div((i + 1) * n + k - 1, k, rounding_mode="floor")
    m = ((j[None] >= start[:, None]) & (j[None] < end[:, None])).to(like.dtype)
    return m / m.sum(1, keepdim=True)


def _tracing() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_compiling()


def adaptive_avg_pools(x: torch.Tensor, bins: tuple[int, ...]) -> list[torch.Tensor]:
    """[F.adaptive_avg_pool2d(x, k) for k in bins]; when exported or traced, the same values as matrix products.

    Why: the ONNX exporter lowers adaptive average pooling to a fixed-window AveragePool and refuses sizes the bins
    do not divide (e.g. a 1/8 map of 20 x 36 into 6 bins); ONNX has no adaptive pooling operator. Eager runs keep
    the native kernel (one call per bin; the matrix form costs ~100 small kernels on a GPU and a layout copy of a
    channels_last map on a CPU).
    """
    if _tracing():
        return matrix_avg_pools(x, bins)
    return [F.adaptive_avg_pool2d(x, k) for k in bins]


def matrix_avg_pools(x: torch.Tensor, bins: tuple[int, ...]) -> list[torch.Tensor]:
    """Adaptive average pooling into each k x k of `bins` as two matrix products, exact at any input size.

    The averaging matrices are built from the input's shape with arange/compare ops, so a fixed-size export folds
    them into constants and a dynamic-shape export computes them per input. All bins share one pass over x:
    (B*C*H, W) @ (W, K) then (B*C*K, H) @ (H, K) with K = sum(bins), plain GEMMs (a broadcast (k, H) @ (B, C, H, W)
    product runs as B*C tiny matmuls, 100x slower on a CPU).
    """
    b, c, h, w = x.shape
    pw = torch.cat([_bin_matrix(w, k, x) for k in bins])  # (K, W)
    ph = torch.cat([_bin_matrix(h, k, x) for k in bins])  # (K, H)
    y = x.reshape(-1, w) @ pw.transpose(0, 1)  # (B*C*H, K): pooled along W
    y = y.reshape(-1, h, y.shape[-1]).transpose(1, 2).reshape(-1, h) @ ph.transpose(0, 1)  # (B*C*K_w, K_h)
    y = y.reshape(b, c, y.shape[-1], y.shape[-1])  # (B, C, K_w, K_h): bin blocks on the diagonal
    out, o = [], 0
    for k in bins:
        out.append(y[:, :, o:o + k, o:o + k].transpose(2, 3))
        o += k
    return out


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class BiasConv(Conv):
    """Conv2d with a bias, then the activation, no BatchNorm: a Conv in its fused form from the start.

    Being a Conv, it takes a model YAML's activation like every other Conv; fuse() leaves it alone (no `bn`).
    """

    def __init__(self, c1: int, c2: int, k: int = 1, act: bool | nn.Module = True):
        nn.Module.__init__(self)  # Conv's own __init__ would build the BatchNorm this block exists to avoid
        self.conv = nn.Conv2d(c1, c2, k, 1, autopad(k), bias=True)
        self.act = self.default_act if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve, activate."""
        return self.act(self.conv(x))


class PyramidPool(nn.Module):
    """Pyramid pooling: the map, plus for each bin count an adaptive average pool -> 1x1 conv (c/len(bins)) ->
    bilinear upsample; concatenated, so c1 -> 2*c1 channels."""

    def __init__(self, c1: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.bins = tuple(int(b) for b in bins)
        c_ = c1 // len(self.bins)
        self.cv = nn.ModuleList(BiasConv(c1, c_, 1) for _ in self.bins)
        self.c2 = c1 + c_ * len(self.bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c1, H, W) -> (B, c2, H, W)."""
        size = x.shape[-2:]
        return cat_channels([x] + [_resize(cv(p), size) for p, cv in zip(adaptive_avg_pools(x, self.bins), self.cv)])


class ChannelAttentionFuse(nn.Module):
    """Feature fusion: a list of maps (or one) concatenated -> Conv(k) -> y * (1 + channel attention(y)), where the
    attention is global average -> 1x1 -> act -> 1x1 -> sigmoid (BiSeNet's feature-fusion module)."""

    def __init__(self, c1: int, c2: int, k: int = 1, r: int = 4):
        super().__init__()
        self.cv = Conv(c1, c2, k)
        self.att = nn.Sequential(BiasConv(c2, max(c2 // r, 8), 1), BiasConv(max(c2 // r, 8), c2, 1, nn.Sigmoid()))

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """Fuse and reweight channels."""
        y = self.cv(cat_channels(x) if isinstance(x, (list, tuple)) else x)
        return y * (1 + self.att(y.mean((2, 3), keepdim=True)))


class ReceptiveFieldBlock(nn.Module):
    """Receptive-field block: a 1x1 -> 3x3 branch followed by a cascade of two dilated 3x3 convs (dilations d),
    a 1x1 shortcut branch and optionally a global-context branch (the global mean of the last dilated branch,
    1x1 conv, broadcast over the map); all concatenated and merged by a 1x1 Conv. Inner width c2 // 2."""

    def __init__(self, c1: int, c2: int, d: tuple[int, int] = (2, 3), global_context: bool = False):
        super().__init__()
        c_ = c2 // 2
        self.b0 = nn.Sequential(Conv(c1, c_, 1), Conv(c_, c_, 3))
        self.b1 = Conv(c_, c_, 3, d=d[0])
        self.b2 = Conv(c_, c_, 3, d=d[1])
        self.b3 = Conv(c1, c_, 1)
        self.gc = BiasConv(c_, c_, 1) if global_context else None
        self.cv = Conv(c_ * (5 if global_context else 4), c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c1, H, W) -> (B, c2, H, W)."""
        y0 = self.b0(x)
        y1 = self.b1(y0)
        y2 = self.b2(y1)
        ys = [y0, y1, y2, self.b3(x)]
        if self.gc is not None:
            ys.append(self.gc(y2.mean((2, 3), keepdim=True)).expand_as(y2))
        return self.cv(cat_channels(ys))


class _AuxHead(nn.Module):
    """Training-only auxiliary classifier: Conv 3x3 -> 1x1 to nc logits -> bilinear upsample by `scale`."""

    def __init__(self, c1: int, nc: int, scale: int):
        super().__init__()
        self.cv = Conv(c1, c1, 3)
        self.cls = nn.Conv2d(c1, nc, 1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at scale x the map's resolution."""
        return F.interpolate(self.cls(self.cv(x)), scale_factor=self.scale, mode="bilinear", align_corners=False)


class SemanticHead(nn.Module):
    """Shared parts of the semantic heads: YAML kind, the final classifier and upsampling by 8 to the input size."""

    yaml_kind = "semantic"  # parse_model: args [nc_seg, c_, ...] -> (channels of the `from` layers, nc_seg, c_, ...)
    n_inputs = 3  # levels read: strides 8, 16, 32

    def __init__(self, ch: list[int] | tuple[int, ...], nc: int):
        super().__init__()
        if len(ch) != self.n_inputs:
            raise ModelConfigError(f"{type(self).__name__} reads {self.n_inputs} levels, got {len(ch)}")
        self.nc = nc

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        # bilinear with half-pixel centres: stride-8 cell i lands on pixels 8i..8i+7, as the features were computed
        return F.interpolate(self.cls(x), scale_factor=8, mode="bilinear", align_corners=False)


@register
class SemanticPSP(SemanticHead):
    """Pyramid-pooling head: the three levels reduced to c_ and fused at stride 8, a receptive-field block, pyramid
    pooling (bins 1, 2, 3, 6), a channel-attention fusion, a 1x1 classifier and an 8x upsample. No auxiliary head."""

    def __init__(self, ch: list[int], nc: int, c_: int = 128, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__(ch, nc)
        self.reduce = nn.ModuleList(Conv(c, c_, 1) for c in ch)  # at each level's own resolution: cheapest
        self.rfb = ReceptiveFieldBlock(3 * c_, c_)
        self.ppm = PyramidPool(c_, bins)
        # 1x1 fusion: a 3x3 here is half the head's cost (+4.8 GFLOPs for s at 1024x512), over the +30% budget
        self.ffm = ChannelAttentionFuse(self.ppm.c2, c_, k=1)
        self.cls = nn.Conv2d(c_, nc, 1)

    def forward(self, x: list[torch.Tensor]):
        """[P3/8, P4/16, P5/32] -> logits (B, nc, 8*h3, 8*w3); in training (logits, [])."""
        size = x[0].shape[-2:]
        f = [m(xi) if i == 0 else _resize(m(xi), size) for i, (m, xi) in enumerate(zip(self.reduce, x))]
        out = self._logits(self.ffm(self.ppm(self.rfb(cat_channels(f)))))
        return (out, []) if self.training else out


@register
class SemanticBiSe(SemanticHead):
    """BiSeNet-style head. Detail path: the stride-8 level -> 1x1 Conv. Context path: stride 32 -> receptive-field
    block with a global-context branch -> 3x3 refine -> up to 16, added to stride 16 -> receptive-field block ->
    3x3 refine -> up to 8. Both fused by channel attention -> dropout -> classifier -> 8x upsample.
    Training also returns two auxiliary logits: [on the stride-8 context, on the stride-16 context]."""

    def __init__(self, ch: list[int], nc: int, c_: int = 128, dropout: float = 0.1):
        super().__init__(ch, nc)
        self.detail = Conv(ch[0], c_, 1)
        self.ctx16 = ReceptiveFieldBlock(ch[1], c_)
        self.ctx32 = ReceptiveFieldBlock(ch[2], c_, global_context=True)
        # refining before upsampling costs a quarter of refining after it
        self.refine32 = Conv(c_, c_, 3)
        self.refine16 = Conv(c_, c_, 3)
        self.ffm = ChannelAttentionFuse(2 * c_, c_, k=1)
        self.drop = nn.Dropout(dropout)
        self.cls = nn.Conv2d(c_, nc, 1)
        self.aux = nn.ModuleList((_AuxHead(c_, nc, 8), _AuxHead(c_, nc, 16)))

    def forward(self, x: list[torch.Tensor]):
        """[P3/8, P4/16, P5/32] -> logits (B, nc, 8*h3, 8*w3); in training (logits, [aux stride 8, aux stride 16])."""
        p3, p4, p5 = x
        c32 = _resize(self.refine32(self.ctx32(p5)), p4.shape[-2:])  # stride 16
        c16 = _resize(self.refine16(self.ctx16(p4) + c32), p3.shape[-2:])  # stride 8
        out = self._logits(self.drop(self.ffm([self.detail(p3), c16])))
        if self.training:
            return out, [self.aux[0](c16), self.aux[1](c32)]
        return out


def neck_concat_levels(d: dict) -> list[int]:
    """Indices of the layers a semantic head should read in a detection model dict: for each of the Detect head's
    first three inputs (strides 8, 16, 32), the Concat that feeds it through one block, else the input itself."""
    rows = d["backbone"] + d["head"]
    src = rows[-1][0]
    if not isinstance(src, list) or len(src) < 3:
        raise ModelConfigError(f"{d.get('yaml_file', 'model yaml')}: the Detect head must read at least 3 levels")
    out = []
    for j in src[:3]:
        j = j % len(rows)
        f, m = rows[j][0], rows[j][2]
        k = j - 1 if f == -1 else f
        is_concat = isinstance(k, int) and _module(rows[k][2]) is Concat and _module(m) is not Concat
        out.append(k % len(rows) if is_concat else j)
    return out


def _module(name) -> type | None:
    try:
        return lookup(name) if isinstance(name, str) else None
    except KeyError:
        return None


def with_semantic_head(d: dict, head: str = "psp", nc_seg: int | None = None, c_: int = 256) -> dict:
    """A copy of a model dict whose `semantic:` section is the given head ('psp', 'bise', 'lab', 'base' or a
    registered class name) on the neck's Concat layers at strides 8/16/32 (lab: the backbone's stride-8 layer and
    the stride-16 Concat; base: the stride-8 Concat); c_ is the hidden width before the width multiple (base: 2 c_)."""
    name = SEMANTIC_HEADS.get(head, head)
    cls = _module(name)
    if cls is None or not issubclass(cls, SemanticHead):
        raise ModelConfigError(f"unknown semantic head {head!r} (choose from {', '.join(SEMANTIC_HEADS)})")
    d = {k: v for k, v in d.items()}
    levels = neck_concat_levels(d)
    if cls.n_inputs == 2:  # detail from the backbone layer that the stride-8 Concat joins, context at stride 16
        rows = d["backbone"] + d["head"]
        joined = [j for j in rows[levels[0]][0] if j != -1] if isinstance(rows[levels[0]][0], list) else []
        if not joined:
            raise ModelConfigError(f"{d.get('yaml_file', 'model yaml')}: {name} needs the stride-8 Concat's backbone "
                                   f"input")
        levels = [joined[0] % len(rows), levels[1]]
    elif cls.n_inputs == 1:
        levels, c_ = levels[:1], 2 * c_
    d["semantic"] = [[levels, 1, name, ["nc_seg", c_]]]
    if nc_seg is not None:
        d["nc_seg"] = int(nc_seg)
    return d
