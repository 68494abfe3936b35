"""Multi YOLO V5's four semantic heads (SegMaskPSP, SegMaskBiSe, SegMaskLab, SegMaskBase) with its parameter layout,
and the reading of its model YAMLs.

Submodule names and order follow Multi YOLO V5's (TomMao23/multiyolov5) so that its checkpoints load key for key and
reproduce its outputs: its heads upsample with align_corners=True and keep BatchNorm in every Conv, including the
ones after global pooling (so they train with batches of two or more images). SegMaskLab (DeepLabV3+-style: ASPP on
the stride-16 neck, a stride-8 detail path from the backbone, no image pooling) and SegMaskBase (C3, a wide C3SPP,
dropout, conv) sit beside our SemanticPSP and SemanticBiSe as `--semantic-head lab|base` choices.

A Multi YOLO V5 YAML puts its head at layer 24, before Detect, and names its class count `n_segcls`;
`from_multiyolo_yaml` turns that into our layout (Detect the last head layer, the head in the `semantic:` section
numbered after it): reference layer 24 is our semantic.25 and its Detect 25 our model.24.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from models.common import C3, SPP, Conv, cat_channels
from models.registry import register
from models.semantic import SemanticHead, adaptive_avg_pools
from utils.errors import ModelConfigError

SEG_MASK_HEADS = ("SegMaskPSP", "SegMaskBiSe", "SegMaskLab", "SegMaskBase")


def _up(scale: int) -> nn.Upsample:
    return nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=True)


def _dilated(c: tuple[int, int], d: int) -> nn.Sequential:
    """3x3 dilated conv + BatchNorm + SiLU as a plain Sequential (keys 0.weight, 1.*: not fused, as the reference)."""
    return nn.Sequential(nn.Conv2d(c[0], c[1], 3, 1, d, dilation=d, bias=False), nn.BatchNorm2d(c[1]), nn.SiLU())


class CascadeRFB(nn.Module):
    """Multi YOLO V5's RFB2: 1x1 -> 3x3, then two dilated 3x3 convs in cascade (HDC), a 1x1 bypass and optionally
    a global branch (pooled, 1x1, broadcast); all concatenated and merged by a 1x1 Conv. Inner width c1 // reduce."""

    def __init__(self, c1: int, c2: int, reduce: int = 4, d: tuple[int, int] = (2, 3), global_branch: bool = False):
        super().__init__()
        c_ = c1 // reduce
        self.branch0 = nn.Sequential(Conv(c1, c_, 1), Conv(c_, c_, 3))
        self.branch1 = _dilated((c_, c_), d[0])
        self.branch2 = _dilated((c_, c_), d[1])
        self.branch3 = nn.Sequential(Conv(c1, c_, 1))
        if global_branch:
            self.branch4 = nn.Sequential(nn.AdaptiveAvgPool2d(1), Conv(c_, c_, 1))
        self.ConvLinear = Conv(c_ * (5 if global_branch else 4), c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c1, H, W) -> (B, c2, H, W)."""
        y3 = self.branch3(x)
        y0 = self.branch0(x)
        y1 = self.branch1(y0)
        y2 = self.branch2(y1)
        ys = [y0, y1, y2, y3]
        if hasattr(self, "branch4"):
            ys.append(self.branch4(y2).expand_as(y2))  # nearest upsampling of a 1x1 map is a broadcast
        return self.ConvLinear(cat_channels(ys))


class ASPPNoPool(nn.Module):
    """Atrous spatial pyramid pooling without the image-pooling branch: a 1x1 Conv and three dilated 3x3 branches
    (inner width c1 // reduce), merged by a 1x1 Conv."""

    def __init__(self, c1: int, c2: int, d: tuple[int, ...] = (3, 6, 9), reduce: int = 4):
        super().__init__()
        c_ = c1 // reduce
        self.branch0 = nn.Sequential(Conv(c1, c_, 1))
        self.branch1 = _dilated((c1, c_), d[0])
        self.branch2 = _dilated((c1, c_), d[1])
        self.branch3 = _dilated((c1, c_), d[2])
        self.ConvLinear = Conv(4 * c_, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c1, H, W) -> (B, c2, H, W)."""
        return self.ConvLinear(cat_channels([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)]))


class PoolPyramid(nn.Module):
    """PSPNet pyramid pooling with BatchNorm Convs: adaptive pools into 1, 2, 3, 6 bins -> Conv to c/4 -> bilinear
    (align_corners) back, concatenated after the map: c -> 2c channels."""

    def __init__(self, c1: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.bins = tuple(bins)
        for i in range(len(self.bins)):
            setattr(self, f"conv{i + 1}", Conv(c1, c1 // 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c, H, W) -> (B, 2c, H, W)."""
        size = x.shape[-2:]
        convs = [getattr(self, f"conv{i + 1}") for i in range(len(self.bins))]
        feats = [nn.functional.interpolate(cv(p), size, mode="bilinear", align_corners=True)
                 for cv, p in zip(convs, adaptive_avg_pools(x, self.bins))]
        return cat_channels([x, *feats])


class FeatureFusion(nn.Module):
    """BiSeNet's feature fusion: (concatenate) -> Conv(k) -> y + y * channel attention, the attention being global
    pool -> 1x1 -> SiLU -> 1x1 -> sigmoid, convolutions without bias or BatchNorm."""

    def __init__(self, c1: int, c2: int, k: int = 1, cat: bool = True):
        super().__init__()
        self.convblk = Conv(c1, c2, k)
        self.channel_attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c2, c2, 1, bias=False), nn.SiLU(),
                                               nn.Conv2d(c2, c2, 1, bias=False), nn.Sigmoid())
        self.cat = cat

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """Fuse and reweight channels."""
        y = self.convblk(cat_channels(x) if self.cat else x)
        return y * self.channel_attention(y) + y


