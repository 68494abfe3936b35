"""Every augmentation must move labels exactly as it moves pixels.

Scenes are solid-colour rectangles (colour = class) on grey; after a transform, the pixels of each object's colour
near its output box must span that box.
"""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from utils.boxes import xywhn2xyxy
from utils.data.augment import (
    augment_hsv,
    box_candidates,
    copy_paste,
    flip_lr,
    flip_ud,
    mixup,
    mosaic_tile,
    random_perspective,
)
from utils.data.sample import from_labels, labels_of
from utils.tasks.detect.dataset import YoloDataset

GREY = np.array([114, 114, 114], np.float32)
COLOURS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255)]  # BGR, index = class
NO_AUG = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, degrees=0.0, translate=0.0, scale=0.0, shear=0.0, perspective=0.0,
              flipud=0.0, fliplr=0.0, mosaic=0.0, mixup=0.0, copy_paste=0.0)


def scene(h: int, w: int, rects: list[tuple[int, int, int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Grey image with filled rectangles (cls, x1, y1, x2, y2) -> (image, labels (n, 5) cls xyxy in pixel edges)."""
    im = np.full((h, w, 3), 114, np.uint8)
    for c, x1, y1, x2, y2 in rects:
        im[y1:y2, x1:x2] = COLOURS[c]
    return im, np.array(rects, dtype=np.float32).reshape(-1, 5)


def colour_box(im: np.ndarray, c: int, region: np.ndarray, pad: int = 6) -> np.ndarray | None:
    """xyxy (pixel edges) of the pixels nearer to colour c than to grey, inside region grown by pad."""
    h, w = im.shape[:2]
    x1, y1 = max(int(region[0]) - pad, 0), max(int(region[1]) - pad, 0)
    x2, y2 = min(int(np.ceil(region[2])) + pad, w), min(int(np.ceil(region[3])) + pad, h)
    crop = im[y1:y2, x1:x2].astype(np.float32)
    near = np.linalg.norm(crop - np.float32(COLOURS[c]), axis=2) < np.linalg.norm(crop - GREY, axis=2)
    ys, xs = np.nonzero(near)
    if not len(xs):
        return None
    return np.array([xs.min() + x1, ys.min() + y1, xs.max() + 1 + x1, ys.max() + 1 + y1], np.float32)


def assert_consistent(im: np.ndarray, labels_xyxy: np.ndarray, tol: float) -> None:
    assert len(labels_xyxy), "no labels left to check"
    for c, *box in labels_xyxy:
        box = np.array(box)
        found = colour_box(im, int(c), box)
        assert found is not None, f"no class-{int(c)} pixels near {box}"
        np.testing.assert_allclose(found, box, atol=tol, err_msg=f"class {int(c)}")


def tensor_to_bgr(t) -> np.ndarray:
    return np.ascontiguousarray(t.permute(1, 2, 0).numpy()[:, :, ::-1])


def perspective(im, labels, segments=(), **kw):
    """random_perspective on a sample -> (image, labels (n, 5) cls xyxy, polygons)."""
    s = random_perspective(from_labels(im, labels, segments), **kw)
    return s["img"], labels_of(s), s["segments"]


def item_labels_px(img, labels_out) -> np.ndarray:
    h, w = img.shape[:2]
    lb = labels_out[:, 1:].numpy().copy()
    lb[:, 1:] = xywhn2xyxy(lb[:, 1:], w, h)
    return lb


RECTS = [(0, 20, 30, 60, 70), (1, 90, 20, 140, 50), (2, 50, 100, 130, 140)]


@pytest.mark.parametrize("seed", range(6))
def test_random_perspective_scale_translate_is_tight(seed):
    random.seed(seed)
    im, labels = scene(160, 160, RECTS)
    out, lb, segs = perspective(im, labels, degrees=0, translate=0.1, scale=0.4, shear=0, perspective=0)
    assert out.shape == im.shape and segs == []
    assert_consistent(out, lb, tol=1.5)


def test_random_perspective_rotation_box_encloses_object():
    random.seed(3)
    im, labels = scene(160, 160, [(0, 60, 60, 100, 90)])
    out, lb, _ = perspective(im, labels, degrees=35, translate=0, scale=0, shear=0, perspective=0)
    assert_consistent(out, lb, tol=3)
    assert np.prod(lb[0, 3:5] - lb[0, 1:3]) > 1.1 * 40 * 30  # the box grew with the rotation


def test_random_perspective_with_polygons_gives_tight_boxes_and_aligned_segments():
    random.seed(1)
    im = np.full((160, 160, 3), 114, np.uint8)
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    poly = np.stack([80 + 30 * np.cos(t), 80 + 18 * np.sin(t)], 1).astype(np.float32)  # an ellipse
    cv2.fillPoly(im, [np.round(poly).astype(np.int32)], COLOURS[3])
    labels = np.array([[3, poly[:, 0].min(), poly[:, 1].min(), poly[:, 0].max(), poly[:, 1].max()]], np.float32)
    random.seed(5)
    out, lb, segs = perspective(im, labels, [poly], degrees=40, translate=0, scale=0, shear=0, perspective=0)
    random.seed(5)
    _, lb_corners, _ = perspective(im, labels, degrees=40, translate=0, scale=0, shear=0, perspective=0)
    assert len(segs) == len(lb) == 1
    assert_consistent(out, lb, tol=2.5)
    s = segs[0]
    np.testing.assert_allclose([s[:, 0].min(), s[:, 1].min(), s[:, 0].max(), s[:, 1].max()], lb[0, 1:], atol=1e-3)
    area = np.prod(lb[0, 3:5] - lb[0, 1:3])
    assert area < 0.9 * np.prod(lb_corners[0, 3:5] - lb_corners[0, 1:3])  # polygons beat warped corners


def test_random_perspective_crop_border_and_drops_lost_boxes():
    random.seed(0)
    im, labels = scene(200, 200, [(0, 0, 0, 12, 12), (1, 80, 80, 120, 120)])
    out, lb, _ = perspective(im, labels, degrees=0, translate=0, scale=0, shear=0, border=(-50, -50))
    assert out.shape == (100, 100, 3)
    assert lb[:, 0].tolist() == [1]  # the corner box fell outside the centre crop
    assert_consistent(out, lb, tol=1)


def test_box_candidates_rules():
    before = np.array([[0, 0, 100, 100]] * 4, np.float32).T
    after = np.array([[0, 0, 50, 50], [0, 0, 2, 50], [0, 0, 200, 1.9], [0, 0, 20, 20]], np.float32).T
    assert box_candidates(before, after).tolist() == [True, False, False, False]  # area 4% < 10%
    assert box_candidates(before, after, area_thr=0.01).tolist() == [True, False, False, True]


def test_flips_move_labels_and_polygons_with_pixels():
    im, labels = scene(80, 120, [(0, 10, 5, 40, 25)])
    h, w = im.shape[:2]
    xywhn = np.array([[0, 25 / w, 15 / h, 30 / w, 20 / h]], np.float32)
    seg = [np.array([[10, 5], [40, 5], [40, 25], [10, 25]], np.float32)]
    s = flip_ud(flip_lr(from_labels(im, xywhn.copy(), seg, normalized=True)))
    out, lb, segs = s["img"], labels_of(s), s["segments"]
    px = lb.copy()
    px[:, 1:] = xywhn2xyxy(lb[:, 1:], w, h)
    assert_consistent(out, px, tol=0.01)
    np.testing.assert_allclose(px[0, 1:], [80, 55, 110, 75], atol=1e-4)
    np.testing.assert_allclose(segs[0].min(0), [80, 55]) and np.testing.assert_allclose(segs[0].max(0), [110, 75])


def test_flips_equal_numpy_mirrors_and_are_contiguous():
    im = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    for flip, ref in ((flip_lr, im[:, ::-1]), (flip_ud, im[::-1])):
        out = flip(from_labels(im, np.zeros((0, 5), np.float32)))["img"]
        assert out.flags.c_contiguous and np.array_equal(out, ref)


def test_mixup_keeps_both_label_sets_and_blends():
    np.random.seed(0)
    a, la = scene(64, 64, [(0, 5, 5, 20, 20)])
    b, lbb = scene(64, 64, [(1, 40, 40, 60, 60)])
    s = mixup(from_labels(a, la), from_labels(b, lbb))
    out, lb = s["img"], labels_of(s)
    assert out.shape == a.shape and out.dtype == np.uint8 and lb.shape == (2, 5)
    assert (np.abs(out[10, 10].astype(int) - 114) > 20).any() and (np.abs(out[50, 50].astype(int) - 114) > 20).any()
    assert (out[30, 30] == 114).all()


def test_copy_paste_mirrors_instances_with_their_pixels():
    random.seed(0)
    im, labels = scene(64, 100, [(4, 10, 20, 30, 40)])
    seg = [np.array([[10, 20], [30, 20], [30, 40], [10, 40]], np.float32)]
    s = copy_paste(from_labels(im, labels, seg), p=1.0)
    out, lb, segs = s["img"], labels_of(s), s["segments"]
    assert len(lb) == len(segs) == 2
    np.testing.assert_allclose(lb[1], [4, 70, 20, 90, 40])
    assert_consistent(out, lb, tol=1)
    assert (im[20:40, 70:90] == 114).all()  # the input image is not modified


def test_augment_hsv_in_place_and_zero_gain_is_identity():
    im, _ = scene(32, 32, [(0, 4, 4, 20, 20)])
    ref = im.copy()
    augment_hsv(from_labels(im, np.zeros((0, 5))), 0, 0, 0)
    assert (im == ref).all()
    np.random.seed(1)
    augment_hsv(from_labels(im, np.zeros((0, 5))), 0.5, 0.5, 0.5)
    assert im.dtype == np.uint8 and not (im == ref).all()


def test_mosaic_tiles_meet_at_the_centre():
    s, xc, yc = 64, 70, 50
    for i, (w, h) in enumerate([(64, 40), (30, 64), (64, 64), (50, 20)]):
        (x1a, y1a, x2a, y2a), (x1b, y1b, x2b, y2b) = mosaic_tile(i, xc, yc, w, h, s)
        assert (x2a - x1a, y2a - y1a) == (x2b - x1b, y2b - y1b)  # same size on both sides
        assert (x2a if i in (0, 2) else x1a) == xc and (y2a if i in (0, 1) else y1a) == yc


def make_dataset(tmp_path, n: int = 4, h: int = 96, w: int = 96, polygons: bool = False) -> str:
    """n images, each with two rectangles of distinct classes, 20 px away from the edges."""
    im_dir, lb_dir = tmp_path / "images", tmp_path / "labels"
    im_dir.mkdir(parents=True)
    lb_dir.mkdir(parents=True)
    for i in range(n):
        c1, c2 = i % 5, (i + 2) % 5
        rects = [(c1, 20, 20, 45, 40 + i), (c2, 55, 50, 76 - i, 76)]
        im, labels = scene(h, w, [(c, x1 * w // 96, y1 * h // 96, x2 * w // 96, y2 * h // 96)
                                  for c, x1, y1, x2, y2 in rects])
        cv2.imwrite(str(im_dir / f"{i}.png"), im)
        rows = []
        for c, x1, y1, x2, y2 in labels:
            if polygons:
                pts = [x1, y1, x2, y1, x2, y2, x1, y2]
                rows.append(f"{int(c)} " + " ".join(f"{v / (w if k % 2 == 0 else h):.6f}" for k, v in enumerate(pts)))
            else:
                rows.append(f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} "
                            f"{(y2 - y1) / h:.6f}")
        (lb_dir / f"{i}.txt").write_text("\n".join(rows) + "\n")
    return str(im_dir)


def test_mosaic_labels_follow_pixels(tmp_path):
    hyp = {**NO_AUG, "mosaic": 1.0, "translate": 0.1, "scale": 0.5}
    ds = YoloDataset(make_dataset(tmp_path), img_size=64, batch_size=4, augment=True, hyp=hyp)
    random.seed(0)
    checked = 0
    for k in range(8):
        item = ds[k % len(ds)]
        img, labels_out, shapes = item["img"], item["targets"], item["shapes"]
        assert shapes is None and img.shape == (3, 64, 64)
        if len(labels_out):
            bgr = tensor_to_bgr(img)
            assert_consistent(bgr, item_labels_px(bgr, labels_out), tol=2)
            checked += len(labels_out)
    assert checked >= 8


@pytest.mark.parametrize("rect", [False, True])
def test_letterbox_labels_follow_pixels(tmp_path, rect):
    ds = YoloDataset(make_dataset(tmp_path, h=60, w=110), img_size=64, batch_size=2, augment=False, rect=rect)
    for k in range(len(ds)):
        item = ds[k]
        img, labels_out, ((h0, w0), _) = item["img"], item["targets"], item["shapes"]
        assert (h0, w0) == (60, 110)
        assert img.shape[1:] == ((64, 64) if not rect else tuple(ds.batch_shapes[ds.batch[k]]))
        bgr = tensor_to_bgr(img)
        assert_consistent(bgr, item_labels_px(bgr, labels_out), tol=1.5)


def test_flip_and_perspective_in_dataset_follow_pixels(tmp_path):
    hyp = {**NO_AUG, "fliplr": 1.0, "flipud": 1.0, "scale": 0.3, "translate": 0.1}
    ds = YoloDataset(make_dataset(tmp_path), img_size=64, batch_size=2, augment=True, hyp=hyp, rect=False)
    ds.mosaic = False
    random.seed(2)
    for k in range(len(ds)):
        item = ds[k]
        img, labels_out = item["img"], item["targets"]
        bgr = tensor_to_bgr(img)
        assert_consistent(bgr, item_labels_px(bgr, labels_out), tol=2)


def test_mixup_of_mosaics_keeps_labels_inside_image(tmp_path):
    hyp = {**NO_AUG, "mosaic": 1.0, "mixup": 1.0, "scale": 0.2}
    ds = YoloDataset(make_dataset(tmp_path), img_size=64, batch_size=2, augment=True, hyp=hyp)
    random.seed(0)
    np.random.seed(0)
    item = ds[0]
    img, labels_out = item["img"], item["targets"]
    assert img.shape == (3, 64, 64) and len(labels_out) > 4  # labels of two mosaics
    assert (labels_out[:, 2:] >= 0).all() and (labels_out[:, 2:] <= 1).all()


def test_polygons_travel_with_boxes_through_the_pipeline(tmp_path):
    hyp = {**NO_AUG, "mosaic": 1.0, "degrees": 15.0, "scale": 0.3, "fliplr": 1.0}
    ds = YoloDataset(make_dataset(tmp_path, polygons=True), img_size=64, batch_size=2, augment=True, hyp=hyp)
    random.seed(4)
    for k in range(3):
        s = ds.get_sample(k)
        img, labels, segments = s["img"], labels_of(s), s["segments"]
        assert len(segments) == len(labels) > 0
        h, w = img.shape[:2]
        boxes = xywhn2xyxy(labels[:, 1:], w, h)
        for s, b in zip(segments, boxes):
            inside = s[(s[:, 0] >= 0) & (s[:, 0] <= w) & (s[:, 1] >= 0) & (s[:, 1] <= h)]
            np.testing.assert_allclose([*inside.min(0), *inside.max(0)], b, atol=0.5)
