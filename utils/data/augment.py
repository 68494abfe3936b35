"""Training augmentations: each takes a Sample (utils/data/sample.py) and returns one, moving pixels and labels alike.

Boxes are xyxy pixels (the flips also take normalised xywh); `segments` is [] or one pixel polygon per box, kept
aligned so a segmentation dataset builds masks from the same pipeline; `semantic`, a per-pixel class mask, follows
every geometric transform with nearest-neighbour sampling and `mask_fill` (the ignore index) where no source pixel
lands. Colour transforms touch the image only. `interp` is the image's resampling (nearest makes a mask computed
from the image's own pixels stay equal to it, which the tests use).
"""

from __future__ import annotations

import math
import random

import cv2
import numpy as np

from utils.boxes import box_ioa, resample_segments, segment2box, xyn2xy, xywhn2xyxy, xyxy2xywhn
from utils.data.imageio import letterbox_geometry
from utils.data.sample import IGNORE_INDEX, Sample

PAD_VALUE = 114


def box_candidates(box1: np.ndarray, box2: np.ndarray, wh_thr: float = 2, ar_thr: float = 100, area_thr: float = 0.1,
                   eps: float = 1e-16) -> np.ndarray:
    """Boxes worth keeping after a warp: box1 (4, n) before (scaled), box2 (4, n) after, xyxy -> bool (n,)."""
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def aligned(sample: Sample) -> bool:
    """True when there is one polygon per box (so polygons can travel with the boxes)."""
    return len(sample["segments"]) == len(sample["boxes"])


def perspective_matrix(shape: tuple[int, int], out_wh: tuple[int, int], degrees: float, translate: float, scale: float,
                       shear: float, perspective: float) -> tuple[np.ndarray, float]:
    """A random 3x3 warp for an image of shape (h, w) into out_wh (w, h); returns (M, scale factor)."""
    h, w = shape
    C = np.eye(3)
    C[0, 2], C[1, 2] = -w / 2, -h / 2  # rotate and scale about the image centre
    P = np.eye(3)
    P[2, 0], P[2, 1] = random.uniform(-perspective, perspective), random.uniform(-perspective, perspective)
    R = np.eye(3)
    s = random.uniform(1 - scale, 1 + scale)
    R[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=random.uniform(-degrees, degrees), scale=s)
    S = np.eye(3)
    S[0, 1] = math.tan(math.radians(random.uniform(-shear, shear)))
    S[1, 0] = math.tan(math.radians(random.uniform(-shear, shear)))
    T = np.eye(3)
    T[0, 2] = random.uniform(0.5 - translate, 0.5 + translate) * out_wh[0]
    T[1, 2] = random.uniform(0.5 - translate, 0.5 + translate) * out_wh[1]
    return T @ S @ R @ P @ C, s


def _apply(M: np.ndarray, xy: np.ndarray, perspective: bool) -> np.ndarray:
    """Warp points (n, 2) by M."""
    xy = np.concatenate((xy, np.ones((len(xy), 1))), 1) @ M.T
    return xy[:, :2] / xy[:, 2:3] if perspective else xy[:, :2]


def _warp(im: np.ndarray, M: np.ndarray, wh: tuple[int, int], perspective: bool, interp: int, fill) -> np.ndarray:
    if perspective:
        return cv2.warpPerspective(im, M, dsize=wh, flags=interp, borderValue=fill)
    return cv2.warpAffine(im, M[:2], dsize=wh, flags=interp, borderValue=fill)


