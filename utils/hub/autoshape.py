"""AutoShape: the hub model. Takes images in any common form, letterboxes and batches them, predicts, and returns
Detections (boxes; instance masks or a semantic class map when the model has them) or Classifications.

    model = AutoShape(load_model('best.pt'))
    results = model(['a.jpg', Path('b.png'), pil_image, rgb_array], size=640)
    model.conf = 0.5; model.classes = [0, 2]   # NMS settings, or per call: model(im, conf=0.5)

Numpy arrays are RGB (upstream's convention): pass OpenCV's BGR images as `im[..., ::-1]`.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn as nn

from utils.checkpoint import task_of
from utils.data.sources import to_model_input
from utils.device import time_sync
from utils.hub.classifications import Classifications
from utils.hub.inputs import ImageInputError, to_rgb
from utils.hub.results import Detections
from utils.tasks import registry

NMS_KEYS = ("conf", "iou", "classes", "agnostic", "multi_label", "max_det")
PAD = 114  # the grey letterbox pads with, as in training and detect.py


def _ceil_to(x: float, stride: int) -> int:
    return int(np.ceil(x / stride) * stride)


class AutoShape(nn.Module):
    """Wraps an eval-mode model of any registered task; its task's own pre- and post-processing run around it, the
    same steps as the task's predict script."""

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
        self.task = task_of(model)  # the model's kind ('detect', 'segment', ...)
        entry = registry.for_kind(self.task)
        self.steps = entry.build()  # the task object whose preprocessing and post-processing the hub runs
        self.default_size = entry.hub_size
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

    def _letterboxes(self) -> bool:
        """Whether the task letterboxes (detection and its kin) rather than transforming each image its own way."""
        return self.steps.source_transform([self.stride, self.stride], self.stride) is None

    def _from_batch(self, t: torch.Tensor):
        """A ready (B,3,H,W) or (3,H,W) float 0-1 batch: run as it is, results in its own pixels."""
        x = t[None] if t.ndim == 3 else t
        if not x.is_floating_point() or x.shape[1] != self.ch:
            raise ImageInputError(f"a batch tensor must be float 0-1 of shape (B,{self.ch},H,W), got {x.dtype} "
                                  f"{tuple(x.shape)}; pass uint8 images as a list to have them converted")
        if self._letterboxes() and (x.shape[2] % self.stride or x.shape[3] % self.stride):
            raise ImageInputError(f"a batch tensor's height and width must be multiples of {self.stride}, got "
                                  f"{tuple(x.shape[2:])}; pass the images as a list to have them letterboxed")
        images = [np.ascontiguousarray((im.detach().float().cpu() * 255).round().clamp(0, 255).byte()
                                       .permute(1, 2, 0).numpy()) for im in x[:, :3]]
        shapes = [tuple(x.shape[2:])] * len(images)
        return self.steps.normalize(x.float()), images, [f"image{i}.jpg" for i in range(len(images))], shapes

    def _input_size(self, size) -> tuple[list[int], bool]:
        """The size each image is prepared at ([h, w]) and whether the letterbox pads to the stride only (auto)."""
        if size is None or isinstance(size, int):
            s = size or self.default_size
            return ([_ceil_to(s, self.stride)] * 2 if self._letterboxes() else [s, s]), True
        if len(size) != 2:
            raise ValueError(f"size {size}: give one int (longest side) or (height, width)")
        if not self._letterboxes():
            if size[0] != size[1]:
                raise ValueError(f"size {size}: this model takes square inputs (classifiers: a centre crop), pass "
                                 f"one int")
            return [int(size[0])] * 2, False
        return [_ceil_to(size[0], self.stride), _ceil_to(size[1], self.stride)], False

    def _preprocess(self, ims, size):
        """Images -> the task's model input batch (B,3,H,W) 0-1; each image's prepared (h, w) before padding."""
        items = list(ims) if isinstance(ims, (list, tuple)) else [ims]
        if not items:
            raise ImageInputError("no images given (an empty list)")
        if self.ch != 3:
            raise ImageInputError(f"this model takes {self.ch}-channel input, not images: pass a float 0-1 "
                                  f"(B,{self.ch},H,W) tensor")
        images, files = zip(*(to_rgb(im, i) for i, im in enumerate(items)))
        hw, auto = self._input_size(size)
        transform = self.steps.source_transform(hw, self.stride)
        # the predict scripts' preprocessing (their sources take BGR frames): letterbox, or the task's transform
        prepared = [to_model_input(np.ascontiguousarray(im[..., ::-1]), hw, self.stride, auto, transform)
                    for im in images]
        shapes = [tuple(b.shape[1:]) for b in prepared]
        h, w = max(s[0] for s in shapes), max(s[1] for s in shapes)
        # Mixed aspect ratios share one batch: padding goes right and bottom, so every image keeps the
        # coordinates of its own letterbox and is mapped back exactly as detect.py maps a single image.
        batch = np.full((len(prepared), 3, h, w), PAD, np.uint8)
        for b, im in zip(batch, prepared):
            b[:, :im.shape[1], :im.shape[2]] = im
        x = torch.from_numpy(batch).float() / 255
        return self.steps.normalize(x), list(images), list(files), shapes

    def _postprocess(self, out, x: torch.Tensor, images: list[np.ndarray], files: list[str],
                     shapes: list[tuple[int, int]], opts: dict):
        """The task's post-processing (NMS and the rest, as its predict script), then each image's results mapped
        back to it."""
        flags = argparse.Namespace(conf_thres=opts["conf"], iou_thres=opts["iou"], max_det=opts["max_det"],
                                   classes=opts["classes"], agnostic_nms=opts["agnostic"])
        post = self.steps.predict_settings(flags)
        if "multi_label" in post:
            post["multi_label"] = opts["multi_label"]
        preds = self.steps.postprocess(self.steps.split_eval_output(out)[0], **post)
        input_hw = tuple(x.shape[2:])
        results = [self.steps.to_original(r, input_hw, im.shape[:2], content_hw=hw)
                   for r, im, hw in zip(preds, images, shapes)]
        if all(r.probs is not None for r in results):
            return Classifications(images, [r.probs for r in results], files, self.names, (0, 0, 0), tuple(x.shape))
        masks = [r.masks for r in results] if any(r.masks is not None for r in results) else None
        semantic = [r.class_map for r in results] if any(r.class_map is not None for r in results) else None
        return Detections(images, [r.boxes for r in results], files, self.names, (0, 0, 0), tuple(x.shape), masks,
                          semantic, self.semantic_names)
