"""Instance-mask operations: polygons to ground-truth masks, prototype masks to instance masks, mask IoU, outlines."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def polygon2mask(img_size: tuple[int, int], polygons: list[np.ndarray], color: int = 1,
                 downsample_ratio: int = 1) -> np.ndarray:
    """Fill pixel polygons into an (h, w) uint8 mask at full size, then resize it to 1/downsample_ratio."""
    mask = np.zeros(img_size, dtype=np.uint8)
    # Upstream truncates the vertices to integers before filling; the fixture figures depend on those exact pixels.
    pts = [np.asarray(p, dtype=np.float64).reshape(-1, 2).astype(np.int32) for p in polygons]
    cv2.fillPoly(mask, pts, color=color)
    nh, nw = img_size[0] // downsample_ratio, img_size[1] // downsample_ratio
    return cv2.resize(mask, (nw, nh)) if (nh, nw) != tuple(mask.shape) else mask


def polygons2masks(img_size: tuple[int, int], polygons: list[np.ndarray], color: int = 1,
                   downsample_ratio: int = 1) -> np.ndarray:
    """One binary mask per polygon: (n, h/r, w/r) uint8."""
    h, w = img_size[0] // downsample_ratio, img_size[1] // downsample_ratio
    masks = [polygon2mask(img_size, [p], color, downsample_ratio) for p in polygons]
    return np.stack(masks, 0) if masks else np.zeros((0, h, w), np.uint8)


def polygons2masks_overlap(img_size: tuple[int, int], polygons: list[np.ndarray],
                           downsample_ratio: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """One (h/r, w/r) index map where pixel k marks the k-th instance, instances sorted by area descending.

    Larger objects are painted first, so where polygons overlap the smaller (later) one wins and stays visible.
    Returns the map and the order that sorts the labels the same way (label k-1 owns id k).
    """
    h, w = img_size[0] // downsample_ratio, img_size[1] // downsample_ratio
    masks = polygons2masks(img_size, polygons, 1, downsample_ratio)
    order = np.argsort(-masks.reshape(len(masks), -1).sum(1), kind="stable")
    out = np.zeros((h, w), dtype=np.int32 if len(polygons) > 255 else np.uint8)
    for k, i in enumerate(order, start=1):
        out[masks[i] > 0] = k
    return out, order


def crop_mask(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Zero masks (n, h, w) outside each row's xyxy box (n, 4), given in pixel units of the masks."""
    _, h, w = masks.shape
    x1, y1, x2, y2 = boxes[:, :, None, None].unbind(1)  # each (n, 1, 1)
    cols = torch.arange(w, device=masks.device, dtype=boxes.dtype)[None, None, :]
    rows = torch.arange(h, device=masks.device, dtype=boxes.dtype)[None, :, None]
    return masks * ((cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2))


def process_mask(protos: torch.Tensor, coefs: torch.Tensor, boxes: torch.Tensor, shape: tuple[int, int],
                 upsample: bool = False) -> torch.Tensor:
    """Binary instance masks from prototypes (nm, mh, mw), coefficients (n, nm) and xyxy boxes in `shape` pixels.

    sigmoid(coefs @ protos), cropped to each box at prototype resolution; (n, mh, mw), or (n, *shape) when
    `upsample` (bilinear, then thresholded at 0.5).
    """
    nm, mh, mw = protos.shape
    ih, iw = shape
    masks = (coefs.float() @ protos.float().view(nm, -1)).sigmoid().view(-1, mh, mw)
    scale = torch.tensor((mw / iw, mh / ih, mw / iw, mh / ih), device=boxes.device, dtype=torch.float32)
    masks = crop_mask(masks, boxes.float() * scale)
    if upsample and len(masks):
        masks = F.interpolate(masks[None], tuple(shape), mode="bilinear", align_corners=False)[0]
    return masks.gt_(0.5)


