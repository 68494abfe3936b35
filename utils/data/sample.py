"""One training sample as it travels through the augmentations: the image with every kind of label it carries.

A Sample is a plain dict (cheap to build, pickles into DataLoader workers), typed here once:

    img        (H, W, 3) uint8 BGR
    cls        (n,) float32 class ids
    boxes      (n, 4) float32, xyxy in pixels of `img`; normalised xywh once `normalized` is True
    normalized True after normalize_boxes (the training-target layout, YOLOv5's); only the flips come after it
    segments   [] or one (k, 2) float32 pixel polygon per box, aligned with boxes (always pixels)
    semantic   None, or (H, W) uint8/uint16 per-pixel class ids with the set's ignore index where unknown
    shapes     letterbox info for validation ((h0, w0), ((h / h0, w / w0), (padw, padh))), None when augmented
    has_boxes / has_semantic   whether the sample is labelled with boxes / a mask (sets that mix label kinds)

Geometric transforms move img, boxes, segments and semantic together (the mask with nearest-neighbour sampling
and the ignore index as fill); colour transforms touch img only.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np

IGNORE_INDEX = 255  # the semantic contract's default ignore id: geometric ops fill new mask pixels with it


class Sample(TypedDict, total=False):
    img: np.ndarray
    cls: np.ndarray
    boxes: np.ndarray
    normalized: bool
    segments: list
    semantic: np.ndarray | None
    shapes: tuple | None
    has_boxes: bool
    has_semantic: bool


def new_sample(img: np.ndarray, cls=None, boxes=None, segments=None, semantic: np.ndarray | None = None,
               shapes: tuple | None = None, normalized: bool = False, has_boxes: bool = True,
               has_semantic: bool | None = None) -> Sample:
    """A Sample with empty labels where none are given (boxes xyxy pixels unless normalized)."""
    return Sample(img=img, cls=np.zeros(0, np.float32) if cls is None else cls,
                  boxes=np.zeros((0, 4), np.float32) if boxes is None else boxes,
                  segments=[] if segments is None else list(segments), semantic=semantic, shapes=shapes,
                  normalized=normalized, has_boxes=has_boxes,
                  has_semantic=semantic is not None if has_semantic is None else has_semantic)


def from_labels(img: np.ndarray, labels: np.ndarray, segments=(), **kw) -> Sample:
    """A Sample from YOLO-style rows (n, 5) [cls, x1, y1, x2, y2] (or normalised xywh with normalized=True)."""
    labels = np.asarray(labels, dtype=np.float32).reshape(-1, 5)
    return new_sample(img, labels[:, 0].copy(), labels[:, 1:5].copy(), segments, **kw)


def labels_of(sample: Sample) -> np.ndarray:
    """The sample's boxes as rows (n, 5) [cls, box], in the sample's box layout."""
    return np.concatenate((sample["cls"].reshape(-1, 1), sample["boxes"].reshape(-1, 4)), 1)