class WideC3SPP(nn.Module):
    """Multi YOLO V5's C3SPP: a C3 whose inner block is an SPP widening c1*e to 1.5x (not upstream's C3SPP)."""

    def __init__(self, c1: int, c2: int, k: tuple[int, ...] = (5, 9, 13), e: float = 0.5):
        super().__init__()
        c_ = int(c1 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(c_ + int(c_ * 1.5), c2, 1)
        self.m = SPP(c_, int(c_ * 1.5), k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """SPP branch and bypass, concatenated and merged."""
        return self.cv3(cat_channels((self.m(self.cv1(x)), self.cv2(x))))


class _SegMask(SemanticHead):
    """Arguments as Multi YOLO V5 gives them (after ch and nc): hidden width c_hid (already width-scaled), n
    (depth-scaled; its meaning differs per head), shortcut (used by SegMaskBase's C3 only)."""

    def _out(self, out: torch.Tensor, aux: list[torch.Tensor] | None = None):
        return (out, aux or []) if self.training else out


@register
class SegMaskPSP(_SegMask):
    """Multi YOLO V5's default head: the three levels reduced to c_hid and upsampled to stride 8, a cascade RFB,
    pyramid pooling, a 3x3 feature fusion, a 1x1 classifier and an 8x upsample. No auxiliary head."""

    def __init__(self, ch: list[int], nc: int, c_hid: int = 256, n: int = 1, shortcut: bool = False):
        super().__init__(ch, nc)
        self.out = nn.Sequential(CascadeRFB(3 * c_hid, c_hid, reduce=6), PoolPyramid(c_hid),
                                 FeatureFusion(2 * c_hid, c_hid, k=3, cat=False), nn.Conv2d(c_hid, nc, 1), _up(8))
        self.m8 = nn.Sequential(Conv(ch[0], c_hid, 1))
        self.m32 = nn.Sequential(Conv(ch[2], c_hid, 1), _up(4))
        self.m16 = nn.Sequential(Conv(ch[1], c_hid, 1), _up(2))

    def forward(self, x: list[torch.Tensor]):
        """[P3/8, P4/16, P5/32] -> logits at the input size (in training: (logits, []))."""
        return self._out(self.out(cat_channels([self.m8(x[0]), self.m16(x[1]), self.m32(x[2])])))


@register
class SegMaskBiSe(_SegMask):
    """Multi YOLO V5's BiSeNet-style head, 128 channels at every scale (c_hid is ignored): cascade RFBs on strides 16
    and 32 (the latter with a global branch), 3x3 refine + 2x upsample steps, a 3x3 fusion with the stride-8 level,
    dropout, classifier, 8x upsample; in training also two auxiliary logits (from strides 8 and 16)."""

    def __init__(self, ch: list[int], nc: int, c_hid: int = 256, n: int = 1, shortcut: bool = False):
        super().__init__(ch, nc)
        self.m8 = nn.Sequential(Conv(ch[0], 128, 1))
        self.m16 = nn.Sequential(CascadeRFB(ch[1], 128, reduce=4))
        self.m32 = nn.Sequential(CascadeRFB(ch[2], 128, reduce=8, global_branch=True))
        self.up16 = nn.Sequential(Conv(128, 128, 3), _up(2))
        self.up32 = nn.Sequential(Conv(128, 128, 3), _up(2))
        self.out = nn.Sequential(FeatureFusion(256, 256, k=3), nn.Dropout(0.1), nn.Conv2d(256, nc, 1), _up(8))
        self.aux16 = nn.Sequential(Conv(128, 128, 3), nn.Conv2d(128, nc, 1), _up(8))
        self.aux32 = nn.Sequential(Conv(128, 128, 3), nn.Conv2d(128, nc, 1), _up(16))

    def forward(self, x: list[torch.Tensor]):
        """[P3/8, P4/16, P5/32] -> logits; in training (logits, [aux from stride 8, aux from stride 16])."""
        feat16 = self.up32(self.m32(x[2]))  # stride 16
        feat8 = self.up16(self.m16(x[1]) + feat16)  # stride 8
        out = self.out([self.m8(x[0]), feat8])
        return self._out(out, [self.aux16(feat8), self.aux32(feat16)] if self.training else None)


@register
class SegMaskLab(_SegMask):
    """DeepLabV3+-style head. Reads [backbone stride 8, neck stride 16]: detail path 1x1 -> 3x3 Conv to 48 channels;
    encoder 1x1 Conv to 2*c_hid, ASPP without image pooling (inner width reduced by 5 - n) to 256, 2x upsample;
    decoder fusion of both (1x1), 3x3 Conv to c_hid, 1x1 classifier, 8x upsample."""

    n_inputs = 2

    def __init__(self, ch: list[int], nc: int, c_hid: int = 256, n: int = 1, shortcut: bool = False):
        super().__init__(ch, nc)
        self.detail = nn.Sequential(Conv(ch[0], 48, 1), Conv(48, 48, 3))
        self.encoder = nn.Sequential(Conv(ch[1], 2 * c_hid, 1),
                                     ASPPNoPool(2 * c_hid, 256, d=(3, 6, 9), reduce=max(5 - n, 1)), _up(2))
        self.decoder = nn.Sequential(FeatureFusion(256 + 48, 256, k=1, cat=True), Conv(256, c_hid, 3),
                                     nn.Conv2d(c_hid, nc, 1), _up(8))

    def forward(self, x: list[torch.Tensor]):
        """[backbone P3/8, neck P4/16] -> logits at the input size (in training: (logits, []))."""
        return self._out(self.decoder([self.detail(x[0]), self.encoder(x[1])]))


@register
class SegMaskBase(_SegMask):
    """The light head: on the stride-8 neck level, C3 (n bottlenecks) to c_hid, a wide C3SPP to 1.5*c_hid, dropout,
    a 3x3 classifier without bias, 8x upsample."""

    n_inputs = 1

    def __init__(self, ch: list[int], nc: int, c_hid: int = 512, n: int = 1, shortcut: bool = False):
        super().__init__(ch, nc)
        c2 = int(c_hid * 1.5)
        self.m = nn.Sequential(C3(ch[0], c_hid, n, shortcut), WideC3SPP(c_hid, c2), nn.Dropout(0.1),
                               nn.Conv2d(c2, nc, 3, 1, 1, bias=False), _up(8))

    def forward(self, x: list[torch.Tensor]):
        """[neck P3/8] -> logits at the input size (in training: (logits, []))."""
        return self._out(self.m(x[0]))


def is_multiyolo_yaml(d: dict) -> bool:
    """True for a Multi YOLO V5 model dict: its head holds a SegMask* row (and it names its classes n_segcls)."""
    return any(isinstance(r, (list, tuple)) and len(r) == 4 and r[2] in SEG_MASK_HEADS for r in d.get("head") or [])


def from_multiyolo_yaml(d: dict) -> dict:
    """Our layout of a Multi YOLO V5 model dict: the SegMask row moves from before Detect to the `semantic:` section,
    n_segcls becomes nc_seg, the head's arguments [n_segcls, n, c_hid, shortcut] become [nc_seg, c_hid, n (depth-
    scaled, as the reference does), shortcut]. Layer numbers are unchanged except Detect's (one lower)."""
    src = d.get("yaml_file", "model yaml")
    head = list(d["head"])
    rows = [i for i, r in enumerate(head) if r[2] in SEG_MASK_HEADS]
    if len(rows) != 1 or rows[0] != len(head) - 2:
        raise ModelConfigError(f"{src}: a Multi YOLO V5 YAML has one SegMask head, the row just before Detect")
    if "n_segcls" not in d and "nc_seg" not in d:
        raise ModelConfigError(f"{src}: Multi YOLO V5 head {head[rows[0]][2]} needs n_segcls, the number of "
                               f"segmentation classes")
    f, _, name, args = head.pop(rows[0])
    args = list(args) + ["n_segcls", 1, 256, False][len(args):]  # the reference's defaults for missing ones
    gd = d.get("depth_multiple", 1.0)
    n = max(round(args[1] * gd), 1) if args[1] > 1 else args[1]
    out = {k: v for k, v in d.items() if k != "n_segcls"}
    out["nc_seg"] = int(d.get("nc_seg") or d["n_segcls"])
    out["head"] = head
    out["semantic"] = [[f, 1, name, ["nc_seg", args[2], n, args[3]]]]
    return out


def multiyolo_state_dict(sd: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """A Multi YOLO V5 state dict in our keys: its head layer n_layers-2 becomes semantic.(n_layers-1), its Detect
    (n_layers-1) becomes model.(n_layers-2); Detect's anchor_grid buffer (v5.0 kept one) is dropped."""
    seg, det = f"model.{n_layers - 2}.", f"model.{n_layers - 1}."
    out = {}
    for k, v in sd.items():
        if k.startswith(seg):
            out[f"semantic.{n_layers - 1}." + k[len(seg):]] = v
        elif k.startswith(det):
            if not k.endswith("anchor_grid"):
                out[f"model.{n_layers - 2}." + k[len(det):]] = v
        else:
            out[k] = v
    return out