def random_perspective(sample: Sample, degrees: float = 10, translate: float = 0.1, scale: float = 0.1,
                       shear: float = 10, perspective: float = 0.0, border: tuple[int, int] = (0, 0),
                       interp: int = cv2.INTER_LINEAR, mask_fill: int = IGNORE_INDEX) -> Sample:
    """Random rotation/scale/shear/translation/perspective of a sample (pixel boxes).

    A negative border crops (mosaic 2s -> s). Keeps the boxes that stay usable (box_candidates); polygons come back
    resampled and warped, aligned with the boxes, and give tighter boxes than warped corners under rotation.
    """
    im, sem = sample["img"], sample.get("semantic")
    cls = np.asarray(sample["cls"], dtype=np.float32).reshape(-1)
    boxes = np.asarray(sample["boxes"], dtype=np.float32).reshape(-1, 4)
    height, width = im.shape[0] + border[0] * 2, im.shape[1] + border[1] * 2
    M, s = perspective_matrix(im.shape[:2], (width, height), degrees, translate, scale, shear, perspective)
    if border[0] or border[1] or (M != np.eye(3)).any():
        im = _warp(im, M, (width, height), bool(perspective), interp, (PAD_VALUE,) * 3)
        if sem is not None:
            sem = _warp(sem, M, (width, height), bool(perspective), cv2.INTER_NEAREST, mask_fill)
    out = {**sample, "img": im, "semantic": sem}

    n = len(boxes)
    use_segments = n > 0 and aligned(sample)
    if not n:
        return {**out, "cls": cls, "boxes": boxes, "segments": []}
    if use_segments:
        segs = [_apply(M, s_, perspective) for s_ in resample_segments(list(sample["segments"]))]
        new = np.stack([segment2box(s_, width, height) for s_ in segs]).astype(np.float32)
    else:
        corners = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # x1y1, x2y2, x1y2, x2y1
        xy = _apply(M, corners, perspective).reshape(n, 8)
        new = np.stack([xy[:, 0::2].min(1), xy[:, 1::2].min(1), xy[:, 0::2].max(1), xy[:, 1::2].max(1)], 1)
        new[:, [0, 2]] = new[:, [0, 2]].clip(0, width)
        new[:, [1, 3]] = new[:, [1, 3]].clip(0, height)
    keep = box_candidates(boxes.T * s, new.T, area_thr=0.01 if use_segments else 0.10)
    return {**out, "cls": cls[keep], "boxes": new[keep].astype(np.float32),
            "segments": [segs[i] for i in np.flatnonzero(keep)] if use_segments else []}


def random_scale_crop(sample: Sample, scale: tuple[float, float] = (0.5, 2.0), crop: tuple[int, int] = (640, 640),
                      interp: int = cv2.INTER_LINEAR, mask_fill: int = IGNORE_INDEX) -> Sample:
    """Rescale by a random factor in `scale`, then take a random crop (h, w), padding where the image is smaller.

    The segmentation recipe (Cityscapes): objects keep their shapes and neighbours, unlike a mosaic's cut tiles.
    Boxes are clipped to the crop and kept as upstream keeps warped boxes (box_candidates); polygons move along.
    """
    im, sem = sample["img"], sample.get("semantic")
    h, w = im.shape[:2]
    ch, cw = crop
    s = random.uniform(*scale)
    sw, sh = int(round(w * s)), int(round(h * s))
    x0 = random.randint(min(0, sw - cw), max(0, sw - cw))  # negative: the scaled image is narrower, pad around it
    y0 = random.randint(min(0, sh - ch), max(0, sh - ch))
    # pixel i covers [i, i+1] in label coordinates; OpenCV maps pixel centres, hence the half-pixel term
    M = np.array([[s, 0, 0.5 * (s - 1) - x0], [0, s, 0.5 * (s - 1) - y0]], np.float64)
    im = cv2.warpAffine(im, M, (cw, ch), flags=interp, borderValue=(PAD_VALUE,) * 3)
    if sem is not None:
        sem = cv2.warpAffine(sem, M, (cw, ch), flags=cv2.INTER_NEAREST, borderValue=mask_fill)
    out = {**sample, "img": im, "semantic": sem}
    cls, boxes = sample["cls"], np.asarray(sample["boxes"], np.float32).reshape(-1, 4)
    if not len(boxes):
        return {**out, "segments": []}
    shift = np.array([x0, y0], np.float32)
    if aligned(sample):
        segs = [s_ * s - shift for s_ in resample_segments(list(sample["segments"]))]
        new = np.stack([segment2box(s_, cw, ch) for s_ in segs]).astype(np.float32)
    else:
        segs = []
        new = boxes * s - np.tile(shift, 2)
        new[:, [0, 2]] = new[:, [0, 2]].clip(0, cw)
        new[:, [1, 3]] = new[:, [1, 3]].clip(0, ch)
    keep = box_candidates(boxes.T * s, new.T, area_thr=0.01 if segs else 0.10)
    return {**out, "cls": cls[keep], "boxes": new[keep],
            "segments": [segs[i] for i in np.flatnonzero(keep)] if segs else []}


