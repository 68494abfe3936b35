"""The training data pipeline must keep producing the very same numbers: augmented images, boxes, polygons, masks and
collated batches for fixed seeds were recorded (tests/data/augment_parity.npz) and are compared bit for bit, except
pixels: OpenCV's warps and resizes round differently between releases (5.0 -> 5.1 moved 21 images by at most 5 grey
levels on 0.02% of their pixels; 4.14 -> 5.0 moved 56 by a mean of at most 0.44), so images are compared within
PIXEL_MEAN_TOL and PIXEL_FAR_SHARE, which still catch a one-pixel shift, a flip or a brightness change of 2.

Regenerate only for an intended change of the augmentation numbers:
    PARITY_RECORD=1 python -m pytest tests/test_augment_parity.py
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from utils.data.sample import labels_of
from utils.tasks.detect.dataset import YoloDataset, create_dataloader
from utils.tasks.segment.dataset import SegmentDataset

FIXTURE = Path(__file__).parent / "data" / "augment_parity.npz"
RECORD = os.getenv("PARITY_RECORD") == "1"
SIZES = ((70, 100), (100, 70), (90, 90), (50, 120), (120, 60), (80, 80))  # (h, w), all resized for img_size 64
FULL = dict(hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, degrees=10.0, translate=0.1, scale=0.5, shear=3.0, perspective=0.001,
            flipud=0.5, fliplr=0.5, mosaic=1.0, mixup=0.5, copy_paste=0.5)


def _write_set(root: Path, polygons: bool) -> str:
    """Textured images with 2-3 coloured polygons each (PNG, so every run reads the same pixels)."""
    im_dir, lb_dir = root / "images" / "train", root / "labels" / "train"
    im_dir.mkdir(parents=True)
    lb_dir.mkdir(parents=True)
    for i, (h, w) in enumerate(SIZES):
        rng = np.random.default_rng(i)
        im = cv2.resize(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8), (w, h))
        rows = []
        for j in range(2 + i % 2):
            cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
            r = rng.uniform(0.12, 0.22) * min(h, w)
            t = np.sort(rng.uniform(0, 2 * np.pi, 6))
            poly = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
            cv2.fillPoly(im, [np.round(poly).astype(np.int32)], tuple(int(v) for v in rng.integers(0, 256, 3)))
            c = (i + j) % 4
            p = poly / [w, h]
            if polygons:
                rows.append(f"{c} " + " ".join(f"{v:.6f}" for v in p.ravel()))
            else:
                (x0, y0), (x1, y1) = p.min(0), p.max(0)
                rows.append(f"{c} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}")
        cv2.imwrite(str(im_dir / f"im{i}.png"), im)
        (lb_dir / f"im{i}.txt").write_text("\n".join(rows) + "\n")
    return str(im_dir)


def _sha(a) -> str:
    a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    return hashlib.sha1(np.ascontiguousarray(a).tobytes() + str((a.shape, a.dtype)).encode()).hexdigest()


def _pixels(a) -> np.ndarray:
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


PIXEL_MEAN_TOL = 1.0  # mean absolute difference, grey levels
PIXEL_FAR_SHARE = 0.01  # share of pixels allowed to be off by more than 8 grey levels


def _pixels_close(ref: np.ndarray, got: np.ndarray) -> bool:
    """Same shape and dtype, and equal within OpenCV's rounding between releases."""
    if ref.shape != got.shape or ref.dtype != got.dtype:
        return False
    d = np.abs(ref.astype(np.int16) - got.astype(np.int16))
    return bool(d.mean() <= PIXEL_MEAN_TOL and (d > 8).mean() <= PIXEL_FAR_SHARE)


def _same(key: str, ref: np.ndarray, got) -> bool:
    if key.endswith("/img"):
        return _pixels_close(ref, np.asarray(got))
    return ref.shape == np.shape(got) and np.array_equal(ref, got)


# --- the only place that knows the dataset API -----------------------------------------------------------------------
def _sample(ds, k):
    """(image HWC BGR, labels (n, 5) cls xywhn, pixel polygons, shapes) of one augmented sample."""
    s = ds.get_sample(k)
    return s["img"], labels_of(s), s["segments"], s["shapes"]


def _item(ds, k):
    """(image CHW tensor, targets (n, 6), path, shapes, masks or None) of dataset[k]."""
    out = ds[k]
    return out["img"], out["targets"], out["path"], out["shapes"], out.get("masks")


def _collated(batch):
    """(images, targets, paths, shapes, masks or None) of a collated batch."""
    return batch["img"], batch["targets"], batch["paths"], batch["shapes"], batch.get("masks")

# ----------------------------------------------------------------------------------------------------------------------


def _shapes_array(shapes) -> np.ndarray:
    if shapes is None:
        return np.zeros(0)
    (h0, w0), ((rh, rw), (pw, ph)) = shapes
    return np.array([h0, w0, rh, rw, pw, ph], np.float64)


