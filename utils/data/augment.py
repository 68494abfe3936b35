"""Training augmentations that move pixels and labels together.

Conventions: images are HWC BGR uint8; `labels` are (n, 5) [cls, x1, y1, x2, y2] in pixels unless a function says
otherwise; `segments` is either [] or a list aligned with labels of (k, 2) pixel polygons. Keeping polygons aligned
with boxes through every transform lets a segmentation dataset build masks from the same pipeline.
"""

from __future__ import annotations

import math
import random

import cv2
import numpy as np

from utils.boxes import box_ioa, resample_segments, segment2box, xyn2xy, xywhn2xyxy

PAD_VALUE = 114


def box_candidates(box1: np.ndarray, box2: np.ndarray, wh_thr: float = 2, ar_thr: float = 100, area_thr: float = 0.1,
                   eps: float = 1e-16) -> np.ndarray:
    """Boxes worth keeping after a warp: box1 (4, n) before (scaled), box2 (4, n) after, xyxy -> bool (n,)."""
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def aligned(labels: np.ndarray, segments: list) -> bool:
    """True when there is one polygon per label (so polygons can travel with the boxes)."""
    return len(segments) == len(labels)


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


def random_perspective(im: np.ndarray, targets: np.ndarray = (), segments: list = (), degrees: float = 10,
                       translate: float = 0.1, scale: float = 0.1, shear: float = 10, perspective: float = 0.0,
                       border: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray, list]:
    """Random rotation/scale/shear/translation/perspective of an image with its boxes and polygons.

    targets (n, 5) cls xyxy px; a negative border crops (mosaic 2s -> s). Returns (im, targets, segments) with
    the boxes that stay usable (box_candidates); segments come back resampled and warped, aligned with targets.
    """
    targets = np.asarray(targets, dtype=np.float32).reshape(-1, 5)
    height, width = im.shape[0] + border[0] * 2, im.shape[1] + border[1] * 2
    M, s = perspective_matrix(im.shape[:2], (width, height), degrees, translate, scale, shear, perspective)
    if border[0] or border[1] or (M != np.eye(3)).any():
        if perspective:
            im = cv2.warpPerspective(im, M, dsize=(width, height), borderValue=(PAD_VALUE,) * 3)
        else:
            im = cv2.warpAffine(im, M[:2], dsize=(width, height), borderValue=(PAD_VALUE,) * 3)

    n = len(targets)
    use_segments = n > 0 and aligned(targets, segments)
    if not n:
        return im, targets, []
    if use_segments:  # polygons give tighter boxes than warped corners under rotation/shear
        segs = [_apply(M, s_, perspective) for s_ in resample_segments(list(segments))]
        new = np.stack([segment2box(s_, width, height) for s_ in segs]).astype(np.float32)
    else:
        corners = targets[:, [1, 2, 3, 4, 1, 4, 3, 2]].reshape(n * 4, 2)  # x1y1, x2y2, x1y2, x2y1
        xy = _apply(M, corners, perspective).reshape(n, 8)
        new = np.stack([xy[:, 0::2].min(1), xy[:, 1::2].min(1), xy[:, 0::2].max(1), xy[:, 1::2].max(1)], 1)
        new[:, [0, 2]] = new[:, [0, 2]].clip(0, width)
        new[:, [1, 3]] = new[:, [1, 3]].clip(0, height)
    keep = box_candidates(targets[:, 1:5].T * s, new.T, area_thr=0.01 if use_segments else 0.10)
    targets = targets[keep]
    targets[:, 1:5] = new[keep]
    return im, targets, [segs[i] for i in np.flatnonzero(keep)] if use_segments else []


def augment_hsv(im: np.ndarray, hgain: float = 0.5, sgain: float = 0.5, vgain: float = 0.5) -> None:
    """Random hue/saturation/value gains, applied in place through lookup tables."""
    if not (hgain or sgain or vgain):
        return
    r = np.random.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(im, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=r.dtype)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)  # OpenCV hue lives in [0, 180)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    im_hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(im_hsv, cv2.COLOR_HSV2BGR, dst=im)