def letterbox_sample(sample: Sample, new_shape: int | tuple[int, int], auto: bool = False, scaleup: bool = True,
                     stride: int = 32, interp: int = cv2.INTER_LINEAR,
                     mask_fill: int = IGNORE_INDEX) -> tuple[Sample, tuple[float, float], tuple[float, float]]:
    """letterbox (utils/data/imageio.py) of a sample: image, mask and pixel labels; returns (sample, ratio, pad)."""
    im, sem = sample["img"], sample.get("semantic")
    (nw, nh), ratio, pad, border = letterbox_geometry(im.shape[:2], new_shape, auto, False, scaleup, stride)
    if im.shape[:2] != (nh, nw):
        im = cv2.resize(im, (nw, nh), interpolation=interp)
        if sem is not None:
            sem = cv2.resize(sem, (nw, nh), interpolation=cv2.INTER_NEAREST)
    im = cv2.copyMakeBorder(im, *border, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    if sem is not None:
        sem = cv2.copyMakeBorder(sem, *border, cv2.BORDER_CONSTANT, value=mask_fill)
    boxes = np.asarray(sample["boxes"], np.float32).reshape(-1, 4)
    gain = np.array([ratio[0], ratio[1]] * 2, np.float32)
    offset = np.array([pad[0], pad[1]] * 2, np.float32)
    segs = [s_ * gain[:2] + offset[:2] for s_ in sample["segments"]]
    return {**sample, "img": im, "semantic": sem, "boxes": boxes * gain + offset, "segments": segs}, ratio, pad


def place_labels(labels: np.ndarray, segments: list, w: float, h: float, padw: float = 0,
                 padh: float = 0) -> dict:
    """Stored labels (n, 5) cls xywhn and normalised polygons -> {cls, boxes xyxy, segments} in pixels of an image
    drawn at size (w, h) with its top-left corner at (padw, padh)."""
    labels = labels.copy()
    if labels.size:
        labels[:, 1:] = xywhn2xyxy(labels[:, 1:], w, h, padw, padh)
    return {"cls": labels[:, 0].copy(), "boxes": labels[:, 1:5].copy(),
            "segments": [xyn2xy(x, w, h, padw, padh) for x in segments]}


def normalize_boxes(sample: Sample) -> Sample:
    """Pixel xyxy boxes -> xywh normalised to the image, clipped to it (the layout of training targets)."""
    boxes = sample["boxes"]
    if len(boxes):
        boxes = xyxy2xywhn(boxes, w=sample["img"].shape[1], h=sample["img"].shape[0], clip=True, eps=1e-3)
    return {**sample, "boxes": boxes, "normalized": True}


def augment_hsv(sample: Sample, hgain: float = 0.5, sgain: float = 0.5, vgain: float = 0.5) -> Sample:
    """Random hue/saturation/value gains on the image only, in place through lookup tables."""
    if not (hgain or sgain or vgain):
        return sample
    im = sample["img"]
    r = np.random.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(im, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=r.dtype)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)  # OpenCV hue lives in [0, 180)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    im_hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(im_hsv, cv2.COLOR_HSV2BGR, dst=im)
    return sample


