"""check_dataset: names, required keys, path resolution, built-in generation, refused scripts, offline download."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
import yaml

from utils.data import dataset_config
from utils.data.dataset_config import DatasetError, check_dataset
from utils.data.semantic_spec import SemanticSpec
from utils.paths import ROOT


def _yaml(tmp_path: Path, d: dict, name: str = "d.yaml") -> Path:
    f = tmp_path / name
    f.write_text(yaml.safe_dump(d))
    return f


@pytest.fixture()
def ds(tmp_path):
    root = tmp_path / "ds"
    for s in ("train", "val"):
        (root / "images" / s).mkdir(parents=True)
    return root


def test_names_list_and_dict(ds):
    d = check_dataset({"path": str(ds), "train": "images/train", "val": "images/val", "names": ["a", "b"], "nc": 2})
    assert d["names"] == {0: "a", 1: "b"} and d["nc"] == 2
    assert d["train"] == str(ds / "images" / "train") and d["val"] == str(ds / "images" / "val")
    d = check_dataset({"path": str(ds), "train": "images/train", "val": "images/val", "names": {0: "x", 5: "y"}})
    assert d["names"] == {0: "x", 5: "y"} and d["nc"] == 2
    with pytest.raises(DatasetError, match="'names' keys must be integers.*'car'"):
        check_dataset({"path": str(ds), "train": "images/train", "val": "images/val", "names": {"car": 1}})


def test_nc_overwritten_with_warning(ds):
    d = check_dataset({"path": str(ds), "train": "images/train", "val": "images/val", "names": ["a"], "nc": 80})
    assert d["nc"] == 1


def test_missing_key_is_one_line(tmp_path, ds):
    f = _yaml(tmp_path, {"path": str(ds), "train": "images/train", "names": ["a"]}, "x.yaml")
    with pytest.raises(DatasetError) as e:
        check_dataset(f)
    assert str(e.value) == f"{f}: missing key 'val'"
    assert isinstance(e.value, ValueError)
    with pytest.raises(FileNotFoundError, match="no_such_data.yaml"):
        check_dataset(tmp_path / "no_such_data.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [a\nval: b\n")
    with pytest.raises(DatasetError, match="bad.yaml: not valid YAML"):
        check_dataset(bad)


def test_split_forms_and_relative_resolution(tmp_path, ds):
    (ds / "list.txt").write_text("./images/val/x.jpg\n")
    (ds / "images" / "test").mkdir()
    f = _yaml(tmp_path, {"path": "ds", "train": ["images/train", "list.txt"], "val": "../images/val",
                         "test": "images/test", "names": ["a"]})
    d = check_dataset(f)  # 'ds' is not under ROOT, so it resolves next to the YAML; '../images/val' falls back
    assert d["path"] == str(ds)
    assert d["train"] == [str(ds / "images" / "train"), str(ds / "list.txt")]
    assert d["val"] == str(ds / "images" / "val") and d["test"] == str(ds / "images" / "test")
    assert d["yaml_file"] == str(f)
    # ROOT comes first: a path that exists under the repository root wins over the YAML's folder
    (tmp_path / "data").mkdir()
    d = check_dataset(_yaml(tmp_path, {"path": "data", "train": "hyps", "val": "images", "names": ["a"]}))
    assert d["path"] == str(ROOT / "data") and d["val"] == str(ROOT / "data" / "images")


def test_generate_shapes_small(tmp_path):
    d = check_dataset({"path": str(tmp_path / "shapes" / "seg"), "train": "images/train", "val": "images/val",
                       "names": ["rectangle", "ellipse", "triangle", "star"], "generate": "shapes",
                       "generate_args": {"n_train": 6, "n_val": 4}})
    assert len(list(Path(d["val"]).glob("*.jpg"))) == 4
    assert len(list((tmp_path / "shapes" / "seg" / "labels" / "train").glob("*.txt"))) == 6
    assert (tmp_path / "shapes" / "semantic" / "masks" / "val").is_dir()
    with pytest.raises(DatasetError, match="unknown 'generate: blobs'"):
        check_dataset({"path": str(tmp_path / "x"), "train": "a", "val": "b", "names": ["a"], "generate": "blobs"})


def test_shipped_yamls_parse():
    for name, nc in (("shapes.yaml", 4), ("shapes-seg.yaml", 4), ("shapes-semantic.yaml", 4)):
        d = yaml.safe_load((ROOT / "data" / name).read_text())
        assert d["generate"] == "shapes" and len(d["names"]) == nc
        assert d["path"].startswith("datasets/shapes/")
    sem = yaml.safe_load((ROOT / "data" / "shapes-semantic.yaml").read_text())["semantic"]
    assert sem["masks_dir"] == "masks" and len(sem["names"]) == 5 and sem["names"][0] == "background"


def test_semantic_section_defaults_and_layout_keys(ds):
    d = check_dataset({"path": str(ds), "train": "images/train", "val": "images/val", "names": ["a"],
                       "semantic": {"names": ["road", "car"], "id_map": {7: 0, 26: 1, 300: 255}}})
    assert d["images_dir"] == "images" and d["labels_dir"] == "labels"
    sem = d["semantic"]
    assert sem == {"masks_dir": "masks", "image_suffix": "", "mask_suffix": ".png", "names": {0: "road", 1: "car"},
                   "nc": 2, "ignore_index": 255, "id_map": {7: 0, 26: 1, 300: 255}, "palette": None}
    assert SemanticSpec.from_data(d).to_dict() == sem  # the stored dict is the spec's: one source of truth
    assert check_dataset(d)["semantic"] == sem  # a checked dict checks again unchanged
    with pytest.raises(DatasetError, match="semantic.nc is 3 but semantic.names has 2 classes"):
        check_dataset({**d, "semantic": {**sem, "nc": 3}})
    d = check_dataset({"path": str(ds), "train": "images/train", "val": "images/val", "names": ["a"],
                       "images_dir": "leftImg8bit", "labels_dir": "boxes",
                       "semantic": {"masks_dir": "../other/masks", "palette": {0: [1, 2, 3]}, "names": ["x"]}})
    assert (d["images_dir"], d["labels_dir"], d["semantic"]["masks_dir"]) == ("leftImg8bit", "boxes", "../other/masks")
    assert "semantic" not in check_dataset({"path": str(ds), "train": "images/train", "val": "images/val",
                                            "names": ["a"]})


@pytest.mark.parametrize("sem, message", [
    ({"names": ["a"], "mask_dir": "m"}, r"semantic: unknown key 'mask_dir' \(known: masks_dir, "),
    ({"masks_dir": "m"}, "semantic: missing key 'names'"),
    ({"names": "road"}, "semantic.names must be a list or a mapping"),
    ({"names": {0: "a", 2: "b"}}, r"semantic.names must be numbered 0..1 without gaps \(missing \[1\]\)"),
    ({"names": ["a", "b"], "ignore_index": 1}, "ignore_index 1 is also a class id"),
    ({"names": ["a"], "ignore_index": 70000}, "ignore_index must be an integer in 0..65535"),
    ({"names": ["a"], "id_map": {70000: 0}}, "id_map: raw value 70000 is not an integer in 0..65535"),
    ({"names": ["a"], "id_map": {7: 3}}, r"id_map: 7: 3 is neither a class id \(0..0\) nor ignore_index 255"),
    ({"names": ["a"], "id_map": []}, "id_map must be a non-empty mapping"),
    ({"names": ["a"], "palette": {0: [1, 2]}}, r"palette: 0: expected \[r, g, b\]"),
    ({"names": ["a"], "palette": {5: [1, 2, 3]}}, "palette: 5 is not a class id"),
    ({"names": ["a"], "palette": "ade"}, "palette must be 'cityscapes' or a mapping"),
    ({"names": ["a"], "mask_suffix": ""}, "mask_suffix must not be empty"),
    ({"names": ["a"], "masks_dir": 3}, "masks_dir must be a string"),
    (["masks"], "'semantic' must be a mapping"),
    (None, "'semantic' is empty"),
])
def test_semantic_section_mistakes_are_one_line_naming_the_file(tmp_path, ds, sem, message):
    f = _yaml(tmp_path, {"path": str(ds), "train": "images/train", "val": "images/val", "names": ["a"],
                         "semantic": sem})
    with pytest.raises(DatasetError, match=message) as e:
        check_dataset(f)
    assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)


def test_layout_keys_must_be_folder_names(ds):
    for k in ("images_dir", "labels_dir"):
        with pytest.raises(DatasetError, match=f"'{k}' must be one folder name"):
            check_dataset({"path": str(ds), "train": "images/train", "val": "images/val", "names": ["a"], k: "a/b"})


def test_download_script_refused(tmp_path):
    data = {"path": str(tmp_path / "nope"), "train": "images/train", "val": "images/val", "names": ["a"],
            "download": "bash data/scripts/get_coco.sh"}
    with pytest.raises(DatasetError, match="is a script and code from data YAMLs is never run") as e:
        check_dataset(data)
    assert "\n" not in str(e.value)
    data["download"] = "import os\nos.system('echo hi')\n"
    with pytest.raises(DatasetError, match="never run"):
        check_dataset(data)
    with pytest.raises(DatasetError, match="automatic download is off"):
        check_dataset({**data, "download": "https://example.com/d.zip"}, autodownload=False)


def test_download_offline_one_line(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    f = _yaml(tmp_path, {"path": str(tmp_path / "d"), "train": "images/train", "val": "images/val", "names": ["a"],
                         "download": "https://example.com/d.zip"})
    with pytest.raises(DatasetError) as e:
        check_dataset(f)
    val = tmp_path / "d" / "images" / "val"
    assert str(e.value) == (f"{f}: dataset not found at {val} and https://example.com/d.zip could not be downloaded "
                            f"(offline?): download it and unpack it into {tmp_path}")
    assert not (tmp_path / "d.zip").exists()


def test_download_zip_unpacked(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("d/images/val/a.jpg", b"x")
        z.writestr("d/images/train/a.jpg", b"x")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(buf.getvalue()))
    d = check_dataset({"path": str(tmp_path / "d"), "train": "images/train", "val": "images/val", "names": ["a"],
                       "download": "https://example.com/d.zip"})
    assert (Path(d["val"]) / "a.jpg").is_file() and not (tmp_path / "d.zip").exists()


def test_local_archive(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_config, "DATASETS_DIR", tmp_path / "datasets")
    arc = tmp_path / "mini.zip"
    with zipfile.ZipFile(arc, "w") as z:
        z.writestr("mini/images/val/a.jpg", b"x")
        z.writestr("mini/mini.yaml", yaml.safe_dump({"path": str(tmp_path / "datasets" / "mini"), "train":
                                                     "images/val", "val": "images/val", "names": ["a"]}))
    d = check_dataset(arc)
    assert d["val"] == str(tmp_path / "datasets" / "mini" / "images" / "val")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escape.yaml", "x: 1")
    with pytest.raises(DatasetError, match="outside"):
        check_dataset(evil)
