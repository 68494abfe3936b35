"""What the hub model returns: Detections (boxes, and instance masks or a semantic class map when the model has
them) and, for classifiers, Classifications. Both print, render, show, save, list and serialise the same way.

Images held and returned (ims, render(), crops) are HWC uint8 RGB arrays, the convention the hub model takes them in.
"""

from __future__ import annotations

import json
import os
import sys
from copy import copy
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.boxes import xyxy2xywh
from utils.log import LOGGER, colorstr
from utils.paths import increment_path
from utils.plots import Annotator, colors, save_one_box
from utils.tasks.segment.masks import masks2segments

BOX_KINDS = ("xyxy", "xyxyn", "xywh", "xywhn")
_COLUMNS = {"xyxy": ("xmin", "ymin", "xmax", "ymax"), "xywh": ("xcenter", "ycenter", "width", "height")}
_WRITABLE = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"}  # suffixes cv2.imwrite can encode


def _need_pandas(what: str):
    try:
        import pandas
    except ImportError:
        raise ImportError(f"{what}.pandas() needs pandas (pip install pandas); records(), tolist() and to_json() "
                          f"give the same tables without it") from None
    return pandas


def _has_display() -> bool:
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _notebook_shell():
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell if shell is not None and "IPKernelApp" in getattr(shell, "config", {}) else None


class Results:
    """What Detections and Classifications share: one entry per image, its name, the timings and the batch shape."""

    post_name = "NMS"  # what the post-processing step is called in the speed line
    kind = "results"

    def __init__(self, ims: list[np.ndarray], files: list[str], names: dict[int, str], t: tuple[float, ...],
                 shape: tuple[int, ...]):
        self.ims, self.files, self.names = ims, files, names
        self.t = tuple(t)  # ms per image: pre-process, inference, post-process
        self.s = tuple(shape)  # the batch the model ran on (B, 3, H, W)
        self.n = len(ims)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(self.tolist())

    def tolist(self) -> list[Results]:
        """One results object per image."""
        return [self._one(i) for i in range(self.n)]

    def _one(self, i: int) -> Results:
        raise NotImplementedError

    def _line(self, i: int) -> str:
        raise NotImplementedError

    def _draw(self, i: int, labels: bool) -> np.ndarray:
        raise NotImplementedError

    def __str__(self) -> str:
        lines = [f"image {i + 1}/{self.n}: {im.shape[0]}x{im.shape[1]} {self._line(i)}"
                 for i, im in enumerate(self.ims)]
        lines.append("Speed: %.1fms pre-process, %.1fms inference, %.1fms %s per image at shape %s"
                     % (*self.t, self.post_name, self.s))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"MT-YOLOv5 {type(self).__name__} instance\n{self}"

    def print(self) -> None:
        """Print one line per image and the speed line."""
        print(str(self))

    def render(self, labels: bool = True) -> list[np.ndarray]:
        """Annotated copies of the images (RGB); the images held are not modified."""
        return [self._draw(i, labels) for i in range(self.n)]

    def show(self, labels: bool = True) -> None:
        """Display the annotated images (notebook or image viewer); without a display, one warning and nothing else."""
        from PIL import Image

        ims = self.render(labels)
        shell = _notebook_shell()
        if shell is not None:
            from IPython.display import display

            for im in ims:
                display(Image.fromarray(im))
            return
        if not _has_display():
            LOGGER.warning("WARNING ⚠️ show(): no display available (headless); use save() or render() instead")
            return
        from PIL import ImageShow

        if not all([ImageShow.show(Image.fromarray(im), title=f) for im, f in zip(ims, self.files)]):
            LOGGER.warning("WARNING ⚠️ show(): no image viewer found; use save() or render() instead")

    def file_names(self) -> list[str]:
        """Per-image names to save under: the source name (suffix .jpg unless cv2 can write it), made unique."""
        out, seen = [], set()
        for i, f in enumerate(self.files):
            p = Path(f)
            name = p.name if p.suffix.lower() in _WRITABLE else f"{p.stem or f'image{i}'}.jpg"
            if name in seen:  # two inputs with the same name (different folders) must not overwrite each other
                name = f"{Path(name).stem}_{i}{Path(name).suffix}"
            seen.add(name)
            out.append(name)
        return out

    def save(self, labels: bool = True, save_dir: str | Path = "runs/detect/exp", exist_ok: bool = False) -> Path:
        """Write the annotated images to save_dir (exp2, exp3, ... when it exists, unless exist_ok); returns it."""
        save_dir = increment_path(save_dir, exist_ok=exist_ok, mkdir=True)
        for name, im in zip(self.file_names(), self.render(labels)):
            cv2.imwrite(str(save_dir / name), np.ascontiguousarray(im[..., ::-1]))
        LOGGER.info(f"Saved {self.n} image{'s' * (self.n != 1)} to {colorstr('bold', str(save_dir))}")
        return save_dir

    def records(self, *args, **kwargs) -> list[list[dict]]:
        raise NotImplementedError

    def to_json(self, *args, indent: int | None = None, **kwargs) -> str:
        """JSON text: one object per image with its file, height, width and records (see records())."""
        return json.dumps([{"file": f, "height": im.shape[0], "width": im.shape[1], self.kind: r}
                           for f, im, r in zip(self.files, self.ims, self.records(*args, **kwargs))], indent=indent)