def mixup(im: np.ndarray, labels: np.ndarray, im2: np.ndarray, labels2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend two same-size images (ratio ~ Beta(32, 32)) and keep the labels of both."""
    r = np.random.beta(32.0, 32.0)
    im = (im.astype(np.float32) * r + im2.astype(np.float32) * (1 - r)).astype(np.uint8)
    return im, np.concatenate((labels, labels2), 0)


def copy_paste(im: np.ndarray, labels: np.ndarray, segments: list,
               p: float = 0.5) -> tuple[np.ndarray, np.ndarray, list]:
    """Paste horizontally mirrored copies of instances where they overlap existing boxes by < 30% (needs polygons)."""
    n = len(labels)
    if not (p and n and aligned(labels, segments)):
        return im, labels, segments
    h, w = im.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    new_labels, new_segments = [labels], list(segments)
    for j in random.sample(range(n), k=round(p * n)):
        c, x1, y1, x2, y2 = labels[j]
        box = np.array([[w - x2, y1, w - x1, y2]], dtype=np.float32)
        if (box_ioa(box, labels[:, 1:5]) < 0.30).all():
            new_labels.append(np.array([[c, *box[0]]], dtype=np.float32))
            seg = segments[j].copy()
            seg[:, 0] = w - seg[:, 0]
            new_segments.append(seg)
            cv2.fillPoly(mask, [np.round(segments[j]).astype(np.int32)], 255)
    # the mask marks the source instances; mirroring both image and mask moves them to the pasted spots
    flipped, region = im[:, ::-1], mask[:, ::-1] > 0
    im = im.copy()
    im[region] = flipped[region]
    return im, np.concatenate(new_labels, 0), new_segments


def flip_lr(im: np.ndarray, labels_xywhn: np.ndarray, segments: list) -> tuple[np.ndarray, np.ndarray, list]:
    """Mirror left-right: image, normalised xywh labels and pixel polygons."""
    w = im.shape[1]
    im = cv2.flip(im, 1)  # contiguous: copying a negative-stride numpy view later costs ~40x this flip
    if len(labels_xywhn):
        labels_xywhn[:, 1] = 1 - labels_xywhn[:, 1]
    segments = [np.stack((w - s[:, 0], s[:, 1]), 1) for s in segments]
    return im, labels_xywhn, segments


def flip_ud(im: np.ndarray, labels_xywhn: np.ndarray, segments: list) -> tuple[np.ndarray, np.ndarray, list]:
    """Mirror top-bottom: image, normalised xywh labels and pixel polygons."""
    h = im.shape[0]
    im = cv2.flip(im, 0)
    if len(labels_xywhn):
        labels_xywhn[:, 2] = 1 - labels_xywhn[:, 2]
    segments = [np.stack((s[:, 0], h - s[:, 1]), 1) for s in segments]
    return im, labels_xywhn, segments


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


def load_mosaic(dataset, index: int, shuffle: bool = True) -> tuple[np.ndarray, np.ndarray, list]:
    """4-image mosaic around a random centre, then copy-paste and random_perspective down to img_size.

    `dataset` needs img_size, mosaic_border, indices, labels (cls xywhn), segments (normalised), hyp and
    load_image(i) -> (im, (h0, w0), (h, w)). Returns (im, labels cls xyxy px, aligned pixel polygons or []).
    """
    s, hyp = dataset.img_size, dataset.hyp
    yc, xc = (int(random.uniform(-x, 2 * s + x)) for x in dataset.mosaic_border)
    indices = [index] + random.choices(dataset.indices, k=3)
    if shuffle:
        random.shuffle(indices)
    canvas = None
    all_labels, all_segments, keep_segments = [], [], True
    for i, idx in enumerate(indices):
        img, _, (h, w) = dataset.load_image(idx)
        if canvas is None:
            canvas = np.full((s * 2, s * 2, img.shape[2]), PAD_VALUE, dtype=np.uint8)
        (x1a, y1a, x2a, y2a), (x1b, y1b, x2b, y2b) = mosaic_tile(i, xc, yc, w, h, s)
        canvas[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
        padw, padh = x1a - x1b, y1a - y1b
        labels, segments = dataset.labels[idx].copy(), dataset.segments[idx]
        if labels.size:
            labels[:, 1:] = xywhn2xyxy(labels[:, 1:], w, h, padw, padh)
        keep_segments &= aligned(labels, segments)
        all_labels.append(labels)
        all_segments.extend(xyn2xy(x, w, h, padw, padh) for x in segments)
    labels = np.concatenate(all_labels, 0)
    segments = all_segments if keep_segments else []
    for x in (labels[:, 1:], *segments):
        np.clip(x, 0, 2 * s, out=x)  # the canvas edge is where each tile was cut

    canvas, labels, segments = copy_paste(canvas, labels, segments, p=hyp.get("copy_paste", 0.0))
    return random_perspective(canvas, labels, segments, degrees=hyp["degrees"], translate=hyp["translate"],
                              scale=hyp["scale"], shear=hyp["shear"], perspective=hyp["perspective"],
                              border=dataset.mosaic_border)