def process_mask_native(protos: torch.Tensor, coefs: torch.Tensor, boxes: torch.Tensor,
                        shape0: tuple[int, int]) -> torch.Tensor:
    """High-resolution ('retina') masks in the original image (shape0 h, w); boxes already scaled to it."""
    nm, mh, mw = protos.shape
    masks = (coefs.float() @ protos.float().view(nm, -1)).sigmoid().view(-1, mh, mw)
    masks = unletterbox(masks, shape0)
    return crop_mask(masks, boxes.float()).gt_(0.5)


def unletterbox(masks: torch.Tensor, shape0: tuple[int, int]) -> torch.Tensor:
    """Masks (n, h, w) of a letterboxed image -> (n, *shape0): padding cut off, bilinear resize to the original."""
    n, mh, mw = masks.shape
    gain = min(mh / shape0[0], mw / shape0[1])
    pw, ph = (mw - shape0[1] * gain) / 2, (mh - shape0[0] * gain) / 2
    top, left = int(round(ph - 0.1)), int(round(pw - 0.1))
    bottom, right = int(round(mh - ph + 0.1)), int(round(mw - pw + 0.1))
    masks = masks[:, top:bottom, left:right].float()
    if not n:
        return masks.new_zeros((0, *shape0))
    return F.interpolate(masks[None], tuple(shape0), mode="bilinear", align_corners=False)[0]


def masks_to_original(masks: torch.Tensor, img_shape: tuple[int, int], shape0: tuple[int, int],
                      ratio_pad) -> torch.Tensor:
    """Masks (n, mh, mw) over a letterboxed input of img_shape (h, w) -> (n, *shape0) over the original image.

    ratio_pad ((gain, gain), (pad_w, pad_h)) is the loader's letterbox record, in input pixels; the masks may be at a
    lower resolution (prototypes: 1/4), so the padding is scaled to theirs before it is cut off.
    """
    n, mh, mw = masks.shape
    if not n:
        return masks.new_zeros((0, *shape0))
    gain, (pad_w, pad_h) = ratio_pad[0][0], ratio_pad[1]
    sy, sx = mh / img_shape[0], mw / img_shape[1]
    top, left = int(round(pad_h * sy)), int(round(pad_w * sx))
    bottom, right = int(round((pad_h + shape0[0] * gain) * sy)), int(round((pad_w + shape0[1] * gain) * sx))
    inner = masks[:, top:max(bottom, top + 1), left:max(right, left + 1)].float()
    return F.interpolate(inner[None], tuple(shape0), mode="bilinear", align_corners=False)[0]


def mask_iou(mask1: torch.Tensor, mask2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """IoU matrix (n, m) of flattened binary masks (n, hw) and (m, hw)."""
    inter = (mask1.float() @ mask2.float().T).clamp(0)
    union = mask1.sum(1)[:, None] + mask2.sum(1)[None] - inter
    return inter / (union + eps)


def gt_instance_masks(masks: torch.Tensor, nl: int, overlap: bool) -> torch.Tensor:
    """Per-instance binary ground-truth masks (nl, h, w) from an image's overlap map (1, h, w) or its binary stack."""
    if not overlap:
        return masks.float()
    ids = torch.arange(1, nl + 1, device=masks.device, dtype=masks.dtype).view(nl, 1, 1)
    return (masks[:1] == ids).float()


def masks2segments(masks: torch.Tensor, strategy: str = "largest") -> list[np.ndarray]:
    """Outline (k, 2) float32 pixel points of each binary mask: its largest contour, or all contours joined."""
    out = []
    for m in masks.int().cpu().numpy().astype(np.uint8):
        c = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
        if not c:
            out.append(np.zeros((0, 2), np.float32))
        elif strategy == "concat":
            out.append(np.concatenate([x.reshape(-1, 2) for x in c]).astype(np.float32))
        else:
            out.append(max(c, key=len).reshape(-1, 2).astype(np.float32))
    return out