class Detections(Results):
    """Per-image detections: pred[i] is (n, 6) xyxy, conf, class in the original image's pixels, best first.

    masks[i] (instance-segmentation models): (n, H, W) bool masks at the image's size, one per row of pred[i].
    semantic[i] (detection + semantic models): (H, W) class-id map at the image's size.
    """

    kind = "detections"

    def __init__(self, ims: list[np.ndarray], pred: list[torch.Tensor], files: list[str], names: dict[int, str],
                 t: tuple[float, ...], shape: tuple[int, ...], masks: list[torch.Tensor] | None = None,
                 semantic: list[torch.Tensor] | None = None, semantic_names: dict[int, str] | None = None):
        super().__init__(ims, files, names, t, shape)
        self.pred, self.masks, self.semantic, self.semantic_names = pred, masks, semantic, semantic_names
        gn = [torch.tensor([im.shape[1], im.shape[0]] * 2 + [1, 1], device=p.device, dtype=torch.float32)
              for im, p in zip(ims, pred)]
        self.xyxy = pred
        self.xywh = [xyxy2xywh(x) for x in pred]
        self.xyxyn = [x / g for x, g in zip(self.xyxy, gn)]
        self.xywhn = [x / g for x, g in zip(self.xywh, gn)]

    def _one(self, i: int) -> Detections:
        masks = None if self.masks is None else [self.masks[i]]
        semantic = None if self.semantic is None else [self.semantic[i]]
        return Detections([self.ims[i]], [self.pred[i]], [self.files[i]], self.names, self.t, (1, *self.s[1:]),
                          masks, semantic, self.semantic_names)

    def _name(self, c: int) -> str:
        return str(self.names.get(c, c)) if isinstance(self.names, dict) else str(c)

    def _line(self, i: int) -> str:
        cls, counts = self.pred[i][:, 5].unique(return_counts=True) if len(self.pred[i]) else ((), ())
        return ", ".join(f"{int(n)} {self._name(int(c))}{'s' * (int(n) > 1)}" for c, n in zip(cls, counts)) \
            or "(no detections)"

    def _draw(self, i: int, labels: bool) -> np.ndarray:
        ann = Annotator(self.ims[i][..., ::-1].copy())  # drawn in BGR with the palette detect.py uses
        if self.semantic is not None:  # detect.py's colours: Cityscapes' for Cityscapes classes, else its palette
            from utils.tasks.semantic.labels import is_cityscapes
            from utils.tasks.semantic.palette import colourise, overlay, palette_for

            names = self.semantic_names or {}
            n = max(len(names), int(self.semantic[i].max()) + 1)
            lut = palette_for(n, "cityscapes" if names and is_cityscapes(names) else None)
            ann.im[:] = overlay(ann.im, colourise(self.semantic[i], lut, bgr=True), 0.5)
        det = self.pred[i]
        if self.masks is not None and len(det):
            ann.masks(self.masks[i].cpu().numpy(), [colors(int(c), True) for c in det[:, 5].tolist()], alpha=0.5)
        for *box, conf, cls in reversed(det[:, :6].tolist()):  # best drawn last, on top
            c = int(cls)
            ann.box_label(box, f"{self._name(c)} {conf:.2f}" if labels else "", color=colors(c, True))
        return np.ascontiguousarray(ann.result()[..., ::-1])

    def crop(self, save: bool = True, save_dir: str | Path = "runs/detect/exp", exist_ok: bool = False) -> list[dict]:
        """Every detection cut out (box grown 2% + 10 px): dicts {box, conf, cls, label, im (RGB)}; saved to
        save_dir/crops/<class name>/<image stem>.jpg when save (never overwriting)."""
        save_dir = increment_path(save_dir, exist_ok=exist_ok, mkdir=True) if save else Path(save_dir)
        crops = []
        for i, name in enumerate(self.file_names()):
            bgr = self.ims[i][..., ::-1]
            for *box, conf, cls in self.pred[i][:, :6].tolist():
                c = int(cls)
                f = save_dir / "crops" / self._name(c) / f"{Path(name).stem}.jpg"
                im = save_one_box(box, bgr, file=f, BGR=False, save=save)  # BGR=False: the crop comes back RGB
                crops.append({"box": box, "conf": conf, "cls": c, "label": f"{self._name(c)} {conf:.2f}",
                              "im": np.ascontiguousarray(im)})
        if save:
            LOGGER.info(f"Saved {len(crops)} crop{'s' * (len(crops) != 1)} to {colorstr('bold', str(save_dir))}")
        return crops

    def records(self, kind: str = "xyxy") -> list[list[dict]]:
        """Per image, one dict per detection: box columns (xmin..ymax, or xcenter..height), confidence, class, name;
        kind 'xyxyn'/'xywhn' gives coordinates normalised by the image size. Instance masks add 'segment', the
        outline [[x, y], ...] of each mask in the same units."""
        if kind not in BOX_KINDS:
            raise ValueError(f"records: kind must be one of {', '.join(BOX_KINDS)}, got {kind!r}")
        cols = _COLUMNS[kind.rstrip("n")]
        out = []
        for i, rows in enumerate(self._boxes(kind)):
            recs = [{**dict(zip(cols, r[:4])), "confidence": r[4], "class": int(r[5]), "name": self._name(int(r[5]))}
                    for r in rows.tolist()]
            if self.masks is not None:
                h, w = self.ims[i].shape[:2]
                scale = np.array((w, h), np.float32) if kind.endswith("n") else np.ones(2, np.float32)
                for rec, seg in zip(recs, masks2segments(self.masks[i])):
                    rec["segment"] = (seg / scale).tolist()
            out.append(recs)
        return out

    def _boxes(self, kind: str) -> list[torch.Tensor]:
        """The (n, 6) tables in one of the four box forms, computed from pred (pandas() replaces the attributes)."""
        gn = [torch.tensor([im.shape[1], im.shape[0]] * 2 + [1, 1], dtype=torch.float32) for im in self.ims]
        boxes = [p[:, :6].detach().float().cpu() for p in self.pred]
        if kind.startswith("xywh"):
            boxes = [xyxy2xywh(b) for b in boxes]
        return [b / g for b, g in zip(boxes, gn)] if kind.endswith("n") else boxes

    def pandas(self) -> Detections:
        """A copy whose xyxy, xyxyn, xywh, xywhn are lists of per-image pandas DataFrames (needs pandas)."""
        pd = _need_pandas("Detections")
        new = copy(self)
        for k in BOX_KINDS:
            cols = [*_COLUMNS[k.rstrip("n")], "confidence", "class", "name"]
            setattr(new, k, [pd.DataFrame([{c: r[c] for c in cols} for r in recs], columns=cols)
                             for recs in self.records(k)])
        return new
