"""Cityscapes: label table from cityscapesscripts, the converter on a generated tree with real file naming, mIoU against
cityscapesscripts' own evaluation, and the benchmark submission writer.

The tree (256x128 frames) is written by the test: polygons JSON, and labelIds / instanceIds PNGs rendered from those
polygons by cityscapesscripts itself, so the files agree the way the real download's do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("cityscapesscripts")

from cityscapesscripts.helpers.annotation import Annotation  # noqa: E402
from cityscapesscripts.helpers.labels import labels as cs_table  # noqa: E402
from cityscapesscripts.helpers.labels import name2label  # noqa: E402
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage  # noqa: E402
from cityscapesscripts.preparation.json2labelImg import createLabelImage  # noqa: E402

from utils.data.dataset_config import DatasetError, check_dataset  # noqa: E402
from utils.data.labels import swap_dir  # noqa: E402
from utils.data.semantic_spec import SemanticSpec  # noqa: E402
from utils.tasks.semantic.cityscapes import (  # noqa: E402
    ConvertOptions,
    boxes_from_instance_ids,
    boxes_from_polygons,
    convert,
    rasterise_train_ids,
)
from utils.tasks.semantic.labels import (  # noqa: E402
    DETECTION_CLASSES,
    cityscapes_labels,
    ids_to_train_ids,
    is_cityscapes,
    train_ids_to_ids,
)
from utils.tasks.semantic.metric import SemanticConfusion  # noqa: E402
from utils.tasks.semantic.submission import submission_name, write_submission  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
W, H = 256, 128
CLS = {c: i for i, c in enumerate(DETECTION_CLASSES)}


def _objects(s: int = 0) -> list[dict]:
    """One frame's polygons in drawing order; instances never overlap, so visible pixels = polygon extents."""
    return [
        {"label": "sky", "polygon": [[0, 0], [255, 0], [255, 40], [0, 40]]},
        {"label": "building", "polygon": [[0, 41], [255, 41], [255, 63], [0, 63]]},
        {"label": "road", "polygon": [[0, 64], [255, 64], [255, 127], [0, 127]]},
        {"label": "sidewalk", "polygon": [[200, 64], [255, 64], [255, 90]]},
        {"label": "car", "polygon": [[20 + s, 70], [60 + s, 70], [60 + s, 100], [20 + s, 100]]},
        {"label": "car", "polygon": [[230, 80], [270, 80], [270, 110], [230, 110]]},  # leaves the image
        {"label": "person", "polygon": [[100, 60], [110, 60], [112, 100], [98, 100]]},
        {"label": "cargroup", "polygon": [[130, 70], [170, 70], [170, 90], [130, 90]]},  # crowd, no instance
        {"label": "traffic sign", "polygon": [[180, 10], [190, 10], [190, 20], [180, 20]]},
        {"label": "car", "polygon": [[5, 5], [15, 5], [15, 15]], "deleted": 1},
        {"label": "license plate", "polygon": [[30 + s, 90], [40 + s, 90], [40 + s, 95], [30 + s, 95]]},
        {"label": "bicycle", "polygon": [[150, 100], [152, 100], [152, 102]]},  # a 3x3 px box
        {"label": "ego vehicle", "polygon": [[0, 120], [255, 120], [255, 127], [0, 127]]},
        {"label": "car", "polygon": [[300, 10], [320, 10], [320, 20]]},  # entirely outside: no box
    ]


def _expected_boxes(s: int = 0) -> list[tuple]:
    """(class, x1, y1, x2, y2) in pixels, worked out by hand from _objects."""
    return [(CLS["car"], 20 + s, 70, 61 + s, 101), (CLS["car"], 230, 80, 256, 111), (CLS["person"], 98, 60, 113, 101),
            (CLS["traffic sign"], 180, 10, 191, 21), (CLS["bicycle"], 150, 100, 153, 103)]


def _annotation(s: int = 0, w: int = W, h: int = H) -> dict:
    return {"imgHeight": h, "imgWidth": w, "objects": _objects(s)}


def _cs_annotation(d: dict) -> Annotation:
    a = Annotation()
    a.fromJsonText(json.dumps(d))
    return a


