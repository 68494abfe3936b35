"""Datasets by name: `download:` as data, fetched from a local HTTP server, unpacked, converted, trained on; failures
leave nothing that looks like a dataset; offline is one line; the upstream YAMLs we ship."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import ROOT, unreachable_url, write_tiny_shapes

from utils.data.dataset_config import DatasetError, check_dataset
from utils.data.fetch import parse_download
from utils.data.voc import annotation_rows, voc_box_to_yolo, voc_to_yolo
from utils.paths import find_file

V1 = "https://github.com/ultralytics/yolov5/releases/download/v1.0/"


def zip_tree(src: Path, archive: Path, prefix: str) -> Path:
    """Zip every file under src as prefix/<relative path> (the layout of upstream's dataset archives)."""
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                z.write(f, f"{prefix}/{f.relative_to(src).as_posix()}")
    return archive


@pytest.fixture
def tiny_zip(tmp_path, http_files):
    """www/tiny.zip: a generated 12-image detection set as tiny/images/{train,val}, tiny/labels/{train,val}."""
    www, url = http_files
    src = write_tiny_shapes(tmp_path / "src", n_train=8, n_val=4).parent / "det"
    zip_tree(src, www / "tiny.zip", "tiny")
    return www, url


def data_yaml(tmp_path: Path, download, name: str = "tiny") -> Path:
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump({"path": str(tmp_path / "datasets" / name), "train": "images/train",
                                 "val": "images/val", "names": ["rectangle", "ellipse", "triangle", "star"],
                                 "download": download}))
    return f


def test_zip_is_downloaded_unpacked_and_trained_on(tmp_path, tiny_zip):
    from test_engine import make_cfg

    from utils.engine.trainer import Trainer
    from utils.tasks.detect.task import DetectionTask

    _, url = tiny_zip
    f = data_yaml(tmp_path, f"{url}/tiny.zip")
    d = check_dataset(f)
    root = tmp_path / "datasets" / "tiny"
    assert d["val"] == str(root / "images" / "val") and len(list(Path(d["val"]).glob("*.jpg"))) == 4
    assert len(list((root / "labels" / "train").glob("*.txt"))) == 8
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == ["tiny"]  # no archive, no staging left
    figures = Trainer(make_cfg(str(f), tmp_path / "runs", epochs=1, imgsz=64), DetectionTask()).fit()
    assert "metrics/mAP_0.5" in figures and (tmp_path / "runs" / "exp" / "weights" / "last.pt").is_file()
    assert check_dataset(f)["val"] == d["val"]  # present now: nothing fetched again (the server could be gone)


def test_interrupted_download_leaves_nothing_that_looks_complete(tmp_path, tiny_zip):
    www, url = tiny_zip
    (www / "labels.zip").write_bytes((www / "tiny.zip").read_bytes())
    for download in (f"{url}/cut/tiny.zip", [f"{url}/labels.zip", f"{url}/cut/tiny.zip"]):
        f = data_yaml(tmp_path, download)
        with pytest.raises(DatasetError, match="could not be downloaded") as e:
            check_dataset(f)
        assert "\n" not in str(e.value)
        assert not (tmp_path / "datasets").exists()  # not even the folder it would have made
    assert check_dataset(data_yaml(tmp_path, f"{url}/tiny.zip"))  # the next attempt starts clean and succeeds


def test_leftover_staging_from_a_killed_download_is_removed(tmp_path, tiny_zip, log):
    _, url = tiny_zip
    stale = tmp_path / "datasets" / ".tiny.partial" / "tiny" / "images" / "val"
    stale.mkdir(parents=True)
    check_dataset(data_yaml(tmp_path, f"{url}/tiny.zip"))
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == ["tiny"]
    assert "left by an interrupted download" in log.text


