"""The synthetic shapes generator: determinism, layout, and agreement between boxes, polygons and masks."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from utils.data.imageio import imread
from utils.data.synthetic import CLASSES, MARKER, generate_shapes, render, shapes_up_to_date, write_samples

N_TRAIN, N_VAL = 20, 6


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    yaml_path = generate_shapes(root, n_train=N_TRAIN, n_val=N_VAL, seed=3)
    return root, yaml_path


def _read(path):
    rows = [list(map(float, line.split())) for line in path.read_text().splitlines() if line.strip()]
    return rows


def test_layout_and_counts(shapes):
    root, yaml_path = shapes
    assert yaml_path == root / "det" / "shapes.yaml" and yaml_path.is_file()
    assert (root / "seg" / "shapes-seg.yaml").is_file() and (root / "semantic" / "shapes-semantic.yaml").is_file()
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        imgs = sorted((root / "det" / "images" / split).glob("*.jpg"))
        assert len(imgs) == n
        for tree, sub, ext in (("det", "labels", ".txt"), ("seg", "labels", ".txt"), ("semantic", "masks", ".png"),
                               ("semantic", "labels", ".txt")):
            assert len(list((root / tree / sub / split).glob(f"*{ext}"))) == n
        for f in (root / "det" / "labels" / split).glob("*.txt"):  # joint training: the same boxes beside the masks
            assert (root / "semantic" / "labels" / split / f.name).read_bytes() == f.read_bytes()
        seg_img = root / "seg" / "images" / split / imgs[0].name
        assert seg_img.is_file() and os.path.samefile(seg_img, imgs[0])  # hard link, same bytes, no extra disk
    assert shapes_up_to_date(root, n_train=N_TRAIN, n_val=N_VAL, seed=3)
    assert not shapes_up_to_date(root, n_train=N_TRAIN, n_val=N_VAL, seed=4)
    assert not list(root.glob(".generating*"))


def test_varied_sizes_classes_backgrounds(shapes):
    root, _ = shapes
    sizes = {imread(f).shape[:2] for f in (root / "det" / "images" / "train").glob("*.jpg")}
    assert len(sizes) > 10 and any(h != w for h, w in sizes)
    rows = [r for f in (root / "det" / "labels" / "train").glob("*.txt") for r in _read(f)]
    classes = {int(r[0]) for r in rows}
    assert classes == set(range(len(CLASSES)))
    areas = np.array([r[3] * r[4] for r in rows])
    assert areas.min() < 0.01 and areas.max() > 0.1  # small and large objects
    empty = [f for f in (root / "det" / "labels" / "train").glob("*.txt") if not f.read_text().strip()]
    assert len(empty) >= 1  # background images
    for f in empty:
        assert not (root / "seg" / "labels" / "train" / f.name).read_text().strip()
        assert cv2.imread(str(root / "semantic" / "masks" / "train" / f.with_suffix(".png").name), 0).max() == 0


def test_boxes_polygons_masks_agree(shapes):
    root, _ = shapes
    for f in sorted((root / "det" / "labels" / "val").glob("*.txt")) + sorted(
            (root / "det" / "labels" / "train").glob("*.txt"))[:8]:
        split = f.parent.name
        h, w = imread(root / "det" / "images" / split / f.with_suffix(".jpg").name).shape[:2]
        boxes = np.array(_read(f)).reshape(-1, 5)
        polys = _read(root / "seg" / "labels" / split / f.name)
        mask = cv2.imread(str(root / "semantic" / "masks" / split / f.with_suffix(".png").name), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (h, w) and mask.dtype == np.uint8 and mask.max() <= len(CLASSES)
        assert len(polys) == len(boxes)
        allowed = np.zeros((len(CLASSES) + 1, h, w), bool)
        for box, poly in zip(boxes, polys):
            assert box[0] == poly[0] and (len(poly) - 1) % 2 == 0 and len(poly) >= 7
            xy = np.array(poly[1:]).reshape(-1, 2) * [w, h]
            bx = np.array([(box[1] - box[3] / 2) * w, (box[2] - box[4] / 2) * h,
                           (box[1] + box[3] / 2) * w, (box[2] + box[4] / 2) * h])
            assert np.abs(np.r_[xy.min(0), xy.max(0)] - bx).max() <= 1.0  # box of polygon == label box
            x0, y0 = np.floor(bx[:2]).astype(int)
            x1, y1 = np.ceil(bx[2:]).astype(int)
            # cv2 rasterises every pixel an edge touches: masks may reach 1 px past the polygon
            allowed[int(box[0]) + 1, max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = True
        for k in range(1, len(CLASSES) + 1):  # every labelled pixel lies in a box of its class (mask = visible part)
            assert not np.any((mask == k) & ~allowed[k])
        if len(polys):  # the last-drawn object is never occluded: its whole polygon interior carries its class
            xy = np.array(polys[-1][1:]).reshape(-1, 2) * [w, h]
            inside = np.zeros((h, w), np.uint8)
            cv2.fillPoly(inside, np.round((xy - 0.5) * 16).astype(np.int32)[None], 1, cv2.LINE_8, 4)
            inside = cv2.erode(inside, np.ones((3, 3), np.uint8)).astype(bool)
            assert inside.sum() > 0 and np.all(mask[inside] == int(polys[-1][0]) + 1)


def test_deterministic(tmp_path, shapes):
    root, _ = shapes
    other = tmp_path / "again"
    generate_shapes(other, n_train=N_TRAIN, n_val=N_VAL, seed=3)
    for tree, sub in (("det", "labels"), ("seg", "labels"), ("semantic", "masks")):
        for split in ("train", "val"):
            a = sorted((root / tree / sub / split).iterdir())
            b = sorted((other / tree / sub / split).iterdir())
            assert [x.name for x in a] == [x.name for x in b]
            assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    rng = np.random.default_rng
    im1, obj1, _ = render(rng(1), 200, 150, 5)
    im2, obj2, _ = render(rng(2), 200, 150, 5)
    assert im1.shape == (150, 200, 3) and not np.array_equal(im1, im2)


def test_regenerate_only_own_trees(tmp_path):
    generate_shapes(tmp_path, n_train=2, n_val=1)
    assert (tmp_path / "det" / MARKER).is_file()
    generate_shapes(tmp_path, n_train=3, n_val=1)  # replaces its own trees
    assert len(list((tmp_path / "det" / "images" / "train").glob("*.jpg"))) == 3
    foreign = tmp_path / "foreign"
    (foreign / "det").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not made by generate_shapes"):
        generate_shapes(foreign, n_train=1, n_val=1)


def test_samples(tmp_path):
    files = write_samples(tmp_path)
    assert len(files) == 2 and sum(f.stat().st_size for f in files) < 100_000
    assert imread(files[0]).shape == (360, 480, 3)


def test_processes_write_the_same_files_as_one(tmp_path, monkeypatch):
    # generation is spread over processes (9.2 -> 5.9 s for the default set on 2 cores); each image has its own
    # random stream, so the bytes must not depend on how many processes wrote them
    args = dict(n_train=64, n_val=8, seed=3, imgsz_range=(64, 96))
    generate_shapes(tmp_path / "many", **args)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    generate_shapes(tmp_path / "one", **args)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file()
                   and p.suffix != ".yaml")
    assert len(files) > 72 * 4
    assert all((tmp_path / "one" / f).read_bytes() == (tmp_path / "many" / f).read_bytes() for f in files)