def _write_frame(root: Path, split: str, city: str, core: str, s: int = 0, image_wh=(W, H),
                 polygons: bool = True, pngs: bool = True, gt: bool = True) -> Path:
    img = root / "leftImg8bit" / split / city / f"{core}_leftImg8bit.png"
    img.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(core) + s)
    cv2.imwrite(str(img), rng.integers(0, 255, (image_wh[1], image_wh[0], 3), dtype=np.uint8))
    if not gt:
        return img
    g = root / "gtFine" / split / city
    g.mkdir(parents=True, exist_ok=True)
    ann = _annotation(s)
    if polygons:
        (g / f"{core}_gtFine_polygons.json").write_text(json.dumps(ann))
    if pngs:
        a = _cs_annotation(ann)
        createLabelImage(a, "ids").save(g / f"{core}_gtFine_labelIds.png")
        inst = np.asarray(createInstanceImage(a, "ids"), dtype=np.int32).astype(np.uint16)
        cv2.imwrite(str(g / f"{core}_gtFine_instanceIds.png"), inst)
    return img


@pytest.fixture
def city_tree(tmp_path) -> Path:
    """2 train cities, 2 val cities, a test city; one size mismatch, one image without gt, one gt without image."""
    root = tmp_path / "cityscapes"
    _write_frame(root, "train", "aachen", "aachen_000000_000019", s=0)
    _write_frame(root, "train", "aachen", "aachen_000001_000019", s=10)
    _write_frame(root, "train", "bremen", "bremen_000000_000019", s=20)
    _write_frame(root, "train", "bremen", "bremen_000001_000019", image_wh=(128, 64))  # gt says 256x128
    _write_frame(root, "train", "bremen", "bremen_000002_000019", gt=False)
    _write_frame(root, "val", "frankfurt", "frankfurt_000000_000294", s=5)
    _write_frame(root, "val", "frankfurt", "frankfurt_000001_000294", s=15)
    _write_frame(root, "val", "munster", "munster_000000_000019", s=25, polygons=False)  # PNGs only
    _write_frame(root, "test", "berlin", "berlin_000000_000019", gt=False)
    orphan = root / "gtFine" / "val" / "frankfurt" / "frankfurt_000009_000294_gtFine_polygons.json"
    orphan.write_text(json.dumps(_annotation()))
    return root


def _read_boxes(path: Path) -> list[tuple]:
    """YOLO txt -> (class, x1, y1, x2, y2) in pixels of a WxH frame, rounded to 1e-3 px."""
    out = []
    for line in path.read_text().splitlines():
        c, x, y, w, h = (float(v) for v in line.split())
        out.append((int(c), *(round(v, 3) for v in ((x - w / 2) * W, (y - h / 2) * H, (x + w / 2) * W,
                                                     (y + h / 2) * H))))
    return out


# --- the label table ---------------------------------------------------------------------------------------


def test_label_table_comes_from_cityscapesscripts():
    cs = cityscapes_labels()
    evaluated = [lb for lb in cs_table if 0 <= lb.trainId < 255]
    assert len(cs.names) == 19 == len(evaluated)
    for lb in evaluated:
        assert cs.names[lb.trainId] == lb.name
        assert tuple(cs.colors[lb.trainId]) == lb.color
        assert cs.train_to_id[lb.trainId] == lb.id
        assert cs.id_to_train[lb.id] == lb.trainId
    assert tuple(cs.colors[name2label["sky"].trainId]) == name2label["sky"].color == (70, 130, 180)  # not [0, 130, 180]
    ids = np.arange(34, dtype=np.uint8)
    back = train_ids_to_ids(ids_to_train_ids(ids))
    evaluated_ids = [lb.id for lb in evaluated]
    assert (back[evaluated_ids] == evaluated_ids).all()
    assert ids_to_train_ids(np.array([name2label["parking"].id, 0, -1, 300])).tolist() == [255] * 4
    assert train_ids_to_ids(np.array([255, -1, 19])).tolist() == [0, 0, 0]  # ignore -> 'unlabeled'