def test_offline_is_one_line_naming_url_and_folder(tmp_path):
    url = unreachable_url("tiny.zip")
    f = data_yaml(tmp_path, url)
    with pytest.raises(DatasetError) as e:
        check_dataset(f)
    val, dest = tmp_path / "datasets" / "tiny" / "images" / "val", tmp_path / "datasets"
    assert str(e.value) == (f"{f}: dataset not found at {val} and {url} could not be downloaded (offline?): "
                            f"download it and unpack it into {dest}")
    assert not dest.exists()


def test_not_an_archive_and_archive_without_the_split(tmp_path, http_files):
    www, url = http_files
    (www / "page.zip").write_text("<html>moved</html>")
    with pytest.raises(DatasetError, match="page.zip is not a readable archive"):
        check_dataset(data_yaml(tmp_path, f"{url}/page.zip"))
    zip_tree(write_tiny_shapes(tmp_path / "src", n_train=2, n_val=2).parent / "det", www / "other.zip", "other")
    with pytest.raises(DatasetError, match="still does not exist: fix 'path'"):
        check_dataset(data_yaml(tmp_path, f"{url}/other.zip"))


@pytest.mark.parametrize("download, message", [
    ({"urls": "https://x.org/a.zip", "dir": "../../elsewhere"}, "'download' dir '../../elsewhere' leaves"),
    ({"urls": "https://x.org/a.zip", "convert": "kitti"}, "unknown 'download' converter 'kitti' \\(known: voc\\)"),
    ({"url": "https://x.org/a.zip"}, "unknown 'download' key 'url' \\(known: urls, dir, convert\\)"),
    (["https://x.org/a.zip", "bash get.sh"], "is a script and code from data YAMLs is never run"),
    ({"urls": [{"url": "python -c 'import os'"}]}, "never run"),
])
def test_download_mistakes_are_one_line(tmp_path, download, message):
    f = data_yaml(tmp_path, download)
    with pytest.raises(DatasetError, match=message) as e:
        check_dataset(f)
    assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)


def test_converter_needs_a_path():
    with pytest.raises(DatasetError, match="'download' convert needs the dataset 'path' to lie under"):
        check_dataset({"train": "images/t", "val": "no/such/val", "names": ["a"],
                       "download": {"urls": "https://x.org/a.zip", "convert": "voc"}})


# --- the voc converter -------------------------------------------------------------------------------------------

