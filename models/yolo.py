"""YOLOv5 models built from YAML: parse_model, BaseModel, Detection/Segmentation/ClassificationModel, build_model.

CLI: python models/yolo.py --cfg yolov5s.yaml [--batch-size 1] [--device ''] [--profile | --line-profile | --test]
"""

from __future__ import annotations

import ast
import math
import sys
import time
from copy import deepcopy
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402

import models.blocks  # noqa: E402, F401  (registers the hub YAMLs' blocks: Ghost, transformer, CSP variants)
import models.semantic  # noqa: E402, F401  (registers the semantic heads parse_model builds)
from models.common import Conv, fuse_conv_and_bn  # noqa: E402
from models.heads import Classify, Detect, Segment  # noqa: E402
from models.info import model_info  # noqa: E402
from models.multiyolo import from_multiyolo_yaml, is_multiyolo_yaml  # noqa: E402  (also registers its heads)
from models.registry import lookup  # noqa: E402
from utils.errors import ModelConfigError  # noqa: E402
from utils.log import LOGGER  # noqa: E402
from utils.paths import find_file  # noqa: E402

# How parse_model builds the torch.nn classes a YAML may name (our own blocks carry a `yaml_kind` attribute).
_NN_KINDS = {nn.Conv2d: "channels", nn.ConvTranspose2d: "channels", nn.BatchNorm2d: "batchnorm"}
_ACTIVATIONS = (nn.SiLU, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Mish, nn.GELU, nn.ELU, nn.Sigmoid,
                nn.Tanh, nn.Identity, nn.Hardsigmoid, nn.PReLU, nn.SELU, nn.CELU)


def make_divisible(x: float, divisor: int) -> int:
    """Smallest multiple of divisor that is >= x."""
    divisor = int(divisor.max()) if isinstance(divisor, torch.Tensor) else divisor
    return math.ceil(x / divisor) * divisor


