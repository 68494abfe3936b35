"""The data YAML `semantic:` section: parsing and its errors, image -> mask paths, raw value remapping."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DATASETS, need

from utils.data.dataset_config import DatasetError, check_dataset
from utils.data.labels import swap_dir
from utils.data.semantic_spec import SemanticSpec

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
    ({"names": ["a"], "colour": 1}, "semantic: unknown key 'colour'"),
    ({}, "semantic: missing key 'names'"),
    ({"names": {0: "a", 2: "b"}}, "without gaps"),
    ({"names": {"road": 0}}, "semantic.names keys must be integers .*got 'road'"),
    ({"names": ["a"], "ignore_index": -1}, "semantic.ignore_index must be an integer in 0..65535, got -1"),
    ({"names": ["a", "b"], "ignore_index": 1}, r"ignore_index 1 is also a class id \(class 'b'"),
    ({"names": ["a"], "id_map": {5: 3}}, "semantic.id_map: 5: 3 is neither"),
    ({"names": ["a"], "id_map": {70000: 0}}, "semantic.id_map: raw value 70000 is not an integer in 0..65535"),
    ({"names": ["a"], "palette": "rainbow"}, "semantic.palette must be 'cityscapes' or a mapping .*got 'rainbow'"),
    ({"names": ["a"], "palette": {0: [300, 0, 0]}}, r"semantic.palette: 0: expected \[r, g, b\] .*got \[300, 0, 0\]"),
    ({"names": ["a"], "masks_dir": ""}, "semantic.masks_dir must not be empty"),
    ({"names": ["a"], "id_map": {}}, "semantic.id_map must be a non-empty mapping"),
    ({"names": ["a"], "palette": [[1, 2, 3]]}, "semantic.palette must be 'cityscapes' or a mapping"),
    ({"names": ["a", "b"], "palette": {2: [1, 2, 3]}}, "semantic.palette: 2 is not a class id"),
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


EDGE_SECTIONS = [
    {"names": ["a", "b", "c"]},  # ignore 255, 256-entry uint8 table
    {"names": ["a", "b", "c"], "ignore_index": 300},  # ignore past 255: uint16 class maps from a 256-entry table
    {"names": ["a", "b", "c"], "ignore_index": 65535},
    {"names": [str(i) for i in range(300)], "ignore_index": 65535},  # classes past 255: 65536-entry table
    {"names": ["a", "b", "c"], "id_map": {1: 0, 200: 2, 7: 255}},
    {"names": ["a", "b", "c"], "id_map": {1000: 0, 65535: 1, 0: 2}},  # 16-bit keys, uint8 class maps
    {"names": ["a", "b", "c"], "ignore_index": 300, "id_map": {5: 300, 6: 1, 256: 2}},
]


@pytest.mark.parametrize("section", EDGE_SECTIONS)
def test_remap_follows_the_contract_for_every_value(section):
    """Every 8- and 16-bit raw value maps as the contract says (id_map given: listed value -> its id, others ->
    ignore; else a class id is itself and anything else -> ignore), in the dtype that holds the largest id, through
    the uint8 fast path and the 16-bit tables alike; unknown_values names exactly the silently ignored values."""
    spec = SemanticSpec.from_yaml_section(section)
    nc, ignore, id_map = spec.nc, spec.ignore_index, spec.id_map

    def expected(v: int) -> int:
        return id_map.get(v, ignore) if id_map is not None else (v if v < nc else ignore)

    dtype = np.uint8 if max(nc - 1, ignore) <= 255 else np.uint16
    for raw in (np.arange(256, dtype=np.uint8).reshape(16, 16), np.arange(65536, dtype=np.uint16).reshape(256, 256)):
        out = spec.remap(raw)
        assert out.dtype == dtype and out.shape == raw.shape
        assert out.ravel().tolist() == [expected(int(v)) for v in raw.ravel()]
        unknown = [] if id_map is not None else [int(v) for v in raw.ravel() if v >= nc and v != ignore]
        assert spec.unknown_values(raw) == unknown
    assert spec.unknown_values(np.zeros((4, 4), np.uint8)) == []


def test_to_dict_round_trips_and_checks_nc():
    s = SemanticSpec.from_yaml_section({"names": ["a", "b"], "palette": {1: [1, 2, 3]}, "id_map": {9: 1, 4: 0}},
                                       images_dir="leftImg8bit")
    d = s.to_dict()
    assert d == {"masks_dir": "masks", "image_suffix": "", "mask_suffix": ".png", "names": {0: "a", 1: "b"}, "nc": 2,
                 "ignore_index": 255, "id_map": {4: 0, 9: 1}, "palette": {1: [1, 2, 3]}}
    assert SemanticSpec.from_dict(d, images_dir="leftImg8bit") == s
    assert SemanticSpec.from_data({"images_dir": "leftImg8bit", "semantic": d}) == s
    with pytest.raises(DatasetError, match="semantic.nc is 3 but semantic.names has 2 classes"):
        SemanticSpec.from_dict({**d, "nc": 3})
    with pytest.raises(DatasetError, match="unknown key 'nc'"):  # the contract's keys only; from_dict takes nc
        SemanticSpec.from_yaml_section(d)


def test_one_path_rule_for_labels_and_masks():
    s = SemanticSpec.from_yaml_section({"names": ["a"]})
    assert s.find_mask_path("/x/a.png") is None and swap_dir("/x/a.png", "images", "masks") is None
    with pytest.raises(DatasetError, match="no 'images' folder"):
        s.mask_path("/x/a.png")
    # a relative path that starts with the component, the last of several, a file named like the folder
    assert s.mask_path("images/t/a.jpg") == os.path.join("masks", "t", "a.png")
    assert s.mask_path("/d/images/x/images/a.jpg") == "/d/images/x/masks/a.png"
    assert swap_dir("/d/images/images", "images", "labels") == "/d/labels/images"
    assert swap_dir("/d/myimages/a.jpg", "images", "labels") is None
    assert swap_dir("/d/r/images/a.jpg", "images", "../../other") == "/other/a.jpg"


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