def write_voc(devkit: Path, year: str, sets: dict[str, list[str]], objects: list[tuple]) -> None:
    """A VOCdevkit/VOC<year> tree: 64x48 JPEGs, one XML per image holding `objects` (name, difficult, box)."""
    base = devkit / f"VOC{year}"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / d).mkdir(parents=True, exist_ok=True)
    for image_set, ids in sets.items():
        (base / "ImageSets" / "Main" / f"{image_set}.txt").write_text("\n".join(ids) + "\n")
        for i in ids:
            cv2.imwrite(str(base / "JPEGImages" / f"{i}.jpg"), np.full((48, 64, 3), 90, np.uint8))
            objs = "".join(
                f"<object><name>{n}</name><difficult>{dif}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}"
                f"</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, dif, b in objects)
            (base / "Annotations" / f"{i}.xml").write_text(
                f"<annotation><filename>{i}.jpg</filename><size><width>64</width><height>48</height><depth>3"
                f"</depth></size>{objs}</annotation>")


VOC_OBJECTS = [("dog", 0, (11, 9, 31, 41)), ("cat", 1, (1, 1, 10, 10)), ("unicorn", 0, (1, 1, 5, 5)),
               ("cat", 0, (33, 1, 64, 48))]


def test_voc_box_formula():
    # centre (21, 25) - 1 on the 0-based grid, size 20x32, over a 64x48 image
    assert voc_box_to_yolo((64, 48), 11, 31, 9, 41) == pytest.approx((20 / 64, 24 / 48, 20 / 64, 32 / 48))


def test_voc_converter_on_a_generated_tree(tmp_path):
    write_voc(tmp_path / "images" / "VOCdevkit", "2007", {"train": ["000001", "000002"], "test": ["000003"]},
              VOC_OBJECTS)
    voc_to_yolo(tmp_path, {"names": {0: "cat", 1: "dog"}})
    assert sorted(p.name for p in (tmp_path / "images" / "train2007").iterdir()) == ["000001.jpg", "000002.jpg"]
    assert not (tmp_path / "images" / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000001.jpg").exists()  # moved
    rows = (tmp_path / "labels" / "test2007" / "000003.txt").read_text().splitlines()
    assert rows == ["1 0.312500 0.500000 0.312500 0.666667", "0 0.742188 0.489583 0.484375 0.979167"]  # no difficult
    bad = tmp_path / "bad.xml"
    bad.write_text("<annotation><object><name>cat</name></object>")
    with pytest.raises(match="bad.xml: not valid XML"):
        annotation_rows(bad, {"cat": 0})
    with pytest.raises(match="no VOC<year>/ImageSets"):
        voc_to_yolo(tmp_path / "empty", {"names": {0: "cat"}})


def test_voc_yaml_form_downloads_and_converts(tmp_path, http_files):
    www, url = http_files
    for year, sets in (("2007", {"train": ["a1", "a2"], "test": ["t1"]}), ("2012", {"val": ["b1"]})):
        write_voc(tmp_path / "src" / year / "VOCdevkit", year, sets, VOC_OBJECTS)
        zip_tree(tmp_path / "src" / year / "VOCdevkit", www / f"VOC{year}.zip", "VOCdevkit")
    f = tmp_path / "VOC.yaml"
    f.write_text(yaml.safe_dump({
        "path": str(tmp_path / "datasets" / "VOC"), "train": ["images/train2007", "images/val2012"],
        "val": ["images/test2007"], "names": {0: "cat", 1: "dog"},
        "download": {"dir": "images", "convert": "voc", "urls": [f"{url}/VOC2007.zip", f"{url}/VOC2012.zip"]}}))
    d = check_dataset(f)
    root = tmp_path / "datasets" / "VOC"
    assert (root / "images" / "test2007" / "t1.jpg").is_file() and (root / "labels" / "val2012" / "b1.txt").is_file()
    assert len((root / "labels" / "train2007" / "a2.txt").read_text().splitlines()) == 2
    assert d["train"] == [str(root / "images" / "train2007"), str(root / "images" / "val2012")]
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == ["VOC"]


# --- the YAMLs we ship ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, nc, urls", [
    ("coco128.yaml", 80, ["https://ultralytics.com/assets/coco128.zip"]),
    ("coco128-seg.yaml", 80, ["https://ultralytics.com/assets/coco128-seg.zip"]),
    ("coco.yaml", 80, [f"{V1}coco2017labels.zip"] + [f"http://images.cocodataset.org/zips/{s}2017.zip"
                                                      for s in ("train", "val", "test")]),
    ("VOC.yaml", 20, [f"{V1}VOCtrainval_06-Nov-2007.zip", f"{V1}VOCtest_06-Nov-2007.zip",
                      f"{V1}VOCtrainval_11-May-2012.zip"]),
    ("ImageNet.yaml", 1000, []),
])
def test_upstream_yamls_by_name(name, nc, urls):
    f = find_file(name)
    assert f == ROOT / "data" / name  # --data coco128.yaml finds data/coco128.yaml, as upstream
    d = yaml.safe_load(f.read_text())
    assert len(d["names"]) == nc and d["path"] == f"../datasets/{Path(name).stem.replace('ImageNet', 'imagenet')}"
    if urls:
        root = (ROOT / d["path"]).resolve()
        plan = parse_download(d["download"], root, name, "val")
        assert [a.url for a in plan.archives] == urls and plan.base == root.parent  # ../datasets beside the repo
        if name == "coco.yaml":
            assert [a.dir for a in plan.archives] == [root.parent] + [root / "images"] * 3
        if name == "VOC.yaml":
            assert plan.convert == "voc" and {a.dir for a in plan.archives} == {root / "images"}
    else:
        assert "download" not in d