def mixup(a: Sample, b: Sample, mask_fill: int = IGNORE_INDEX) -> Sample:
    """Blend two same-size samples (ratio ~ Beta(32, 32)), keeping the boxes of both; a mask pixel keeps its class
    where both masks agree and is ignored where they don't (a blended pixel belongs to neither)."""
    r = np.random.beta(32.0, 32.0)
    im = (a["img"].astype(np.float32) * r + b["img"].astype(np.float32) * (1 - r)).astype(np.uint8)
    sa, sb = a.get("semantic"), b.get("semantic")
    sem = None if sa is None or sb is None else np.where(sa == sb, sa, np.array(mask_fill, sa.dtype))
    segments = a["segments"] + b["segments"] if aligned(a) and aligned(b) else []
    return {**a, "img": im, "cls": np.concatenate((a["cls"], b["cls"]), 0),
            "boxes": np.concatenate((a["boxes"], b["boxes"]), 0), "segments": segments, "semantic": sem,
            "has_boxes": a.get("has_boxes", True) and b.get("has_boxes", True),
            "has_semantic": a.get("has_semantic", False) and b.get("has_semantic", False)}


def copy_paste(sample: Sample, p: float = 0.5) -> Sample:
    """Paste horizontally mirrored copies of instances where they overlap existing boxes by < 30% (needs polygons).
    The pasted pixels bring their mask classes along."""
    cls, boxes, segments = sample["cls"], sample["boxes"], sample["segments"]
    n = len(boxes)
    if not (p and n and aligned(sample)):
        return sample
    im, sem = sample["img"], sample.get("semantic")
    h, w = im.shape[:2]
    source = np.zeros((h, w), np.uint8)
    new_cls, new_boxes, new_segments = [cls], [boxes], list(segments)
    for j in random.sample(range(n), k=round(p * n)):
        x1, y1, x2, y2 = boxes[j]
        box = np.array([[w - x2, y1, w - x1, y2]], dtype=np.float32)
        if (box_ioa(box, boxes) < 0.30).all():
            new_cls.append(cls[j:j + 1])
            new_boxes.append(box)
            seg = segments[j].copy()
            seg[:, 0] = w - seg[:, 0]
            new_segments.append(seg)
            cv2.fillPoly(source, [np.round(segments[j]).astype(np.int32)], 255)
    # `source` marks the copied instances; mirroring it moves them to the pasted spots
    region = source[:, ::-1] > 0
    im = im.copy()
    im[region] = im[:, ::-1][region]
    if sem is not None:
        sem = sem.copy()
        sem[region] = sem[:, ::-1][region]
    return {**sample, "img": im, "semantic": sem, "cls": np.concatenate(new_cls, 0),
            "boxes": np.concatenate(new_boxes, 0), "segments": new_segments}


def flip_lr(sample: Sample) -> Sample:
    """Mirror left-right: image, mask, boxes (pixel xyxy or normalised xywh) and pixel polygons."""
    im, sem, boxes = sample["img"], sample.get("semantic"), sample["boxes"].copy()
    w = im.shape[1]
    im = cv2.flip(im, 1)  # contiguous: copying a negative-stride numpy view later costs ~40x this flip
    if len(boxes):
        if sample.get("normalized"):
            boxes[:, 0] = 1 - boxes[:, 0]
        else:
            boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    segments = [np.stack((w - s[:, 0], s[:, 1]), 1) for s in sample["segments"]]
    return {**sample, "img": im, "boxes": boxes, "segments": segments,
            "semantic": None if sem is None else cv2.flip(sem, 1)}


def flip_ud(sample: Sample) -> Sample:
    """Mirror top-bottom: image, mask, boxes (pixel xyxy or normalised xywh) and pixel polygons."""
    im, sem, boxes = sample["img"], sample.get("semantic"), sample["boxes"].copy()
    h = im.shape[0]
    im = cv2.flip(im, 0)
    if len(boxes):
        if sample.get("normalized"):
            boxes[:, 1] = 1 - boxes[:, 1]
        else:
            boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
    segments = [np.stack((s[:, 0], h - s[:, 1]), 1) for s in sample["segments"]]
    return {**sample, "img": im, "boxes": boxes, "segments": segments,
            "semantic": None if sem is None else cv2.flip(sem, 0)}