def test_template_yaml_matches_the_package_table():
    d = yaml.safe_load((ROOT / "data" / "cityscapes.yaml").read_text())
    assert d["semantic"]["names"] == cityscapes_labels().names
    assert list(d["names"].values()) == list(DETECTION_CLASSES)
    spec = SemanticSpec.from_data(d)
    assert spec.nc == 19 and spec.ignore_index == 255 and spec.palette == "cityscapes" and is_cityscapes(spec.names)


# --- conversion --------------------------------------------------------------------------------------------


def test_rasterised_train_ids_equal_cityscapesscripts(city_tree):
    for s in (0, 10, 33):
        ann = _annotation(s)
        ours = rasterise_train_ids(ann)
        theirs = np.asarray(createLabelImage(_cs_annotation(ann), "trainIds"))
        assert ours.dtype == np.uint8 and ours.shape == (H, W)
        assert np.array_equal(ours, theirs)
        via_ids = ids_to_train_ids(np.asarray(createLabelImage(_cs_annotation(ann), "ids")))
        assert np.array_equal(ours, via_ids)
    assert set(np.unique(ours)) >= {255, 0, 10, 13}  # ego vehicle / unlabeled ignored, road, sky, car


def test_boxes_from_polygons_and_instance_ids_agree():
    ann = _annotation(7)
    opt = ConvertOptions()
    poly = boxes_from_polygons(ann, opt)
    assert sorted(poly) == sorted(_expected_boxes(7))
    inst = np.asarray(createInstanceImage(_cs_annotation(ann), "ids"), dtype=np.int32)
    assert sorted(boxes_from_instance_ids(inst, opt)) == sorted(poly)
    big = ConvertOptions(min_size=4)
    assert sorted(boxes_from_polygons(ann, big)) == sorted(b for b in poly if b[0] != CLS["bicycle"])
    assert sorted(boxes_from_instance_ids(inst, big)) == sorted(boxes_from_polygons(ann, big))
    groups = ConvertOptions(keep_groups=True)
    crowd = (CLS["car"], 130.0, 70.0, 171.0, 91.0)
    assert crowd in boxes_from_polygons(ann, groups) and crowd in boxes_from_instance_ids(inst, groups)


