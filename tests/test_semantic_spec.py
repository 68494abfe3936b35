"""The data YAML `semantic:` section: parsing and its errors, image -> mask paths, raw value remapping."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DATASETS, need

from utils.data.dataset_config import DatasetError, check_dataset
from utils.data.semantic_spec import SemanticSpec, swap_dir

ROOT = Path(__file__).resolve().parents[1]
SECTION = {"masks_dir": "gtFine", "image_suffix": "_leftImg8bit", "mask_suffix": "_gtFine_labelTrainIds.png",
           "names": {0: "road", 1: "car"}}


def test_defaults_and_mask_path():
    s = SemanticSpec.from_yaml_section({"names": ["background", "shape"]})
    assert (s.masks_dir, s.image_suffix, s.mask_suffix, s.ignore_index, s.id_map, s.palette) == \
        ("masks", "", ".png", 255, None, None)
    assert s.nc == 2
    assert s.mask_path("/d/images/train/x.jpg") == os.path.normpath("/d/masks/train/x.png")
    cs = SemanticSpec.from_yaml_section(SECTION, images_dir="leftImg8bit")
    assert cs.mask_path("/r/leftImg8bit/val/ulm/ulm_000000_000019_leftImg8bit.png") == \
        os.path.normpath("/r/gtFine/val/ulm/ulm_000000_000019_gtFine_labelTrainIds.png")
    # the LAST images_dir component is replaced; a stem without the suffix keeps its name
    assert cs.mask_path("/leftImg8bit/a/leftImg8bit/b/other.png") == \
        os.path.normpath("/leftImg8bit/a/gtFine/b/other_gtFine_labelTrainIds.png")
    with pytest.raises(DatasetError, match="no 'leftImg8bit' folder"):
        cs.mask_path("/r/elsewhere/x.png")


def test_masks_dir_as_a_path():
    rel = SemanticSpec.from_yaml_section({"names": ["a"], "masks_dir": "../coco128-semantic/masks"})
    assert rel.mask_path("/d/coco128/images/train2017/x.jpg") == \
        os.path.normpath("/d/coco128-semantic/masks/train2017/x.png")
    ab = SemanticSpec.from_yaml_section({"names": ["a"], "masks_dir": "/m/masks"})
    assert ab.mask_path("/d/coco128/images/train2017/x.jpg") == os.path.normpath("/m/masks/train2017/x.png")
    assert swap_dir("images/x.jpg", "images", "labels") == os.path.normpath("labels/x.jpg")
    assert swap_dir("/x/y.jpg", "images", "labels") is None


@pytest.mark.parametrize("section, message", [
    ([1, 2], "must be a mapping"),
    ({"names": ["a"], "colour": 1}, "unknown semantic key 'colour'"),
    ({}, "needs 'names'"),
    ({"names": {0: "a", 2: "b"}}, "without gaps"),
    ({"names": {"road": 0}}, "keys must be non-negative integers"),
    ({"names": ["a"], "ignore_index": -1}, "'ignore_index' must be an integer"),
    ({"names": ["a", "b"], "ignore_index": 1}, "is also class 'b'"),
    ({"names": ["a"], "id_map": {5: 3}}, "id_map 5: 3 is neither"),
    ({"names": ["a"], "id_map": {70000: 0}}, "exceeds 65535"),
    ({"names": ["a"], "palette": "rainbow"}, "unknown semantic palette 'rainbow'"),
    ({"names": ["a"], "palette": {0: [300, 0, 0]}}, "palette entry 0 must be"),
    ({"names": ["a"], "masks_dir": ""}, "'masks_dir' must be a non-empty string"),
])
def test_bad_sections_are_one_line_errors(section, message):
    with pytest.raises(DatasetError, match=message) as e:
        SemanticSpec.from_yaml_section(section, where="my.yaml")
    assert str(e.value).startswith("my.yaml: ") and "\n" not in str(e.value)


def test_remap_with_and_without_id_map():
    plain = SemanticSpec.from_yaml_section({"names": ["a", "b", "c"]})
    raw = np.array([[0, 1, 2, 3], [255, 7, 2, 0]], dtype=np.uint8)
    assert plain.remap(raw).tolist() == [[0, 1, 2, 255], [255, 255, 2, 0]]  # non-classes -> ignore
    sparse = SemanticSpec.from_yaml_section({"names": ["person", "sky"], "id_map": {1: 0, 187: 1, 3: 255}})
    assert sparse.remap(np.array([0, 1, 3, 187, 200], np.uint8)).tolist() == [255, 0, 255, 1, 255]
    assert sparse.remap(np.array([1, 187, 300], np.uint16)).tolist() == [0, 1, 255]  # 16-bit, small table
    wide = SemanticSpec.from_yaml_section({"names": ["x", "y"], "id_map": {1000: 0, 26001: 1}})
    out = wide.remap(np.array([1000, 26001, 7], np.uint16))
    assert out.tolist() == [0, 1, 255] and len(wide.lut()) == 65536
    assert SemanticSpec.from_data({"names": ["a"]}) is None


def test_palette_mapping_is_parsed():
    s = SemanticSpec.from_yaml_section({"names": ["a", "b"], "palette": {1: [1, 2, 3]}})
    assert s.palette == {1: (1, 2, 3)}


def test_coco128_semantic_yaml():
    need(DATASETS / "coco128-semantic")
    d = check_dataset(str(ROOT / "data" / "coco128-semantic.yaml"))
    spec = SemanticSpec.from_data(d)
    assert spec.nc == 129 and d["nc"] == 80 and spec.ignore_index == 255
    images = sorted(Path(d["train"]).glob("*.jpg"))
    masks = [Path(spec.mask_path(p)) for p in images]
    have = [m for m in masks if m.is_file()]
    assert len(images) == 128 and len(have) == 100  # 28 images have boxes only
    raw = cv2.imread(str(have[0]), cv2.IMREAD_UNCHANGED)
    ids = spec.remap(raw)
    assert ids.shape == raw.shape and ((ids < 129) | (ids == 255)).all()
    assert ((raw == 0) == (ids == 255)).all()  # 0 = unlabeled is exactly the ignored part