def _record_samples(out: dict, name: str, ds, ks) -> None:
    for n, k in enumerate(ks):
        img, labels, segments, shapes = _sample(ds, k)
        out[f"{name}/{n}/img"] = _pixels(img)
        out[f"{name}/{n}/labels"] = np.asarray(labels)
        out[f"{name}/{n}/segments"] = _sha(np.concatenate(segments, 0) if len(segments) else np.zeros((0, 2)))
        out[f"{name}/{n}/seglen"] = np.array([len(s) for s in segments])
        out[f"{name}/{n}/shapes"] = _shapes_array(shapes)


def _record_items(out: dict, name: str, ds, ks) -> None:
    for n, k in enumerate(ks):
        img, targets, path, shapes, masks = _item(ds, k)
        out[f"{name}/{n}/img"] = _pixels(img)
        out[f"{name}/{n}/targets"] = targets.numpy()
        out[f"{name}/{n}/path"] = np.array(Path(path).name)
        out[f"{name}/{n}/shapes"] = _shapes_array(shapes)
        if masks is not None:
            out[f"{name}/{n}/masks"] = masks.numpy()


def _record_batch(out: dict, name: str, batch) -> None:
    imgs, targets, paths, shapes, masks = _collated(batch)
    out[f"{name}/img"] = _pixels(imgs)
    out[f"{name}/targets"] = targets.numpy()
    out[f"{name}/paths"] = np.array([Path(p).name for p in paths])
    out[f"{name}/shapes"] = np.array([_shapes_array(s) for s in shapes])
    if masks is not None:
        out[f"{name}/masks"] = masks.numpy()


def _seed(s: int) -> None:
    random.seed(s)
    np.random.seed(s)


def compute(tmp: Path) -> dict:
    """Every recorded output, keyed by case/sample/field."""
    poly, box = _write_set(tmp / "poly", True), _write_set(tmp / "box", False)
    out: dict = {}
    for name, path in (("poly", poly), ("box", box)):
        ds = YoloDataset(path, img_size=64, batch_size=4, augment=True, hyp=FULL)
        _seed(0)
        _record_samples(out, f"{name}_full", ds, [0, 1, 2, 3, 4, 5, 0, 3])
        ds = YoloDataset(path, img_size=64, batch_size=4, augment=True, hyp={**FULL, "mosaic": 0.0})
        _seed(1)
        _record_samples(out, f"{name}_single", ds, range(6))
        ds = YoloDataset(path, img_size=64, batch_size=4, augment=True, hyp={**FULL, "degrees": 0.0, "shear": 0.0,
                                                                          "perspective": 0.0, "mixup": 0.0})
        _seed(2)
        _record_samples(out, f"{name}_plain", ds, range(6))
    for rect in (False, True):
        ds = YoloDataset(box, img_size=64, batch_size=2, augment=False, rect=rect, pad=0.5)
        _record_items(out, f"val_rect{int(rect)}", ds, range(6))
        _record_batch(out, f"val_rect{int(rect)}_collate", YoloDataset.collate_fn([ds[i] for i in range(2)]))
    for overlap in (True, False):
        ds = SegmentDataset(poly, img_size=64, batch_size=4, augment=True, hyp=FULL, overlap=overlap,
                            downsample_ratio=4)
        _seed(3)
        _record_items(out, f"seg{int(overlap)}", ds, range(6))
        _seed(4)
        _record_batch(out, f"seg{int(overlap)}_collate", SegmentDataset.collate_fn([ds[i] for i in range(3)]))
    ds = YoloDataset(box, img_size=64, batch_size=4, augment=False)
    items = [ds[i] for i in range(6)]
    for s in range(3):
        _seed(s)
        _record_batch(out, f"quad{s}", YoloDataset.collate_fn4(items))
    _seed(5)
    loader, _ = create_dataloader(poly, 64, 3, 32, hyp=FULL, augment=True, workers=0, shuffle=True, seed=7)
    for n, batch in enumerate(loader):
        _record_batch(out, f"loader{n}", batch)
    return out


def test_augmented_outputs_match_the_recorded_ones(tmp_path):
    got = compute(tmp_path)
    if RECORD:
        FIXTURE.parent.mkdir(exist_ok=True)
        np.savez_compressed(FIXTURE, **got)
        pytest.skip(f"recorded {len(got)} arrays to {FIXTURE}")
    ref = np.load(FIXTURE)
    assert sorted(ref.files) == sorted(got)
    bad = [k for k in ref.files if not _same(k, ref[k], got[k])]
    assert not bad, f"{len(bad)} of {len(ref.files)} outputs changed, first: {bad[:8]}"
    assert sum(k.endswith("/labels") and len(ref[k]) > 0 for k in ref.files) > 20  # boxes were really compared


def test_pixel_tolerance_passes_opencv_rounding_and_catches_real_changes():
    rng = np.random.default_rng(0)
    im = cv2.resize(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8), (64, 64))
    rounding = np.where(rng.random(im.shape) < 0.2, np.minimum(im, 254) + 1, im).astype(np.uint8)  # as 4.14 vs 5.x
    assert _pixels_close(im, rounding)
    assert not _pixels_close(im, np.roll(im, 1, axis=1))  # translation off by one pixel
    assert not _pixels_close(im, im[:, ::-1])  # a flip
    assert not _pixels_close(im, np.clip(im.astype(int) + 2, 0, 255).astype(np.uint8))  # brightness
    assert not _pixels_close(im, im[:-1])