def mosaic_tile(i: int, xc: int, yc: int, w: int, h: int, s: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Where tile i (0 TL, 1 TR, 2 BL, 3 BR) of size (w, h) goes on a 2s canvas around (xc, yc):
    ((x1a, y1a, x2a, y2a) canvas region, (x1b, y1b, x2b, y2b) the matching region of the tile)."""
    if i == 0:
        a = max(xc - w, 0), max(yc - h, 0), xc, yc
        b = w - (a[2] - a[0]), h - (a[3] - a[1]), w, h
    elif i == 1:
        a = xc, max(yc - h, 0), min(xc + w, s * 2), yc
        b = 0, h - (a[3] - a[1]), min(w, a[2] - a[0]), h
    elif i == 2:
        a = max(xc - w, 0), yc, xc, min(s * 2, yc + h)
        b = w - (a[2] - a[0]), 0, w, min(a[3] - a[1], h)
    else:
        a = xc, yc, min(xc + w, s * 2), min(s * 2, yc + h)
        b = 0, 0, min(w, a[2] - a[0]), min(a[3] - a[1], h)
    return a, b


def load_mosaic(dataset, index: int, shuffle: bool = True) -> Sample:
    """4-image mosaic around a random centre, then copy-paste and random_perspective down to img_size.

    `dataset` (YoloDataset) gives img_size, mosaic_border, hyp, labels (cls xywhn), segments (normalised),
    image_interp, mask_fill, mosaic_pool(i) (the indices to draw partners from), load_image(i) -> (im, (h0, w0),
    (h, w)), load_semantic(i, (h0, w0), (h, w)) -> mask or None, and labelled(i) -> (has_boxes, has_semantic).
    """
    s, hyp = dataset.img_size, dataset.hyp
    yc, xc = (int(random.uniform(-x, 2 * s + x)) for x in dataset.mosaic_border)
    indices = [index] + random.choices(dataset.mosaic_pool(index), k=3)
    if shuffle:
        random.shuffle(indices)
    canvas = sem_canvas = None
    cls, boxes, segments, keep_segments = [], [], [], True
    has_boxes, has_semantic = True, False
    for i, idx in enumerate(indices):
        img, hw0, (h, w) = dataset.load_image(idx)
        sem = dataset.load_semantic(idx, hw0, (h, w))
        if canvas is None:
            canvas = np.full((s * 2, s * 2, img.shape[2]), PAD_VALUE, dtype=np.uint8)
        (x1a, y1a, x2a, y2a), (x1b, y1b, x2b, y2b) = mosaic_tile(i, xc, yc, w, h, s)
        canvas[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
        if sem is not None:
            if sem_canvas is None:
                sem_canvas = np.full((s * 2, s * 2), dataset.mask_fill, dtype=sem.dtype)
            sem_canvas[y1a:y2a, x1a:x2a] = sem[y1b:y2b, x1b:x2b]
        tile = place_labels(dataset.labels[idx], dataset.segments[idx], w, h, x1a - x1b, y1a - y1b)
        keep_segments &= len(tile["segments"]) == len(tile["boxes"])
        cls.append(tile["cls"])
        boxes.append(tile["boxes"])
        segments.extend(tile["segments"])
        tile_boxes, tile_semantic = dataset.labelled(idx)
        has_boxes, has_semantic = has_boxes and tile_boxes, has_semantic or tile_semantic
    sample = Sample(img=canvas, cls=np.concatenate(cls, 0), boxes=np.concatenate(boxes, 0),
                    segments=segments if keep_segments else [], semantic=sem_canvas, shapes=None, normalized=False,
                    has_boxes=has_boxes, has_semantic=has_semantic)
    for x in (sample["boxes"], *sample["segments"]):
        np.clip(x, 0, 2 * s, out=x)  # the canvas edge is where each tile was cut

    sample = copy_paste(sample, p=hyp.get("copy_paste", 0.0))
    return random_perspective(sample, degrees=hyp["degrees"], translate=hyp["translate"], scale=hyp["scale"],
                              shear=hyp["shear"], perspective=hyp["perspective"], border=dataset.mosaic_border,
                              interp=dataset.image_interp, mask_fill=dataset.mask_fill)