def parse_activation(spec: str) -> nn.Module:
    """Build an activation from text like 'nn.LeakyReLU(0.1)' or 'nn.SiLU()' without eval (literal arguments only)."""
    try:
        node = ast.parse(spec.strip(), mode="eval").body
        call = node if isinstance(node, ast.Call) else None
        func = call.func if call else node
        args = [ast.literal_eval(a) for a in call.args] if call else []
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords} if call else {}
    except (SyntaxError, ValueError) as e:
        raise ModelConfigError(f"activation {spec!r}: expected the form 'nn.Name(literal args)' ({e})") from None
    parts = []
    while isinstance(func, ast.Attribute):
        parts.insert(0, func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.insert(0, func.id)
    name = parts[-1] if parts else ""
    cls = getattr(nn, name, None)
    if not parts or parts[:-1] not in ([], ["nn"], ["torch", "nn"]) or cls not in _ACTIVATIONS:
        raise ModelConfigError(f"activation {spec!r}: not a supported torch.nn activation "
                         f"({', '.join('nn.' + a.__name__ for a in _ACTIVATIONS)})")
    return cls(*args, **kwargs)


def _resolve_arg(a, names: dict):
    """YAML argument -> value: names ('nc', 'anchors', 'None', ...) by lookup, literals parsed, else the string."""
    if not isinstance(a, str):
        return a
    if a in names:
        return names[a]
    try:
        return ast.literal_eval(a)
    except (ValueError, SyntaxError):
        return a  # plain strings such as 'nearest'


def parse_model(d: dict, ch: list[int]) -> tuple[nn.Sequential, list[int]]:
    """Build the layer stack described by a model dict: backbone + head (+ semantic) rows [from, number, module,
    args], numbered in that order."""
    src = d.get("yaml_file", "model yaml")
    for key in ("nc", "backbone", "head"):
        if key not in d:
            raise ModelConfigError(f"{src}: missing required key {key!r}")
    LOGGER.info(f"\n{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<40}{'arguments':<30}")
    anchors, nc = d.get("anchors"), d["nc"]
    gd, gw = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0)
    na = (len(anchors[0]) // 2 if isinstance(anchors, list) else anchors) or 0
    no = na * (nc + 5)  # a conv that outputs exactly `no` channels is a prediction layer and is not width-scaled
    names = {"nc": nc, "nc_seg": d.get("nc_seg"), "anchors": anchors, "None": None, "True": True, "False": False}
    act = parse_activation(d["activation"]) if d.get("activation") else None
    if act is not None:
        LOGGER.info(f"activation: {d['activation']}")
    layers, save, c2 = [], [], ch[-1]
    for i, row in enumerate(d["backbone"] + d["head"] + (d.get("semantic") or [])):
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            raise ModelConfigError(f"{src}: layer {i}: expected [from, number, module, args], got {row!r}")
        f, n, m, args = row
        try:
            cls = lookup(m) if isinstance(m, str) else None
        except KeyError as e:
            raise ModelConfigError(f"{src}: layer {i}: {e.args[0]}") from None
        if cls is None:
            raise ModelConfigError(f"{src}: layer {i}: module must be a name, got {m!r}")
        args = [_resolve_arg(a, names) for a in (args or [])]
        n = n_ = max(round(n * gd), 1) if n > 1 else n
        kind = _NN_KINDS.get(cls) or getattr(cls, "yaml_kind", None)
        if kind in ("channels", "channels_repeat", "batchnorm", "classify") and not isinstance(f, int):
            raise ModelConfigError(f"{src}: layer {i}: {m} takes one input, got from={f!r}")
        if kind == "semantic" and not (isinstance(f, list) and isinstance(args[0] if args else None, int)):
            raise ModelConfigError(f"{src}: layer {i}: {m} needs from=[P3, P4, P5 layers] and args [nc_seg, width] "
                                   f"with nc_seg set (got from={f!r}, args={args!r})")
        if kind in ("channels", "channels_repeat"):
            c1, c2 = ch[f], args[0]
            if c2 != no:
                c2 = make_divisible(c2 * gw, 8)
            args = [c1, c2, *args[1:]]
            if kind == "channels_repeat":
                args.insert(2, n)  # the block repeats internally instead of being stacked n times
                n = 1
        elif kind == "batchnorm":
            args, c2 = [ch[f]], ch[f]
        elif kind == "concat":
            c2 = sum(ch[x] for x in f)
        elif kind == "contract":
            c2 = ch[f] * args[0] ** 2
        elif kind == "expand":
            c2 = ch[f] // args[0] ** 2
        elif kind == "detect":
            args.append([ch[x] for x in f])
            if isinstance(args[1], int):  # number of anchors per level only: placeholder anchors
                args[1] = [list(range(args[1] * 2))] * len(f)
            if issubclass(cls, Segment) and len(args) > 3:
                args[3] = make_divisible(args[3] * gw, 8)  # prototype channels follow the width multiple
        elif kind == "semantic":
            args = [[ch[x] for x in f], *args]
            if len(args) > 2:
                args[2] = make_divisible(args[2] * gw, 8)  # hidden width follows the width multiple
            c2 = args[1]
        elif kind == "classify":
            c1 = ch[f]
            args = [c1, *args]
            c2 = args[1]
        else:
            c2 = ch[f] if isinstance(f, int) else ch[f[0]]
        try:
            m_ = nn.Sequential(*(cls(*args) for _ in range(n))) if n > 1 else cls(*args)
        except (TypeError, ValueError) as e:
            raise ModelConfigError(f"{src}: layer {i}: cannot build {m} with arguments {args}: {e}") from None
        if act is not None:
            _set_activation(m_, act)
        t = f"{cls.__module__}.{cls.__name__}"
        n_params = sum(x.numel() for x in m_.parameters())
        m_.i, m_.f, m_.type, m_.np = i, f, t, n_params
        LOGGER.info(f"{i:>3}{str(f):>18}{n_:>3}{n_params:10.0f}  {t:<40}{str(args):<30}")
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(m_)
        if i == 0:
            ch = []
        ch.append(c2)
    return nn.Sequential(*layers), sorted(save)


def _set_activation(module: nn.Module, act: nn.Module) -> None:
    """Give every Conv that uses the default activation the YAML's one (one shared instance, as upstream counts).

    Swapping after construction keeps Conv.default_act a constant: no class state changes while a model is built.
    The supported activations have no parameters, so the seeded initialisation is the same as building with them.
    """
    for m in module.modules():
        if isinstance(m, Conv) and m.act is Conv.default_act:
            m.act = act


def load_yaml_cfg(cfg: str | Path | dict) -> dict:
    """Model dict from a dict (copied) or a YAML path/name (looked up under models/ when not found as given);
    Multi YOLO V5's layout (SegMask head before Detect, n_segcls) is turned into ours."""
    if isinstance(cfg, dict):
        d = deepcopy(cfg)
        return from_multiyolo_yaml(d) if is_multiyolo_yaml(d) else d
    path = find_file(cfg, search=("models", "models/segment", "models/hub"))
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8", errors="ignore"))
    except yaml.YAMLError as e:
        raise ModelConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(d, dict):
        raise ModelConfigError(f"{path}: expected a mapping with nc, backbone and head")
    for key in ("nc", "backbone", "head"):
        if key not in d:
            raise ModelConfigError(f"{path}: missing required key {key!r}")
    return from_multiyolo_yaml({**d, "yaml_file": path.name}) if is_multiyolo_yaml(d) else d


INPLACE_ACTIVATIONS = (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)


def initialize_weights(model: nn.Module) -> None:
    """Upstream's init: BatchNorm eps 1e-3 / momentum 0.03, activations in place (conv weights keep torch defaults)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
            m.momentum = 0.03
        elif isinstance(m, INPLACE_ACTIVATIONS):
            m.inplace = True


def set_inplace_activations(model: nn.Module, inplace: bool) -> None:
    """Run the activations in place (inference: no new buffer per layer) or not (training, see BaseModel.train)."""
    for m in model.modules():
        if isinstance(m, INPLACE_ACTIVATIONS) and hasattr(m, "inplace"):
            m.inplace = inplace


def check_anchor_order(m: Detect) -> None:
    """Flip the anchor levels if their sizes run against the stride order (anchors in pixels or grid units)."""
    a = m.anchors.prod(-1).mean(-1).view(-1)
    da, ds = a[-1] - a[0], m.stride[-1] - m.stride[0]
    if da and da.sign() != ds.sign():
        LOGGER.info("Reversing anchor order")
        m.anchors[:] = m.anchors.flip(0)


def scale_img(img: torch.Tensor, ratio: float = 1.0, same_shape: bool = False, gs: int = 32) -> torch.Tensor:
    """Resize a BCHW batch by ratio and pad (value 0.447) up to a multiple of gs unless same_shape."""
    if ratio == 1.0:
        return img
    h, w = img.shape[2:]
    s = (int(h * ratio), int(w * ratio))
    img = F.interpolate(img, size=s, mode="bilinear", align_corners=False)
    if not same_shape:
        h, w = (math.ceil(x * ratio / gs) * gs for x in (h, w))
    return F.pad(img, [0, w - s[1], 0, h - s[0]], value=0.447)


class BaseModel(nn.Module):
    """Runs `self.model` layer by layer, keeping the outputs later layers refer to (`self.save`)."""

    task = "detect"  # the kind of model, saved in checkpoints: which task's scripts serve it

    def train(self, mode: bool = True) -> BaseModel:
        """Train or eval mode; activations run in place only in eval mode.

        Autograd needs a SiLU's input for its gradient, so an in-place SiLU in training first clones that input:
        two extra passes over every activation map (yolov5s 640 b8 on a 2-core AVX2 EPYC: 175 ms of a 4.6 s step).
        At inference in-place saves a fresh buffer per layer. Upstream checkpoints arrive with in-place activations.
        """
        super().train(mode)
        set_inplace_activations(self, not mode)
        return self

    def forward(self, x: torch.Tensor, augment: bool = False, profile: bool = False, visualize=False):
        """Plain forward; `visualize` is a folder for feature-map images (or False)."""
        return self._forward_once(x, profile, visualize)

    def _forward_once(self, x: torch.Tensor, profile: bool = False, visualize=False):
        return self._run_layers(self.model, x, [], [] if profile else None, visualize)

    def _run_layers(self, layers: nn.Sequential, x, y: list, dt: list[float] | None = None, visualize=False):
        """Run `layers` in order, appending kept outputs to y (indexed by layer number); returns the last output.
        dt: profile into this list of times (None: no profiling)."""
        for m in layers:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            if dt is not None:
                self._profile_one_layer(m, x, dt)
            x = m(x)
            y.append(x if m.i in self.save else None)
            if visualize:
                _visualize(x, m.type, m.i, visualize)
        return x

    def _profile_one_layer(self, m: nn.Module, x, dt: list[float]) -> None:
        from torch.utils.flop_counter import FlopCounterMode

        last = m is getattr(self, "semantic", self.model)[-1]  # the semantic head runs after Detect
        arg = (lambda: list(x)) if isinstance(x, list) else (lambda: x)  # heads rewrite their input list in place
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            m(arg())
        t = time.perf_counter()
        with torch.no_grad():
            for _ in range(10):
                m(arg())
        dt.append((time.perf_counter() - t) * 100)  # ms per call (10 calls)
        if m is self.model[0]:
            LOGGER.info(f"{'time (ms)':>10s} {'GFLOPs':>10s} {'params':>10s}  module")
        LOGGER.info(f"{dt[-1]:10.2f} {counter.get_total_flops() / 1e9:10.2f} {m.np:10.0f}  {m.type}")
        if last:
            LOGGER.info(f"{sum(dt):10.2f} {'-':>10s} {'-':>10s}  Total")

    def fuse(self, verbose: bool = True) -> BaseModel:
        """Fold every Conv's BatchNorm into its convolution (inference only); verbose logs it and the summary."""
        if verbose:
            LOGGER.info("Fusing layers... ")
        for m in self.modules():
            if isinstance(m, Conv) and hasattr(m, "bn"):
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                delattr(m, "bn")
                m.forward = m.forward_fuse
        if verbose:
            self.info()
        return self

    def info(self, verbose: bool = False, imgsz: int = 640) -> str:
        """Log and return the summary line."""
        return model_info(self, verbose, imgsz)

    def _apply(self, fn, *args, **kwargs):
        self = super()._apply(fn, *args, **kwargs)
        m = self.model[-1] if len(self.model) else None
        if isinstance(m, Detect):  # cached grids are rebuilt lazily on the new device/dtype
            m.grid = [torch.empty(0) for _ in range(m.nl)]
            m.anchor_grid = [torch.empty(0) for _ in range(m.nl)]
        return self


def _visualize(x, module_type: str, stage: int, save_dir) -> None:
    try:
        from utils.plots import feature_visualization
    except ImportError:
        return
    feature_visualization(x, module_type, stage, save_dir=Path(save_dir))


def _cfg_and_file(cfg: str | Path | dict) -> tuple[dict, str | None]:
    """Model dict and its YAML file name; the name travels inside the dict so that checkpoints rebuilt from the
    dict still print 'YOLOv5s summary' rather than 'Model summary'."""
    d = load_yaml_cfg(cfg)
    if not isinstance(cfg, dict):
        d["yaml_file"] = Path(cfg).name
    return d, d.get("yaml_file")


class DetectionModel(BaseModel):
    """YOLOv5 detection model (also the base of SegmentationModel)."""

    def __init__(self, cfg: str | Path | dict = "yolov5s.yaml", ch: int = 3, nc: int | None = None,
                 anchors: list | int | None = None):
        super().__init__()
        self.yaml, self.yaml_file = _cfg_and_file(cfg)
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc and nc != self.yaml["nc"]:
            LOGGER.info(f"Overriding model.yaml nc={self.yaml['nc']} with nc={nc}")
            self.yaml["nc"] = nc
        if anchors:
            LOGGER.info(f"Overriding model.yaml anchors with anchors={anchors}")
            self.yaml["anchors"] = round(anchors) if isinstance(anchors, (int, float)) else anchors
        self.model, self.save = self._parse_layers(ch)
        self.nc = self.yaml["nc"]
        self.names = {i: f"class{i}" for i in range(self.nc)}
        self.inplace = self.yaml.get("inplace", True)
        self.hyp = None
        m = self.model[-1]
        if not isinstance(m, Detect):
            raise ModelConfigError(f"{self.yaml_file or 'model yaml'}: the last layer must be Detect or Segment, "
                             f"got {type(m).__name__}")
        m.inplace = self.inplace
        s = 256  # dry run in train mode to measure each level's stride
        bns = [b for b in self.modules() if isinstance(b, nn.BatchNorm2d)]
        momenta = [b.momentum for b in bns]
        for b in bns:  # upstream runs this pass before setting momentum 0.03: same BatchNorm statistics afterwards
            b.momentum = 0.1
        with torch.no_grad():
            out = self._forward_once(torch.zeros(1, ch, s, s))
        for b, mom in zip(bns, momenta):
            b.momentum = mom
        maps = out[0] if isinstance(m, Segment) else out
        m.stride = torch.tensor([s / x.shape[-2] for x in maps])
        check_anchor_order(m)
        m.anchors /= m.stride.view(-1, 1, 1)
        self.stride = m.stride
        self._initialize_biases()
        initialize_weights(self)
        self.info()
        LOGGER.info("")

    def _parse_layers(self, ch: int) -> tuple[nn.Sequential, list[int]]:
        """The detector's layers; a YAML's semantic section is dropped (SemanticDetectionModel builds it)."""
        if self.yaml.pop("semantic", None):
            self.yaml.pop("nc_seg", None)
            LOGGER.info("DetectionModel: the YAML's semantic section is left out (detector only)")
        return parse_model(self.yaml, ch=[ch])

    def forward(self, x: torch.Tensor, augment: bool = False, profile: bool = False, visualize=False):
        """Forward; augment=True runs test-time augmentation and returns (merged predictions, None)."""
        if augment:
            return self._forward_augment(x)
        return self._forward_once(x, profile, visualize)

    def _forward_augment(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        img_size = x.shape[-2:]
        gs = int(self.stride.max())
        y = []
        for si, fi in zip((1, 0.83, 0.67), (None, 3, None)):  # scales, flips (3 = left-right)
            xi = scale_img(x.flip(fi) if fi else x, si, gs=gs)
            yi = self._forward_once(xi)[0]
            y.append(self._descale_pred(yi, fi, si, img_size))
        y = self._clip_augmented(y)
        return torch.cat(y, 1), None

    def _descale_pred(self, p: torch.Tensor, flips: int | None, scale: float, img_size) -> torch.Tensor:
        """Map predictions of a scaled/flipped image back to the original image."""
        if self.inplace:
            p[..., :4] /= scale
            if flips == 2:
                p[..., 1] = img_size[0] - p[..., 1]
            elif flips == 3:
                p[..., 0] = img_size[1] - p[..., 0]
            return p
        x, y, wh = p[..., 0:1] / scale, p[..., 1:2] / scale, p[..., 2:4] / scale
        if flips == 2:
            y = img_size[0] - y
        elif flips == 3:
            x = img_size[1] - x
        return torch.cat((x, y, wh, p[..., 4:]), -1)

    def _clip_augmented(self, y: list[torch.Tensor]) -> list[torch.Tensor]:
        """Drop the largest-object level of the full-size pass and the smallest of the smallest pass (TTA tails)."""
        nl = self.model[-1].nl
        g = sum(4**x for x in range(nl))  # grid points per level relative to the coarsest
        i = y[0].shape[1] // g  # coarsest level of the first pass
        y[0] = y[0][:, :-i]
        i = (y[-1].shape[1] // g) * 4 ** (nl - 1)  # finest level of the last pass
        y[-1] = y[-1][:, i:]
        return y

    def _initialize_biases(self, cf: torch.Tensor | None = None) -> None:
        """Objectness prior of ~8 objects per 640 image, class prior 0.6/nc (or from class frequencies cf)."""
        m = self.model[-1]
        with torch.no_grad():
            for mi, s in zip(m.m, m.stride):
                b = mi.bias.view(m.na, -1)
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                b[:, 5:5 + m.nc] += math.log(0.6 / (m.nc - 0.99999)) if cf is None else torch.log(cf / cf.sum())


Model = DetectionModel  # upstream alias


class SegmentationModel(DetectionModel):
    """YOLOv5 instance-segmentation model (Segment head)."""

    task = "segment"

    def __init__(self, cfg: str | Path | dict = "yolov5s-seg.yaml", ch: int = 3, nc: int | None = None,
                 anchors: list | int | None = None):
        super().__init__(cfg, ch, nc, anchors)


class ClassificationModel(BaseModel):
    """YOLOv5 classifier: a detection backbone cut at `cutoff` with a Classify head in place of its last layer."""

    task = "classify"

    def __init__(self, cfg: str | Path | dict | None = None, model: DetectionModel | None = None, nc: int | None = None,
                 cutoff: int = 10, ch: int = 3):
        super().__init__()
        if model is None and cfg is None:
            raise ModelConfigError("ClassificationModel needs a cfg or a DetectionModel")
        if model is None:
            d = load_yaml_cfg(cfg)
            if _head_class(d) is Classify:
                self._from_yaml(cfg, nc, ch)
                return
            model = DetectionModel(cfg, ch=ch)
        self._from_detection_model(model, 1000 if nc is None else nc, cutoff)

    def _from_detection_model(self, model: DetectionModel, nc: int, cutoff: int) -> None:
        layers = model.model[:cutoff]
        m = layers[-1]
        c1 = m.conv.in_channels if hasattr(m, "conv") else m.cv1.conv.in_channels
        c = Classify(c1, nc)
        c.i, c.f, c.type, c.np = m.i, m.f, "models.heads.Classify", sum(x.numel() for x in c.parameters())
        layers[-1] = c
        self.model, self.save, self.nc = layers, [], nc
        self.stride = model.stride
        self.yaml_file = None
        rows = (model.yaml["backbone"] + model.yaml["head"])[: cutoff - 1]
        self.yaml = {k: v for k, v in model.yaml.items() if k not in ("anchors", "backbone", "head", "yaml_file")}
        self.yaml.update(nc=nc, backbone=deepcopy(rows), head=[[m.f, 1, "Classify", ["nc"]]])
        self.names = {i: f"class{i}" for i in range(nc)}

    def _from_yaml(self, cfg: str | Path | dict, nc: int | None, ch: int) -> None:
        self.yaml, self.yaml_file = _cfg_and_file(cfg)
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc and nc != self.yaml["nc"]:
            LOGGER.info(f"Overriding model.yaml nc={self.yaml['nc']} with nc={nc}")
            self.yaml["nc"] = nc
        self.nc = self.yaml["nc"]
        self.model, self.save = parse_model(self.yaml, ch=[ch])
        self.names = {i: f"class{i}" for i in range(self.nc)}
        initialize_weights(self)
        self.eval()  # measuring the backbone's stride must not touch BatchNorm statistics
        x, y = torch.zeros(1, ch, 256, 256), []
        with torch.no_grad():
            for layer in self.model[:-1]:
                if layer.f != -1:
                    x = y[layer.f] if isinstance(layer.f, int) else [x if j == -1 else y[j] for j in layer.f]
                x = layer(x)
                y.append(x if layer.i in self.save else None)
        self.train()
        self.stride = torch.tensor([256 / x.shape[-2]]) if x.ndim == 4 else torch.tensor([32.0])
        self.info()


def _head_class(d: dict) -> type | None:
    rows = d.get("head") or d.get("backbone") or []
    try:
        return lookup(rows[-1][2])
    except (KeyError, IndexError, TypeError):
        return None


if __name__ == "__main__":  # upstream's CLI: python models/yolo.py --cfg yolov5s.yaml
    from models.build import main

    main()