def test_classify_names_fetch_v7_urls():
    from utils.tasks.classify.dataset import NAMED_SETS, NAMED_SETS_URL

    assert NAMED_SETS_URL.format(name="imagenette160") == f"{V1}imagenette160.zip"
    assert {"imagenette", "imagewoof320", "mnist", "fashion-mnist", "cifar10", "cifar100"} <= set(NAMED_SETS)


def test_coco128_by_name_without_download_names_url_and_folder(tmp_path):
    d = yaml.safe_load((ROOT / "data" / "coco128.yaml").read_text())
    root = (ROOT / d["path"]).resolve()
    if root.exists():
        pytest.skip(f"{root} exists on this machine")
    with pytest.raises(DatasetError) as e:
        check_dataset("coco128.yaml", autodownload=False)
    assert str(e.value) == (f"{ROOT / 'data' / 'coco128.yaml'}: dataset not found at {root / 'images' / 'train2017'} "
                            f"(automatic download is off): download https://ultralytics.com/assets/coco128.zip and "
                            f"unpack it into {root.parent}")


# --- classification sets by name (classify/train.py --data imagenette160) -------------------------------------------

@pytest.fixture
def named_sets(tmp_path, http_files, monkeypatch):
    """DOWNLOADS_DIR in tmp_path, and v7.0's release URL for named sets pointed at the local server."""
    from utils import paths
    from utils.tasks.classify import dataset as cls_dataset

    www, url = http_files
    monkeypatch.setattr(paths, "DOWNLOADS_DIR", tmp_path / "datasets")
    monkeypatch.setattr(paths, "DATASETS_DIR", tmp_path / "ours")
    monkeypatch.setattr(cls_dataset, "NAMED_SETS_URL", url + "/{name}.zip")
    return www


def test_classify_set_by_name_is_downloaded_and_trained_on(tmp_path, named_sets):
    from classify import train
    from utils.tasks.classify.dataset import check_classify_data
    from utils.tasks.classify.synthetic import generate_shapes_cls

    src = generate_shapes_cls(tmp_path / "src", n_train=6, n_val=3, size=32)
    zip_tree(src, named_sets / "imagenette160.zip", "imagenette160")
    figures = train.run(data="imagenette160", imgsz=64, epochs=1, batch_size=8, workers=0, device="cpu",
                        project=str(tmp_path / "train"), name="exp")
    root = tmp_path / "datasets" / "imagenette160"
    assert "metrics/accuracy_top1" in figures and (root / "train").is_dir()
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == ["imagenette160"]
    assert check_classify_data("imagenette160")["path"] == str(root)  # found again without a download


def test_classify_set_by_name_offline_and_unknown_names(tmp_path, named_sets, monkeypatch):
    from utils.tasks.classify import dataset as cls_dataset

    url = unreachable_url("{name}.zip")
    monkeypatch.setattr(cls_dataset, "NAMED_SETS_URL", url)
    with pytest.raises(DatasetError) as e:
        cls_dataset.check_classify_data("cifar10")
    dest = tmp_path / "datasets"
    assert str(e.value) == (f"cifar10: dataset not found at {dest / 'cifar10'} and {url.format(name='cifar10')} "
                            f"could not be downloaded (offline?): download it and unpack it into {dest}")
    with pytest.raises(DatasetError, match="not downloaded automatically .image-net.org needs an account"):
        cls_dataset.check_classify_data("imagenet")
    with pytest.raises(DatasetError, match="mnist9: dataset folder not found"):  # not a set v7.0 publishes
        cls_dataset.check_classify_data("mnist9")
    with pytest.raises(DatasetError, match="mnist: dataset folder not found"):  # names only (predict): no download
        cls_dataset.check_classify_data("mnist", autodownload=False)


@pytest.mark.parametrize("name", ["hyp.VOC.yaml", "hyp.Objects365.yaml"])
def test_upstream_hyp_files_by_name(name):
    hyp = yaml.safe_load(find_file(name).read_text())  # --hyp hyp.VOC.yaml finds data/hyps/, as upstream
    base = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    assert set(hyp) == set(base) | {"anchors"} and all(isinstance(v, (int, float)) for v in hyp.values())
