"""Building blocks of YOLOv5 models (convolutions, CSP bottlenecks, pooling pyramids, prototype head) and BN folding.

Each block has `yaml_kind`, which tells parse_model how to turn a YAML argument list into constructor arguments:
'channels' prepends the input channels and width-scales the output channels, 'channels_repeat' additionally takes the
YAML repeat count as its own `n` argument, 'concat' sums input channels, anything else keeps the input channel count.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from models.bn_silu import bn_silu, fused_applies
from models.registry import register


def autopad(k: int | list[int], p: int | list[int] | None = None, d: int = 1) -> int | list[int]:
    """Padding that keeps the spatial size ('same') for kernel k and dilation d at stride 1."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


class _DenseGradCat(torch.autograd.Function):
    """torch.cat along channels whose gradient pieces come back dense in channels_last.

    A channel slice of a channels_last gradient is strided: each pixel's channels are a short run inside the wider
    concatenated ones. PyTorch's bf16 and fp16 SiLU backward on CPU takes such input a run at a time (16 x 32 x 64 x 64:
    bf16 6.1 ms strided against 0.8 ms dense, fp16 7.2 against 0.7, and 0.3 ms to copy; AMX Xeon). In fp32 it is
    nearly as fast strided (1.0 against 0.8 ms), so fp32 keeps plain torch.cat. yolov5n 256 b16, bf16: SiLU backward
    24 -> 13 ms per step.
    """

    @staticmethod
    def forward(ctx, *tensors: torch.Tensor) -> torch.Tensor:
        ctx.sizes = [t.shape[1] for t in tensors]
        return torch.cat(tensors, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pieces = grad.split(ctx.sizes, 1)
        if grad.dim() == 4 and grad.is_contiguous(memory_format=torch.channels_last) and not grad.is_contiguous():
            return tuple(p.contiguous(memory_format=torch.channels_last) for p in pieces)
        return pieces  # NCHW pieces are whole blocks per image already


def cat_channels(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Concatenate feature maps along channels (dim 1); when training in bf16/fp16 on CPU, with dense gradients.

    Tracing, scripting and torch.compile see plain torch.cat (a compiler chooses its own layouts)."""
    first = tensors[0]
    if (torch.is_grad_enabled() and first.device.type == "cpu" and first.dtype in (torch.bfloat16, torch.float16)
            and not torch.jit.is_tracing() and not torch.jit.is_scripting() and not torch.compiler.is_compiling()):
        return _DenseGradCat.apply(*tensors)
    return torch.cat(tensors, 1)


@register
class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + activation (SiLU by default)."""

    yaml_kind = "channels"
    # One shared activation instance, like upstream: model summaries count modules, so sharing keeps the figures equal.
    default_act: nn.Module = nn.SiLU()

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, d: int = 1,
                 act: bool | nn.Module = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        if act is True:
            self.act = self.default_act
        elif isinstance(act, nn.Module):
            self.act = act
        else:
            self.act = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve, normalise, activate (the last two fused in CPU training where models/bn_silu.py applies)."""
        x = self.conv(x)
        if fused_applies(x, self.bn, self.act):
            return bn_silu(x, self.bn)
        return self.act(self.bn(x))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        """Forward after fuse(): BatchNorm has been folded into the convolution."""
        return self.act(self.conv(x))


@register
class DWConv(Conv):
    """Depth-wise convolution (groups = gcd of channel counts)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, d: int = 1, act: bool | nn.Module = True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


@register
class Bottleneck(nn.Module):
    """1x1 reduce then 3x3 conv, with a residual connection when shapes allow."""

    yaml_kind = "channels"

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual bottleneck."""
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


@register
class C3(nn.Module):
    """CSP bottleneck with 3 convolutions: two 1x1 branches, one through n Bottlenecks, merged by a 1x1 conv."""

    yaml_kind = "channels_repeat"

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Split, transform one half, concatenate, merge."""
        return self.cv3(cat_channels((self.m(self.cv1(x)), self.cv2(x))))


@register
class SPP(nn.Module):
    """Spatial pyramid pooling: parallel max-pools of several kernel sizes."""

    yaml_kind = "channels"

    def __init__(self, c1: int, c2: int, k: tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool at each kernel size and merge."""
        x = self.cv1(x)
        return self.cv2(cat_channels([x] + [m(x) for m in self.m]))


@register
class SPPF(nn.Module):
    """SPP-Fast: three chained k x k max-pools, equivalent to SPP(k, 2k-1, 3k-2) at lower cost."""

    yaml_kind = "channels"

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Chain the pools and merge all four scales."""
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(cat_channels((x, y1, y2, self.m(y2))))


@register
class Focus(nn.Module):
    """Space-to-depth (2x2 pixel blocks into channels) followed by a Conv."""

    yaml_kind = "channels"

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool | nn.Module = True):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b,c,h,w) -> (b,4c,h/2,w/2) -> Conv."""
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1))


@register
class Concat(nn.Module):
    """Concatenate a list of tensors along one dimension."""

    yaml_kind = "concat"

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """torch.cat along the configured dimension (cat_channels for channels)."""
        return cat_channels(x) if self.d == 1 else torch.cat(x, self.d)


@register
class Proto(nn.Module):
    """Mask prototype branch of the segmentation head: 3x3 conv, 2x nearest upsample, 3x3 conv, 1x1 conv to c2 masks."""

    yaml_kind = "channels"

    def __init__(self, c1: int, c_: int = 256, c2: int = 32):
        super().__init__()
        self.cv1 = Conv(c1, c_, k=3)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.cv2 = Conv(c_, c_, k=3)
        self.cv3 = Conv(c_, c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Prototype masks at twice the input resolution."""
        return self.cv3(self.cv2(self.upsample(self.cv1(x))))


def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return one Conv2d (with bias) computing bn(conv(x)) in eval mode."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True)
    fused.requires_grad_(False)
    fused.to(conv.weight.device)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # per output channel
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((b - bn.running_mean) * scale + bn.bias)
    return fused
