"""AutoShape: the hub model. Takes images in any common form, letterboxes and batches them, predicts, and returns
Detections (boxes; instance masks or a semantic class map when the model has them) or Classifications.

    model = AutoShape(load_model('best.pt'))
    results = model(['a.jpg', Path('b.png'), pil_image, rgb_array], size=640)
    model.conf = 0.5; model.classes = [0, 2]   # NMS settings, or per call: model(im, conf=0.5)

Numpy arrays are RGB (upstream's convention): pass OpenCV's BGR images as `im[..., ::-1]`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.boxes import scale_boxes
from utils.checkpoint import task_of
from utils.data.imageio import letterbox
from utils.device import time_sync
from utils.hub.classifications import Classifications
from utils.hub.inputs import ImageInputError, to_rgb
from utils.hub.results import Detections
from utils.nms import non_max_suppression
from utils.tasks.classify.transforms import IMAGENET_MEAN, IMAGENET_STD, center_crop
from utils.tasks.segment.masks import process_mask, unletterbox
from utils.tasks.semantic.rescale import logits_to_label_map

NMS_KEYS = ("conf", "iou", "classes", "agnostic", "multi_label", "max_det")
PAD = 114  # the grey letterbox pads with, as in training and detect.py


def _ceil_to(x: float, stride: int) -> int:
    return int(np.ceil(x / stride) * stride)


class AutoShape(nn.Module):
    """Wraps an eval-mode model (detection, instance segmentation, classification, or detection + semantic)."""

    conf = 0.25  # NMS confidence threshold
    iou = 0.45  # NMS IoU threshold
    agnostic = False  # class-agnostic NMS
    multi_label = False  # several labels per box
    classes = None  # keep only these class ids, e.g. [0, 15, 16]
    max_det = 1000  # maximum detections per image
    amp = False  # mixed precision on CUDA (ignored on CPU)

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        self.task = task_of(model)
        self.names = dict(getattr(model, "names", {}) or {})
        self.semantic_names = getattr(model, "seg_names", None)  # detection + semantic models only
        self.stride = max(int(torch.as_tensor(getattr(model, "stride", 32)).max()), 32)
        self.ch = int((getattr(model, "yaml", None) or {}).get("ch", 3))

    def forward(self, ims, size: int | tuple[int, int] | None = None, augment: bool = False, profile: bool = False,
                **nms) -> Detections | Classifications:
        """Predict on one input or a list (paths, URLs, bytes, PIL, RGB arrays, (3,H,W) tensors) or a (B,3,H,W)
        float 0-1 tensor (run as it is: sides must be multiples of the stride).

        size: longest side of the letterboxed input (default 640; 224 for classifiers), or (h, w) to letterbox
        every image into. Keyword arguments conf, iou, classes, agnostic, multi_label, max_det override the
        attributes of the same names for this call only.
        """
        unknown = sorted(set(nms) - set(NMS_KEYS))
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; NMS settings are {NMS_KEYS}")
        opts = {k: nms.get(k, getattr(self, k)) for k in NMS_KEYS}
        p = next(self.model.parameters())
        with torch.inference_mode():
            t0 = time_sync(p.device)
            if isinstance(ims, torch.Tensor) and ims.ndim in (3, 4):
                x, images, files, shapes = self._from_batch(ims)
            else:
                x, images, files, shapes = self._preprocess(ims, size)
            x = x.to(p.device, p.dtype).contiguous(memory_format=torch.channels_last)
            t1 = time_sync(p.device)
            with torch.autocast("cuda", enabled=bool(self.amp) and p.device.type == "cuda"):
                out = self.model(x, augment=augment, profile=profile)
            t2 = time_sync(p.device)
            results = self._postprocess(out, x, images, files, shapes, opts)
            t3 = time_sync(p.device)
        results.t = tuple((b - a) * 1e3 / len(images) for a, b in ((t0, t1), (t1, t2), (t2, t3)))
        return results

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Classifiers were trained on ImageNet-normalised input (as upstream's ToTensor + Normalize)."""
        if self.task != "classify":
            return x
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean.to(x.device)) / std.to(x.device)

    def _from_batch(self, t: torch.Tensor):
        """A ready (B,3,H,W) or (3,H,W) float 0-1 batch: run as it is, results in its own pixels."""
        x = t[None] if t.ndim == 3 else t
        if not x.is_floating_point() or x.shape[1] != self.ch:
            raise ImageInputError(f"a batch tensor must be float 0-1 of shape (B,{self.ch},H,W), got {x.dtype} "
                                  f"{tuple(x.shape)}; pass uint8 images as a list to have them converted")
        if self.task != "classify" and (x.shape[2] % self.stride or x.shape[3] % self.stride):
            raise ImageInputError(f"a batch tensor's height and width must be multiples of {self.stride}, got "
                                  f"{tuple(x.shape[2:])}; pass the images as a list to have them letterboxed")
        images = [np.ascontiguousarray((im.detach().float().cpu() * 255).round().clamp(0, 255).byte()
                                       .permute(1, 2, 0).numpy()) for im in x[:, :3]]
        shapes = [tuple(x.shape[2:])] * len(images)
        return self._normalise(x.float()), images, [f"image{i}.jpg" for i in range(len(images))], shapes

    def _preprocess(self, ims, size):
        """Images -> letterboxed batch (B,3,H,W) 0-1; each image's letterboxed (h, w) before the batch padding."""
        items = list(ims) if isinstance(ims, (list, tuple)) else [ims]
        if not items:
            raise ImageInputError("no images given (an empty list)")
        if self.ch != 3:
            raise ImageInputError(f"this model takes {self.ch}-channel input, not images: pass a float 0-1 "
                                  f"(B,{self.ch},H,W) tensor")
        images, files = zip(*(to_rgb(im, i) for i, im in enumerate(items)))
        if self.task == "classify":
            s = size or 224
            if not isinstance(s, int):
                if len(s) != 2 or s[0] != s[1]:
                    raise ValueError(f"size {s}: classifiers take square inputs, pass one int")
                s = int(s[0])
            boxed = [center_crop(im, s) for im in images]  # upstream's classification preprocessing
        elif size is None or isinstance(size, int):
            s = _ceil_to(size or 640, self.stride)
            # detect.py's letterbox: longest side to s, each side padded to the next multiple of the stride
            boxed = [letterbox(im, s, color=(PAD,) * 3, auto=True, stride=self.stride)[0] for im in images]
        else:
            if len(size) != 2:
                raise ValueError(f"size {size}: give one int (longest side) or (height, width)")
            hw = (_ceil_to(size[0], self.stride), _ceil_to(size[1], self.stride))
            boxed = [letterbox(im, hw, color=(PAD,) * 3, auto=False)[0] for im in images]
        shapes = [b.shape[:2] for b in boxed]
        h, w = max(s[0] for s in shapes), max(s[1] for s in shapes)
        # Mixed aspect ratios share one batch: padding goes right and bottom, so every image keeps the
        # coordinates of its own letterbox and is mapped back exactly as detect.py maps a single image.
        batch = np.full((len(boxed), h, w, 3), PAD, np.uint8)
        for b, im in zip(batch, boxed):
            b[:im.shape[0], :im.shape[1]] = im
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255
        return self._normalise(x), list(images), list(files), shapes

    def _postprocess(self, out, x: torch.Tensor, images: list[np.ndarray], files: list[str],
                     shapes: list[tuple[int, int]], opts: dict):
        if self.task == "classify":
            probs = list(torch.softmax(out.float(), 1))
            return Classifications(images, probs, files, self.names, (0, 0, 0), tuple(x.shape))
        out = out if isinstance(out, (list, tuple)) else (out,)
        # Eval outputs: detection (pred, maps); instance segmentation (pred, proto, maps); detection + semantic
        # (pred, maps, logits (B, nc_seg, H, W)).
        proto = out[1] if len(out) > 1 and isinstance(out[1], torch.Tensor) and out[1].ndim == 4 else None
        logits = out[2] if len(out) > 2 and isinstance(out[2], torch.Tensor) and out[2].ndim == 4 else None
        nm = proto.shape[1] if proto is not None else 0
        # NMS in float32: under AMP or .half() the boxes arrive in fp16, whose box areas overflow beyond 256 px sides
        dets = non_max_suppression(out[0].float(), opts["conf"], opts["iou"], opts["classes"], opts["agnostic"],
                                   opts["multi_label"], max_det=opts["max_det"], nm=nm)
        if logits is not None and tuple(logits.shape[2:]) != tuple(x.shape[2:]):
            logits = F.interpolate(logits.float(), size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)
        pred, masks, semantic = [], [] if proto is not None else None, [] if logits is not None else None
        for i, det in enumerate(dets):
            (lh, lw), shape0 = shapes[i], images[i].shape[:2]
            if proto is not None:  # as segment/predict.py: masks at input size, then the letterbox undone
                m = process_mask(proto[i], det[:, 6:], det[:, :4], tuple(x.shape[2:]), upsample=True)
                masks.append(unletterbox(m[:, :lh, :lw], shape0).gt_(0.5).bool())
            if logits is not None:
                cls_map = logits_to_label_map(logits[i, :, :lh, :lw], (lh, lw), shape0)  # as detect.py maps it
                semantic.append(cls_map.to(torch.uint8 if logits.shape[1] <= 256 else torch.int32))
            det = det[:, :6].clone()
            scale_boxes((lh, lw), det[:, :4], shape0)
            pred.append(det)
        return Detections(images, pred, files, self.names, (0, 0, 0), tuple(x.shape), masks, semantic,
                          self.semantic_names)