def test_convert_tree(city_tree):
    root = city_tree
    rep = convert(root)
    assert rep.frames == {"train": 5, "val": 3, "test": 1}
    assert rep.converted == {"train": 3, "val": 3}
    assert rep.masks_written == 6 and rep.masks_kept == 0 and rep.boxes == 6 * 5

    # every bad frame reported by name, and only those
    text = "\n".join(rep.problems)
    assert len(rep.problems) == 3, text
    assert "bremen_000001_000019_leftImg8bit.png: image is 128x64 but bremen_000001_000019_gtFine_polygons.json " \
           "says 256x128" in text
    assert "bremen_000002_000019_leftImg8bit.png: no ground truth" in text
    assert "frankfurt_000009_000294_gtFine_polygons.json: ground truth without an image" in text

    # boxes from polygons, and from instanceIds where the polygons are missing
    lab = root / "labels"
    assert _read_boxes(lab / "train" / "aachen" / "aachen_000001_000019_leftImg8bit.txt") == \
        [tuple(float(v) if i else v for i, v in enumerate(b)) for b in _expected_boxes(10)]
    assert sorted(_read_boxes(lab / "val" / "munster" / "munster_000000_000019_leftImg8bit.txt")) == \
        sorted(tuple(float(v) if i else v for i, v in enumerate(b)) for b in _expected_boxes(25))
    assert not (lab / "train" / "bremen" / "bremen_000001_000019_leftImg8bit.txt").exists()
    assert not (lab / "train" / "bremen" / "bremen_000002_000019_leftImg8bit.txt").exists()
    assert not (lab / "test").exists()

    # train-id masks, from polygons and (munster) from labelIds, agree with cityscapesscripts
    for split, city, core, s in (("train", "aachen", "aachen_000000_000019", 0),
                                 ("val", "munster", "munster_000000_000019", 25)):
        m = cv2.imread(str(root / "gtFine" / split / city / f"{core}_gtFine_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
        assert m.dtype == np.uint8 and m.shape == (H, W)
        assert np.array_equal(m, np.asarray(createLabelImage(_cs_annotation(_annotation(s)), "trainIds")))

    # the data YAML: loads, pairs each image with its box label and mask by the contract's rules
    y = root / "cityscapes.yaml"
    assert rep.yaml_file == y
    d = check_dataset(str(y))
    assert Path(d["path"]) == root.resolve() and d["nc"] == 10 and Path(d["test"]).is_dir()
    spec = SemanticSpec.from_data(d)
    img = Path(d["train"]) / "aachen" / "aachen_000000_000019_leftImg8bit.png"
    mask = root.resolve() / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png"
    assert Path(spec.mask_path(img)) == mask
    box = os.path.splitext(swap_dir(img, d["images_dir"], d["labels_dir"]))[0] + ".txt"
    assert Path(box).is_file() and Path(spec.mask_path(img)).is_file()
    assert spec.names == cityscapes_labels().names and spec.palette == "cityscapes"


def test_convert_is_idempotent_and_overwrite_rewrites(city_tree):
    convert(city_tree)
    masks = sorted(city_tree.glob("gtFine/*/*/*_gtFine_labelTrainIds.png"))
    labels = sorted(city_tree.glob("labels/*/*/*.txt"))
    assert len(masks) == 6 and len(labels) == 6
    for m in masks:
        os.utime(m, (1, 1))
    before = {p: p.read_bytes() for p in labels + masks}
    rep = convert(city_tree)
    assert rep.masks_written == 0 and rep.masks_kept == 6
    assert all(m.stat().st_mtime == 1 for m in masks)
    assert {p: p.read_bytes() for p in labels + masks} == before
    assert not list(city_tree.glob("gtFine/**/*.tmp.png"))
    rep = convert(city_tree, ConvertOptions(overwrite=True))
    assert rep.masks_written == 6 and all(m.stat().st_mtime > 1 for m in masks)
    assert {p: p.read_bytes() for p in labels + masks} == before


def test_convert_reports_unreadable_and_unknown(city_tree):
    g = city_tree / "gtFine" / "train" / "aachen"
    (g / "aachen_000000_000019_gtFine_polygons.json").write_text("{not json")
    ann = _annotation(10)
    ann["objects"].append({"label": "spaceship", "polygon": [[0, 0], [10, 0], [10, 10]]})
    (g / "aachen_000001_000019_gtFine_polygons.json").write_text(json.dumps(ann))
    rep = convert(city_tree)
    text = "\n".join(rep.problems)
    assert "aachen_000000_000019_leftImg8bit.png: aachen_000000_000019_gtFine_polygons.json unreadable" in text
    assert "aachen_000001_000019_leftImg8bit.png: unknown label 'spaceship' drawn as ignore" in text
    # the unreadable JSON falls back to the PNGs: same boxes and mask as the polygons would give
    assert sorted(_read_boxes(city_tree / "labels/train/aachen/aachen_000000_000019_leftImg8bit.txt")) == \
        sorted(tuple(float(v) if i else v for i, v in enumerate(b)) for b in _expected_boxes(0))
    m = cv2.imread(str(g / "aachen_000001_000019_gtFine_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
    assert (m[:10, :10][np.triu_indices(10)] == 255).all()


def test_convert_names_unknown_instance_ids_and_misnamed_files(city_tree):
    g = city_tree / "gtFine" / "val" / "munster"  # the PNG-only frame: its boxes come from instanceIds
    f = g / "munster_000000_000019_gtFine_instanceIds.png"
    inst = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
    inst[:4, :4] = 60001  # label id 60: in no Cityscapes label table
    cv2.imwrite(str(f), inst)
    left = city_tree / "leftImg8bit"
    for name in ("val/frankfurt/frankfurt_000002_leftImg8bit.png", "val/frankfurt/snapshot.png",
                 "train/aachen/bremen_000000_000019_leftImg8bit.png", "stray.png"):
        (left / name).write_bytes(b"")
    rep = convert(city_tree)
    text = "\n".join(rep.problems)
    assert "munster_000000_000019_gtFine_instanceIds.png: instance id 60001 (label id 60) is not in the Cityscapes " \
           "label table" in text
    for name in ("val/frankfurt/frankfurt_000002_leftImg8bit.png", "val/frankfurt/snapshot.png",
                 "train/aachen/bremen_000000_000019_leftImg8bit.png", "stray.png"):
        assert f"leftImg8bit/{name}: not named as Cityscapes names frames" in text, name
    assert "frankfurt_000000_000294_leftImg8bit.png: not named" not in text


def test_cli_flags(city_tree, tmp_path):
    sys.path.insert(0, str(ROOT / "data" / "scripts"))
    try:
        import cityscapes_to_yolo as cli
    finally:
        sys.path.pop(0)
    opt = cli.parse_opt(["--root", str(city_tree), "--classes", "car", "bicycle", "--min-size", "4", "--keep-groups",
                         "--source", "instanceIds", "--overwrite", "--workers", "2"])
    rep = cli.main(opt)
    assert rep.masks_written == 6
    boxes = _read_boxes(city_tree / "labels/train/aachen/aachen_000000_000019_leftImg8bit.txt")
    assert sorted(b[0] for b in boxes) == [0, 0, 0]  # car, car, cargroup; the 3x3 bicycle is under --min-size
    y = yaml.safe_load((city_tree / "cityscapes.yaml").read_text())
    assert y["names"] == {0: "car", 1: "bicycle"}
    assert cli.parse_opt([str(city_tree)]).root == str(city_tree)
    with pytest.raises(DatasetError, match="no leftImg8bit folder"):
        cli.main(cli.parse_opt([str(tmp_path / "nowhere")]))
    with pytest.raises(DatasetError, match="unknown Cityscapes class 'spaceship'"):
        cli.main(cli.parse_opt([str(city_tree), "--classes", "spaceship"]))

    # exit codes: some bad frames still succeed; nothing convertible fails with one line
    script = str(ROOT / "data" / "scripts" / "cityscapes_to_yolo.py")
    ok = subprocess.run([sys.executable, script, str(city_tree)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "bremen_000002_000019_leftImg8bit.png: no ground truth" in ok.stdout
    empty = tmp_path / "only_test"
    _write_frame(empty, "test", "berlin", "berlin_000000_000019", gt=False)
    bad = subprocess.run([sys.executable, script, "--root", str(empty)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "ERROR:" in bad.stdout and "no frame could be converted" in bad.stdout and "Traceback" not in bad.stderr


# --- evaluation against cityscapesscripts -----------------------------------------------------------------


def _cs_evaluate(pred_dir: Path, gt_files: list[Path]) -> dict:
    """cityscapesscripts' pixel-level evaluation, its instance-level part off (it calls np.in1d, gone in numpy 2)."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

    args = ev.CArgs()
    for k, v in vars(ev.args).items():
        setattr(args, k, v)
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    args.bold = args.nocol = ""
    args.predictionPath, args.predictionWalk = str(pred_dir), None
    preds = [ev.getPrediction(args, str(g)) for g in gt_files]  # also proves the submission names match
    return ev.evaluateImgLists(preds, [str(g) for g in gt_files], args)


def test_miou_equals_cityscapesscripts(city_tree, tmp_path):
    convert(city_tree)
    gts = sorted(city_tree.glob("gtFine/val/*/*_gtFine_labelIds.png"))
    assert len(gts) == 3
    rng = np.random.default_rng(0)
    metric = SemanticConfusion(19)
    out = tmp_path / "results"
    for g in gts:
        core = g.name[: -len("_gtFine_labelIds.png")]
        target = cv2.imread(str(g).replace("labelIds", "labelTrainIds"), cv2.IMREAD_UNCHANGED)
        pred = target.astype(np.int64)
        noise = rng.random(pred.shape) < 0.3
        pred[noise] = rng.choice([0, 2, 10, 13, 17], size=int(noise.sum()))  # 17 (motorcycle): only false positives
        pred[pred == 255] = rng.choice([1, 8], size=int((pred == 255).sum()))
        image = city_tree / "leftImg8bit" / "val" / g.parent.name / f"{core}_leftImg8bit.png"
        write_submission(pred, image, out)
        metric.update(torch.from_numpy(pred), torch.from_numpy(target))
    res = _cs_evaluate(out, gts)
    ours = metric.compute()
    assert abs(ours["metrics/mIoU"] - res["averageScoreClasses"]) < 1e-6
    iou = metric.iou()
    for t, name in cityscapes_labels().names.items():
        theirs = res["classScores"][name]
        assert (np.isnan(iou[t]) and np.isnan(theirs)) or abs(iou[t] - theirs) < 1e-9, name
    assert np.isnan(iou[16]) and iou[17] == 0.0  # train: in neither; motorcycle: predicted, never labelled
    assert 0.2 < ours["metrics/mIoU"] < 0.9


# --- submission --------------------------------------------------------------------------------------------


def test_write_submission(tmp_path):
    img = tmp_path / "leftImg8bit" / "test" / "berlin" / "berlin_000123_000019_leftImg8bit.png"
    img.parent.mkdir(parents=True)
    cv2.imwrite(str(img), np.zeros((40, 60, 3), np.uint8))
    pred = torch.zeros(40, 60, dtype=torch.long)
    pred[:, 30:] = 13  # car
    pred[0, 0] = 255  # an ignore that slipped through: written as 'unlabeled'
    out = write_submission(pred, img, tmp_path / "results")
    assert out == tmp_path / "results" / "berlin_000123_000019_pred.png"
    a = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert a.ndim == 2 and a.dtype == np.uint8 and a.shape == (40, 60)
    assert a[5, 40] == name2label["car"].id and a[5, 5] == name2label["road"].id and a[0, 0] == 0
    with pytest.raises(ValueError, match="map it back to full resolution"):
        write_submission(pred[:20], img, tmp_path / "results")
    with pytest.raises(DatasetError, match="not a Cityscapes file name"):
        submission_name("holiday.jpg")
    assert submission_name("bad-honnef_000000_000019.png") == "bad-honnef_000000_000019_pred.png"


# --- the workflow ---------------------------------------------------------------------------------------------------


def test_workflow_convert_train_val_submit(city_tree, tmp_path):
    """Cityscapes-like tree -> convert -> one epoch of yolov5n-city (the scale-crop recipe) -> val.py -> detect.py
    --submit; the submission files are what cityscapesscripts' evaluation reads."""
    import detect
    import train
    import val

    convert(city_tree)
    data = str(city_tree / "cityscapes.yaml")
    train.run(data=data, cfg="yolov5n-city.yaml", imgsz=128, batch_size=2, epochs=1, workers=0, noautoanchor=True,
              noplots=True, project=str(tmp_path), name="run")
    best = str(tmp_path / "run" / "weights" / "best.pt")
    res = val.run(weights=best, data=data, imgsz=128, project=str(tmp_path), name="val")
    assert {"metrics/mAP_0.5", "metrics/mIoU"} <= set(res.figures) and 0 <= res.figures["metrics/mIoU"] <= 1
    frames = str(city_tree / "leftImg8bit" / "val" / "*" / "*.png")  # a folder source is not searched recursively
    out = detect.run(weights=best, source=frames, imgsz=[128], submit=True, nosave=True, project=str(tmp_path),
                     name="submit")
    sub = sorted((out / "submit").glob("*_pred.png"))
    assert [p.name for p in sub] == ["frankfurt_000000_000294_pred.png", "frankfurt_000001_000294_pred.png",
                                     "munster_000000_000019_pred.png"]
    ids = np.unique(np.concatenate([np.unique(cv2.imread(str(p), cv2.IMREAD_UNCHANGED)) for p in sub]))
    assert set(ids.tolist()) <= {lb.id for lb in cs_table if lb.trainId not in (255, -1)}  # label ids, not train ids
    assert not list(out.glob("*.png")) and not (out / "maps").exists()  # --nosave: no pictures
    res = _cs_evaluate(out / "submit", sorted(city_tree.glob("gtFine/val/*/*_gtFine_labelIds.png")))
    assert 0 <= res["averageScoreClasses"] <= 1
