"""Label verification policy (one test per kind of bad input), label paths and the scan cache."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from utils.data.labels import img2label_paths, labels_dir_for, scan_labels, verify_image_label
from utils.tasks.detect.dataset import YoloDataset

GOOD = "0 0.5 0.5 0.25 0.25\n"



def make_split(root: Path, items: dict, split: str = "train", labels_dir: bool = True) -> Path:
    """items: name -> (image array | raw bytes, label text | None). Returns the images folder."""
    im_dir, lb_dir = root / "images" / split, root / "labels" / split
    im_dir.mkdir(parents=True, exist_ok=True)
    if labels_dir:
        lb_dir.mkdir(parents=True, exist_ok=True)
    for name, (im, label) in items.items():
        f = im_dir / name
        if isinstance(im, bytes):
            f.write_bytes(im)
        else:
            cv2.imwrite(str(f), im)
        if label is not None and labels_dir:
            (lb_dir / Path(name).with_suffix(".txt")).write_text(label)
    return im_dir


def grey(h: int = 32, w: int = 48) -> np.ndarray:
    im = np.full((h, w, 3), 114, np.uint8)
    im[8:20, 10:30] = (0, 0, 255)
    return im


def warnings_about(log, name: str) -> list[str]:
    return [r.getMessage() for r in log.records if name in r.getMessage() and "WARNING" in r.getMessage()]


def dataset(im_dir: Path, **kw) -> YoloDataset:
    return YoloDataset(im_dir, img_size=64, batch_size=2, **kw)


def test_img2label_paths_replaces_last_images_component():
    p = os.path.join(os.sep, "data", "images", "set", "images", "a.b.jpg")
    assert img2label_paths([p]) == [os.path.join(os.sep, "data", "images", "set", "labels", "a.b.txt")]
    assert img2label_paths(["/x/y/z.png"]) == ["/x/y/z.txt"]  # no images/ folder: labels sit next to the images
    assert labels_dir_for("/d/images/train") == Path("/d/labels/train")


def test_good_pair_is_kept(tmp_path, log):
    ds = dataset(make_split(tmp_path, {"a.png": (grey(), GOOD)}))
    assert len(ds) == 1 and ds.counts == dict(found=1, missing=0, empty=0, corrupt=0)
    np.testing.assert_allclose(ds.labels[0], [[0, 0.5, 0.5, 0.25, 0.25]])
    assert tuple(ds.shapes[0]) == (48, 32)  # (w, h)
    assert not warnings_about(log, "a.png")


def test_truncated_image_is_skipped(tmp_path, log):
    png = cv2.imencode(".png", grey())[1].tobytes()
    im_dir = make_split(tmp_path, {"ok.png": (grey(), GOOD), "cut.png": (png[: len(png) // 2], GOOD)})
    ds = dataset(im_dir)
    assert [Path(f).name for f in ds.im_files] == ["ok.png"]
    assert ds.counts["corrupt"] == 1
    assert warnings_about(log, "cut.png")


def test_non_image_with_image_suffix_is_skipped(tmp_path, log):
    ds = dataset(make_split(tmp_path, {"ok.png": (grey(), GOOD), "text.jpg": (b"hello, not a picture", GOOD)}))
    assert [Path(f).name for f in ds.im_files] == ["ok.png"] and ds.counts["corrupt"] == 1
    (msg,) = warnings_about(log, "text.jpg")
    assert "corrupt" in msg


def test_jpeg_without_end_marker_is_used_but_never_rewritten(tmp_path, log):
    jpg = cv2.imencode(".jpg", grey(64, 64))[1].tobytes()
    assert jpg.endswith(b"\xff\xd9")
    im_dir = make_split(tmp_path, {"nomarker.jpg": (jpg[:-2], GOOD), "header.jpg": (jpg[:200], GOOD)})
    before = (im_dir / "nomarker.jpg").read_bytes()
    ds = dataset(im_dir)
    assert [Path(f).name for f in ds.im_files] == ["nomarker.jpg"]
    assert (im_dir / "nomarker.jpg").read_bytes() == before  # user data untouched
    assert any("not modified" in m for m in warnings_about(log, "nomarker.jpg"))
    assert any("corrupt" in m for m in warnings_about(log, "header.jpg"))  # too little left to decode
    assert ds.counts["corrupt"] == 1


def test_tiny_image_is_skipped(tmp_path, log):
    ds = dataset(make_split(tmp_path, {"ok.png": (grey(), GOOD), "tiny.png": (grey(8, 8), GOOD)}))
    assert len(ds) == 1 and ds.counts["corrupt"] == 1
    assert any("<10 pixels" in m for m in warnings_about(log, "tiny.png"))


@pytest.mark.parametrize("row,n", [("0 0.5 0.5 0.2\n", 4), ("0 0.5 0.5 0.2 0.2 0.9\n", 6)])
def test_wrong_column_count_is_corrupt(tmp_path, log, row, n):
    ds = dataset(make_split(tmp_path, {"ok.png": (grey(), GOOD), "cols.png": (grey(), GOOD + row)}))
    assert len(ds) == 1 and ds.counts["corrupt"] == 1
    assert any(f"labels require 5 columns, {n} columns detected" in m for m in warnings_about(log, "cols.txt"))


def test_non_numeric_label_is_corrupt(tmp_path, log):
    ds = dataset(make_split(tmp_path, {"ok.png": (grey(), GOOD), "word.png": (grey(), "car 0.5 0.5 0.2 0.2\n")}))
    assert len(ds) == 1 and ds.counts["corrupt"] == 1
    assert any("car" in m for m in warnings_about(log, "word.txt"))


@pytest.mark.parametrize("row,words", [("0 -0.1 0.5 0.2 0.2\n", "negative"), ("0 0.5 1.7 0.2 0.2\n", "out of bounds")])
def test_coordinates_outside_unit_range_are_corrupt(tmp_path, log, row, words):
    ds = dataset(make_split(tmp_path, {"ok.png": (grey(), GOOD), "oob.png": (grey(), row)}))
    assert len(ds) == 1 and ds.counts["corrupt"] == 1
    (msg,) = warnings_about(log, "oob.txt")
    assert words in msg and ("-0.1" in msg or "1.7" in msg)  # the offending values are shown


def test_non_positive_size_is_corrupt(tmp_path, log):
    ds = dataset(make_split(tmp_path, {"ok.png": (grey(), GOOD), "flat.png": (grey(), "0 0.5 0.5 0.0 0.2\n")}))
    assert len(ds) == 1 and ds.counts["corrupt"] == 1
    assert any("non-positive" in m for m in warnings_about(log, "flat.txt"))


def test_class_id_beyond_nc_drops_only_that_row(tmp_path, log):
    im_dir = make_split(tmp_path, {"cls.png": (grey(), GOOD + "7 0.3 0.3 0.1 0.1\n")})
    ds = dataset(im_dir, nc=3)
    assert len(ds) == 1 and ds.counts["corrupt"] == 0
    np.testing.assert_allclose(ds.labels[0], [[0, 0.5, 0.5, 0.25, 0.25]])
    (msg,) = warnings_about(log, "cls.txt")
    assert "[7]" in msg and "nc=3" in msg
    assert len(dataset(im_dir).labels[0]) == 2  # without nc nothing is dropped: one cache serves both
    log.clear()
    assert len(dataset(im_dir, nc=3).labels[0]) == 1  # the rule also applies to labels read from the cache
    assert any("from cache" in r.getMessage() for r in log.records) and len(warnings_about(log, "cls.txt")) == 1


def test_duplicate_rows_are_removed(tmp_path, log):
    rows = GOOD + "1 0.2 0.2 0.1 0.1\n" + GOOD
    ds = dataset(make_split(tmp_path, {"dup.png": (grey(), rows)}))
    np.testing.assert_allclose(ds.labels[0], [[0, 0.5, 0.5, 0.25, 0.25], [1, 0.2, 0.2, 0.1, 0.1]])  # file order kept
    assert any("1 duplicate labels removed" in m for m in warnings_about(log, "dup.txt"))


def test_empty_and_missing_label_files_are_backgrounds(tmp_path, log):
    ds = dataset(make_split(tmp_path, {"a.png": (grey(), GOOD), "empty.png": (grey(), "\n \n"),
                                       "nolabel.png": (grey(), None)}))
    assert len(ds) == 3
    assert ds.counts == dict(found=2, missing=1, empty=1, corrupt=0)
    assert sum(len(lb) == 0 for lb in ds.labels) == 2


def test_missing_labels_folder_warns_once(tmp_path, log):
    im_dir = make_split(tmp_path, {"a.png": (grey(), GOOD), "b.png": (grey(), GOOD)}, labels_dir=False)
    (im_dir / "sub").mkdir()
    cv2.imwrite(str(im_dir / "sub" / "c.png"), grey())
    ds = dataset(im_dir)
    assert len(ds) == 3 and all(len(lb) == 0 for lb in ds.labels)
    assert ds.counts["missing"] == 3
    msgs = [m for m in (r.getMessage() for r in log.records) if "no labels folder" in m]
    assert msgs == [f"WARNING ⚠️ no labels folder found next to {im_dir}: expected {tmp_path / 'labels' / 'train'}"]


def test_segment_labels_give_polygon_extents(tmp_path, log):
    poly = "2 0.1 0.2 0.5 0.1 0.6 0.7 0.2 0.6\n"
    box_row = "1 0.5 0.5 0.2 0.2\n"  # a box row in a polygon file becomes its rectangle
    odd = "0 0.1 0.1 0.2 0.2 0.3 0.3 0.4\n"
    ds = dataset(make_split(tmp_path, {"seg.png": (grey(), poly + box_row), "odd.png": (grey(), odd)}))
    assert [Path(f).name for f in ds.im_files] == ["seg.png"]
    np.testing.assert_allclose(ds.labels[0][0], [2, 0.35, 0.4, 0.5, 0.6], atol=1e-6)
    np.testing.assert_allclose(ds.labels[0][1], [1, 0.5, 0.5, 0.2, 0.2], atol=1e-6)
    assert len(ds.segments[0]) == 2 and ds.segments[0][0].shape == (4, 2)
    assert any("even number" in m for m in warnings_about(log, "odd.txt"))


def test_verify_returns_counts_tuple(tmp_path):
    im_dir = make_split(tmp_path, {"a.png": (grey(), GOOD)})
    out = verify_image_label((str(im_dir / "a.png"), img2label_paths([str(im_dir / "a.png")])[0], "", None))
    assert out[0].endswith("a.png") and out[1].shape == (1, 5) and out[2] == (48, 32) and out[4:8] == (0, 1, 0, 0)


def test_cache_reused_then_invalidated_by_a_label_edit(tmp_path, log):
    im_dir = make_split(tmp_path, {"a.png": (grey(), GOOD), "b.png": (grey(), GOOD)})
    ds = dataset(im_dir)
    cache = tmp_path / "labels" / "train.cache"
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    log.clear()
    ds2 = dataset(im_dir)
    assert cache.stat().st_mtime_ns == stamp and any("from cache" in r.getMessage() for r in log.records)
    assert [lb.tolist() for lb in ds2.labels] == [lb.tolist() for lb in ds.labels]
    (tmp_path / "labels" / "train" / "b.txt").write_text("1 0.25 0.25 0.5 0.5\n0 0.5 0.5 0.1 0.1\n")
    log.clear()
    ds3 = dataset(im_dir)
    assert not any("from cache" in r.getMessage() for r in log.records)
    assert len(ds3.labels[1]) == 2 and ds3.labels[1][0, 0] == 1


def test_unwritable_cache_folder_only_warns(tmp_path, log, monkeypatch):
    im_dir = make_split(tmp_path, {"a.png": (grey(), GOOD)})

    def refuse(*a, **k):
        raise PermissionError("read-only file system")

    monkeypatch.setattr("utils.data.labels.os.replace", refuse)
    ds = dataset(im_dir)
    assert len(ds) == 1
    assert any("not writeable" in r.getMessage() for r in log.records)
    assert not list((tmp_path / "labels").glob("*.tmp*"))  # no half-written files left behind


def test_scan_reports_summary(tmp_path, log):
    im_dir = make_split(tmp_path, {"a.png": (grey(), GOOD), "b.png": (grey(), ""), "c.png": (grey(), None)})
    ims = sorted(str(p) for p in im_dir.iterdir())
    cache = scan_labels(ims, img2label_paths(ims), tmp_path / "x.cache")
    assert cache["results"] == (2, 1, 1, 0, 3)
    assert any("2 found, 1 missing, 1 empty, 0 corrupt" in r.getMessage() for r in log.records)


def test_nothing_found_names_the_path(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "images")):
        dataset(tmp_path / "images")
    with pytest.raises(FileNotFoundError, match="nope"):
        dataset(tmp_path / "nope")


def test_process_pool_scan_matches_thread_scan(tmp_path, monkeypatch):
    bad = "0 0.5 0.5 0.2\n"
    im_dir = make_split(tmp_path, {"a.png": (grey(), GOOD), "b.png": (grey(), bad), "c.png": (grey(), "")})
    ims = sorted(str(p) for p in im_dir.iterdir())
    threads = scan_labels(ims, img2label_paths(ims), tmp_path / "t.cache")
    monkeypatch.setattr("utils.data.labels.PROCESS_POOL_MIN", 0)
    monkeypatch.setattr("utils.data.labels.NUM_THREADS", 2)
    procs = scan_labels(ims, img2label_paths(ims), tmp_path / "p.cache")
    assert procs["results"] == threads["results"] == (3, 0, 1, 1, 3)  # nf counts label files, corrupt ones too
    assert sorted(k for k in procs if k.endswith(".png")) == sorted(k for k in threads if k.endswith(".png"))
