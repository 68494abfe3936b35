"""Per-pixel class masks through the data pipeline: the mask moves with its image through every geometric transform,
the mask path rule and id remapping of the data contract, mixed label kinds, bad masks, batches, the scale-crop recipe.

Scenes are flat colour regions and the mask is the class of each pixel's colour, so after any transform the mask must
still equal the class of the colour found at each pixel (padding: grey image, ignore in the mask). Images are
resampled with nearest-neighbour here (image_interp) so that equality is exact; training uses bilinear images.
"""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from utils.data.augment import (
    augment_hsv,
    copy_paste,
    flip_lr,
    flip_ud,
    letterbox_sample,
    mixup,
    random_perspective,
    random_scale_crop,
)
from utils.data.labels import img2label_paths
from utils.data.sample import from_labels, new_sample
from utils.data.semantic_spec import SemanticSpec
from utils.tasks.detect.dataset import create_dataloader
from utils.tasks.semantic.dataset import SemanticDataset

PAL = np.array([[30, 60, 200], [200, 40, 40], [40, 200, 60], [220, 220, 30], [160, 40, 200]], np.uint8)  # BGR
NEAREST = cv2.INTER_NEAREST
SEM = {"masks_dir": "masks", "image_suffix": "", "mask_suffix": ".png", "ignore_index": 255, "id_map": None,
       "names": {i: f"c{i}" for i in range(len(PAL))}}
NO_AUG = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, degrees=0.0, translate=0.0, scale=0.0, shear=0.0, perspective=0.0,
              flipud=0.0, fliplr=0.0, mosaic=0.0, mixup=0.0, copy_paste=0.0)
WARP = dict(degrees=25.0, translate=0.2, scale=0.5, shear=8.0, perspective=0.0008)


def scene(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    """(image of flat palette colours, class map, rectangles (cls, x1, y1, x2, y2) of the non-0 classes)."""
    rng = np.random.default_rng(seed)
    cls = np.zeros((h, w), np.uint8)
    rects = []
    for _ in range(6):
        c = int(rng.integers(1, len(PAL)))
        x1, y1 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        x2, y2 = min(w, x1 + int(rng.integers(6, w // 2))), min(h, y1 + int(rng.integers(6, h // 2)))
        cls[y1:y2, x1:x2] = c
        rects.append((c, x1, y1, x2, y2))
    return PAL[cls], cls, rects


def mask_of(img: np.ndarray, ignore: int = 255) -> np.ndarray:
    """The class of each pixel's palette colour; `ignore` where the colour is none of them (padding)."""
    out = np.full(img.shape[:2], ignore, np.uint8)
    for k, c in enumerate(PAL):
        out[(img == c).all(2)] = k
    return out


def assert_aligned(sample, ignore: int = 255) -> None:
    sem = sample["semantic"]
    sem = sem.numpy() if isinstance(sem, torch.Tensor) else sem
    img = sample["img"]
    if isinstance(img, torch.Tensor):  # CHW RGB tensor -> HWC BGR
        img = np.ascontiguousarray(img.permute(1, 2, 0).numpy()[:, :, ::-1])
    expected = mask_of(img, ignore)
    assert sem.shape == expected.shape
    bad = int((sem != expected).sum())
    assert bad == 0, f"{bad} mask pixels disagree with their image"


@pytest.mark.parametrize("seed", range(4))
def test_each_geometric_transform_moves_the_mask_with_the_image(seed):
    im, cls, _ = scene(70, 90, seed)
    assert (mask_of(im) == cls).all()
    random.seed(seed)
    base = new_sample(im, semantic=cls)  # no boxes at all
    for out in (random_perspective(base, **WARP, interp=NEAREST),
                random_perspective(base, **{**WARP, "perspective": 0.0}, interp=NEAREST),
                random_perspective(base, **WARP, border=(-10, -20), interp=NEAREST),  # the mosaic crop
                random_scale_crop(base, scale=(0.5, 2.0), crop=(48, 96), interp=NEAREST),
                letterbox_sample(base, (97, 61), interp=NEAREST)[0],
                letterbox_sample(base, 64, auto=True, stride=32, interp=NEAREST)[0],
                flip_lr(base), flip_ud(base)):
        assert_aligned(out)
        assert out["semantic"].dtype == np.uint8


def test_copy_paste_pastes_mask_classes_with_the_pixels():
    im, cls, rects = scene(64, 96, 3)
    sample = from_labels(im, np.array(rects, np.float32), [np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]],
                                                                    np.float32) for _, x1, y1, x2, y2 in rects],
                         semantic=cls)
    random.seed(0)
    out = copy_paste(sample, p=1.0)
    assert len(out["boxes"]) > len(rects)  # something was pasted
    assert_aligned(out)
    assert (sample["semantic"] == cls).all()  # the input is not modified


def test_sixteen_bit_masks_and_their_fill():
    im, cls, _ = scene(60, 80, 1)
    raw = cls.astype(np.uint16) * 1000 + 7
    random.seed(1)
    out = random_perspective(new_sample(im, semantic=raw), **WARP, interp=NEAREST, mask_fill=65535)
    sem = out["semantic"]
    assert sem.dtype == np.uint16
    assert (np.where(sem == 65535, 255, (sem.astype(np.int64) - 7) // 1000) == mask_of(out["img"])).all()


def test_colour_changes_touch_only_the_image_and_mixup_ignores_disagreement():
    im, cls, _ = scene(48, 48, 2)
    s = new_sample(im.copy(), semantic=cls.copy())
    np.random.seed(0)
    out = augment_hsv(s, 0.5, 0.5, 0.5)
    assert not (out["img"] == im).all() and (out["semantic"] == cls).all()
    im2, cls2, _ = scene(48, 48, 5)
    mixed = mixup(new_sample(im, semantic=cls), new_sample(im2, semantic=cls2, has_boxes=False))
    agree = cls == cls2
    assert (mixed["semantic"][agree] == cls[agree]).all() and (mixed["semantic"][~agree] == 255).all()
    assert mixed["has_semantic"] and not mixed["has_boxes"]


def test_random_scale_crop_keeps_boxes_on_their_pixels():
    rects = [(1, 5, 5, 40, 30), (2, 60, 10, 110, 70), (3, 20, 45, 50, 75)]  # apart from each other
    cls = np.zeros((80, 120), np.uint8)
    for c, x1, y1, x2, y2 in rects:
        cls[y1:y2, x1:x2] = c
    sample = from_labels(PAL[cls], np.array(rects, np.float32), semantic=cls)
    kept = 0
    for seed in range(10):
        random.seed(seed)
        out = random_scale_crop(sample, scale=(0.5, 2.0), crop=(64, 64), interp=NEAREST)
        assert out["img"].shape == (64, 64, 3) and out["semantic"].shape == (64, 64)
        assert_aligned(out)
        b = out["boxes"]
        assert (b >= 0).all() and (b <= 64).all()
        assert ((b[:, 2] - b[:, 0] > 2) & (b[:, 3] - b[:, 1] > 2)).all()  # slivers dropped, as upstream
        for c, (x1, y1, x2, y2) in zip(out["cls"], b):  # each box frames exactly the pixels of its class
            ys, xs = np.nonzero(out["semantic"] == c)
            np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], [x1, y1, x2, y2], atol=1)
        kept += len(b)
    assert kept >= 10


# --- the dataset ------------------------------------------------------------------------------------------------
def write_set(root: Path, n: int = 6, sizes=((40, 56), (56, 40), (48, 48)), labels: bool = True,
              masks: bool = True, split: str = "train", seed: int = 0) -> Path:
    """Flat-colour images, their masks computed from the pixels, and box labels of the rectangles."""
    im_dir = root / "images" / split
    im_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        im, cls, rects = scene(h, w, seed + i)
        cv2.imwrite(str(im_dir / f"s{seed}_{i}.png"), im)
        if masks:
            (root / "masks" / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "masks" / split / f"s{seed}_{i}.png"), cls)
        if labels:
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            rows = [f"{c - 1} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                    for c, x1, y1, x2, y2 in rects]
            (root / "labels" / split / f"s{seed}_{i}.txt").write_text("\n".join(rows) + "\n")
    return im_dir


class NearestSemanticDataset(SemanticDataset):
    image_interp = NEAREST  # also for the images cached at construction


def dataset(path, **kw) -> SemanticDataset:
    return NearestSemanticDataset(path, **{"img_size": 64, "batch_size": 2, "semantic": SEM, **kw})


@pytest.mark.parametrize("labels", [False, True])
def test_mosaic_perspective_and_flips_keep_the_mask_aligned(tmp_path, labels):
    im_dir = write_set(tmp_path, labels=labels)
    hyp = {**NO_AUG, **WARP, "mosaic": 1.0, "fliplr": 0.5, "flipud": 0.5}
    ds = dataset(im_dir, augment=True, hyp=hyp)
    random.seed(0)
    for k in range(8):
        item = ds[k % len(ds)]
        assert item["img"].shape == (3, 64, 64) and item["has_semantic"] and item["has_boxes"] == labels
        assert_aligned(item)
    assert ds.load_failures == 0


def test_scale_crop_recipe_and_letterboxed_validation_keep_the_mask_aligned(tmp_path):
    im_dir = write_set(tmp_path)
    hyp = {**NO_AUG, "scale_crop": 1.0, "crop_h": 0.5, "fliplr": 0.5}
    ds = dataset(im_dir, augment=True, hyp=hyp)
    random.seed(1)
    for k in range(6):
        item = ds[k]
        assert item["img"].shape == (3, 32, 64)
        assert_aligned(item)
    for rect in (False, True):
        ds = dataset(im_dir, augment=False, rect=rect, pad=0.5)
        for k in range(len(ds)):
            item = ds[k]
            assert item["shapes"] is not None
            assert_aligned(item)
    with pytest.raises(ValueError, match="crop_h = crop_w = 1.0"):
        dataset(im_dir, augment=True, hyp={**NO_AUG, "mosaic": 1.0, "scale_crop": 0.5, "crop_h": 0.5})


def test_ram_cache_holds_the_masks(tmp_path):
    im_dir = write_set(tmp_path)
    ds = dataset(im_dir, augment=True, hyp={**NO_AUG, **WARP, "mosaic": 1.0}, cache_images="ram")
    assert all(m is not None for m in ds.sems) and ds.sems[0].shape == ds.ims[0].shape[:2]
    for f in ds.mask_files:
        Path(f).unlink()  # served from the cache from now on
    random.seed(0)
    assert_aligned(ds[0])
    assert ds.load_failures == 0


def test_mixed_label_kinds_and_collated_batch(tmp_path, log):
    write_set(tmp_path, n=4, labels=True, masks=True, seed=0)
    write_set(tmp_path, n=3, labels=False, masks=True, seed=1)  # segmentation-only images
    write_set(tmp_path, n=3, labels=True, masks=False, seed=2)  # detection-only images
    seg_only = write_set(tmp_path / "seg_only", n=2, labels=False)
    assert not dataset(seg_only).has_boxes.any()
    assert not any("no labels folder" in r.getMessage() for r in log.records)  # normal for a set with masks
    ds = dataset(tmp_path / "images" / "train", augment=True, hyp={**NO_AUG, "mosaic": 1.0, "mixup": 0.5})
    kinds = {Path(f).stem[:2]: (b, s) for f, b, s in zip(ds.im_files, ds.has_boxes, ds.has_semantic)}
    assert kinds == {"s0": (True, True), "s1": (False, True), "s2": (True, False)}
    assert any("7/10 images with a semantic mask, 7/10 with box labels, 4 with both" in r.getMessage()
               for r in log.records)
    no_mask = [r.getMessage() for r in log.records if "without a semantic mask" in r.getMessage()]
    missing = sorted(Path(f).name for f, m in zip(ds.im_files, ds.has_semantic) if not m)
    assert len(no_mask) == 1 and all(name in no_mask[0] for name in missing)  # each image without a mask named
    for i in range(len(ds)):  # mosaic and mixup partners share the image's label kinds
        own = kinds[Path(ds.im_files[i]).stem[:2]]
        assert {(ds.has_boxes[j], ds.has_semantic[j]) for j in ds.mosaic_pool(i)} == {own}
    random.seed(0)
    np.random.seed(0)
    items = [ds[i] for i in range(len(ds))]
    for it in items:
        b, s = kinds[Path(it["path"]).stem[:2]]
        assert (it["has_boxes"], it["has_semantic"]) == (b, s)
        assert b or len(it["targets"]) == 0  # no label file: no boxes to learn from
        assert s or (it["semantic"] == 255).all()  # no mask: every pixel ignored
    batch = SemanticDataset.collate_fn(items[:4])
    assert set(batch) == {"img", "targets", "paths", "shapes", "semantic", "has_semantic", "has_boxes"}
    assert batch["semantic"].shape == (4, 64, 64) and batch["semantic"].dtype == torch.uint8
    assert batch["has_boxes"].dtype == torch.bool and batch["has_boxes"].shape == (4,)
    loader, _ = create_dataloader(str(tmp_path / "images" / "train"), 64, 4, 32, hyp=NO_AUG, augment=True,
                                  workers=1, shuffle=True, dataset_cls=SemanticDataset, dataset_kw={"semantic": SEM})
    b = next(iter(loader))
    assert b["semantic"].shape == (4, 64, 64) and b["img"].shape == (4, 3, 64, 64)


@pytest.mark.parametrize("problem", ["size", "unreadable", "channels"])
def test_bad_mask_skips_the_sample_with_one_warning(tmp_path, log, problem):
    im_dir = write_set(tmp_path)
    bad = tmp_path / "masks" / "train" / "s0_1.png"
    if problem == "size":
        cv2.imwrite(str(bad), np.zeros((10, 12), np.uint8))
    elif problem == "unreadable":
        bad.write_bytes(b"not a png")
    else:
        cv2.imwrite(str(bad), np.zeros((56, 40, 3), np.uint8))
    ds = dataset(im_dir, augment=False)
    paths = [ds[i]["path"] for i in range(len(ds))] + [ds[i]["path"] for i in range(len(ds))]
    assert str(im_dir / "s0_1.png") not in paths and len(paths) == 2 * len(ds)
    assert ds.load_failures == 2  # skipped and counted each time, never raised
    msgs = [r.getMessage() for r in log.records if str(bad) in r.getMessage()]
    assert len(msgs) == 1 and "using another image instead" in msgs[0]
    assert {"size": "differs from its image", "unreadable": "unreadable", "channels": "single-channel"}[problem] in \
        msgs[0]


def test_id_map_lookup_16_bit_and_unknown_values(tmp_path, log):
    m = SemanticSpec.from_yaml_section({"names": ["a", "b", "c"], "id_map": {1000: 0, 2000: 2, 65535: 1}})
    raw = np.array([[1000, 2000, 65535, 5]], np.uint16)
    out = m.remap(raw)
    assert out.tolist() == [[0, 2, 1, 255]] and m.dtype == np.uint8 and out.dtype == np.uint8
    ident = SemanticSpec.from_yaml_section({"names": ["a", "b", "c"]})
    assert ident.remap(np.array([[0, 2, 3, 255]], np.uint8)).tolist() == [[0, 2, 255, 255]]
    assert ident.unknown_values(np.array([[0, 3, 255, 9]], np.uint8)) == [3, 9]
    assert SemanticSpec.from_yaml_section({"names": list(range(300)), "ignore_index": 65535}).dtype == np.uint16
    # through the dataset: a 16-bit mask with sparse ids, and the warning for ids no class has
    im_dir = write_set(tmp_path, n=2)
    for f in sorted((tmp_path / "masks" / "train").glob("*.png")):
        cls = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(f), cls.astype(np.uint16) * 1000 + 1)
    sem = {**SEM, "id_map": {k * 1000 + 1: k for k in range(len(PAL))}}
    assert_aligned(dataset(im_dir, semantic=sem)[0])
    SemanticDataset(im_dir, img_size=64, batch_size=2, semantic=SEM)
    assert any("are no class id" in r.getMessage() for r in log.records)


def test_path_rules_follow_the_data_yaml():
    img = "/d/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    cs = SemanticSpec.from_yaml_section({"names": ["road"], "masks_dir": "gtFine", "image_suffix": "_leftImg8bit",
                                         "mask_suffix": "_gtFine_labelTrainIds.png"}, images_dir="leftImg8bit")
    assert cs.mask_path(img) == "/d/gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png"
    assert img2label_paths([img], "leftImg8bit", "labels") == [
        "/d/labels/train/aachen/aachen_000000_000019_leftImg8bit.txt"]
    coco = "/s/datasets/coco128/images/train2017/000000000009.jpg"
    beside = SemanticSpec.from_yaml_section({"names": ["a"], "masks_dir": "../coco128-semantic/masks"})
    assert beside.mask_path(coco) == "/s/datasets/coco128-semantic/masks/train2017/000000000009.png"  # beside the tree
    assert SemanticSpec.from_yaml_section({"names": ["a"], "masks_dir": "/m/sem"}).mask_path(coco) == \
        "/m/sem/train2017/000000000009.png"
    assert beside.find_mask_path("/x/a.png") is None  # no images/ component: no mask can be paired
    assert img2label_paths(["/d/images/a/images/b.jpg"]) == ["/d/images/a/labels/b.txt"]  # the LAST component


def box_coverage(item: dict, cls_det: int, cls_sem: int, flip: bool = False) -> list[float]:
    """Fraction of each class-`cls_det` box's pixels that the mask calls `cls_sem` (mask mirrored when flip)."""
    sem = item["semantic"].numpy()
    sem = sem[:, ::-1] if flip else sem
    h, w = sem.shape
    out = []
    for _, c, x, y, bw, bh in item["targets"].tolist():
        x1, y1, x2, y2 = int((x - bw / 2) * w), int((y - bh / 2) * h), int((x + bw / 2) * w), int((y + bh / 2) * h)
        if int(c) == cls_det and (x2 - x1) * (y2 - y1) >= 64:
            out.append(float((sem[y1:y2, x1:x2] == cls_sem).mean()))
    return out


def test_generated_shapes_semantic_set_pairs_boxes_and_masks(tmp_path):
    from utils.data.dataset_config import check_dataset
    from utils.data.synthetic import generate_shapes

    generate_shapes(tmp_path, n_train=12, n_val=4, seed=2, imgsz_range=(64, 96))
    d = check_dataset(tmp_path / "semantic" / "shapes-semantic.yaml")
    ds = SemanticDataset(d["train"], img_size=64, batch_size=4, augment=True, semantic=d["semantic"],
                         hyp={**NO_AUG, **WARP, "mosaic": 1.0, "fliplr": 0.5})
    assert ds.has_boxes.all() and ds.has_semantic.all()
    random.seed(0)
    items = [ds[k % len(ds)] for k in range(12)]
    cover = [v for it in items for c in range(4) for v in box_coverage(it, c, c + 1)]  # mask id = box class + 1
    mirrored = [v for it in items for c in range(4) for v in box_coverage(it, c, c + 1, flip=True)]
    assert len(cover) > 20 and np.mean(cover) > 0.3 and np.mean(cover) > np.mean(mirrored) + 0.2


@pytest.mark.shared
def test_coco128_boxes_and_semantic_masks_load_together(tmp_path):
    """Real data: coco128 box labels with the coco128-semantic panoptic masks (another root, sparse ids remapped)."""
    import yaml
    from conftest import DATASETS, need

    from utils.data.dataset_config import check_dataset

    coco = yaml.safe_load(need(DATASETS / "coco128" / "coco128.yaml").read_text())
    classes = yaml.safe_load(need(DATASETS / "coco128-semantic" / "classes.yaml").read_text())["classes"]
    raw_ids = sorted(k for k in classes if k != 0)  # 0 = unlabeled: not listed, so ignored
    data = {"path": str(DATASETS / "coco128"), "train": "images/train2017", "val": "images/train2017",
            "names": coco["names"], "semantic": {"masks_dir": "../coco128-semantic/masks",
                                                 "names": {i: classes[k] for i, k in enumerate(raw_ids)},
                                                 "id_map": {k: i for i, k in enumerate(raw_ids)}}}
    f = tmp_path / "coco128-joint.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    d = check_dataset(f)
    assert d["semantic"]["nc"] == len(raw_ids) > 100
    hyp = {**NO_AUG, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 5.0, "translate": 0.1, "scale": 0.5,
           "perspective": 0.0005, "mosaic": 1.0, "fliplr": 0.5}
    ds = SemanticDataset(d["train"], img_size=320, batch_size=8, augment=True, hyp=hyp, semantic=d["semantic"])
    assert ds.has_semantic.sum() == 100 and ds.has_boxes.sum() >= 120
    person = raw_ids.index(1)
    random.seed(0)
    np.random.seed(0)
    items = [ds[k] for k in range(0, len(ds), 4)]
    assert ds.load_failures == 0 and all(it["semantic"].shape == (320, 320) for it in items)
    cover = [v for it in items if it["has_semantic"] for v in box_coverage(it, 0, person)]
    mirrored = [v for it in items if it["has_semantic"] for v in box_coverage(it, 0, person, flip=True)]
    assert len(cover) >= 20
    assert np.median(cover) > 0.4 and np.mean(cover) > np.mean(mirrored) + 0.15  # person boxes hold person pixels


def test_cityscapes_hyp_selects_the_scale_crop_recipe(tmp_path):
    import yaml
    from conftest import ROOT

    from utils.tasks.detect.dataset import DEFAULT_AUG
    from utils.tasks.semantic.loss import SEG_DEFAULTS

    hyp = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.cityscapes.yaml").read_text())
    low = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    assert set(hyp) == set(low) | set(DEFAULT_AUG) | set(SEG_DEFAULTS) | {"fitness_seg"}  # keys the code reads
    assert hyp["mosaic"] == 0 and hyp["scale_crop"] == 1 and (hyp["scale_min"], hyp["scale_max"]) == (0.5, 2.0)
    no_colour = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}  # colour is what assert_aligned reads the classes from
    ds = dataset(write_set(tmp_path, sizes=((32, 64),)), augment=True, hyp={**hyp, **no_colour})
    random.seed(0)
    shapes = set()
    for k in range(len(ds)):
        item = ds[k]
        assert item["img"].shape == (3, 32, 64)  # crop_h 0.5, crop_w 1.0 of --img 64
        assert_aligned(item)
        shapes.add(int((item["semantic"] != 255).sum()))
    assert len(shapes) > 1  # the scale varies


def test_quad_is_refused_before_training_starts(tmp_path, log):
    loader, _ = create_dataloader(str(write_set(tmp_path)), 64, 4, 32, workers=0, quad=True,
                                  dataset_cls=SemanticDataset, dataset_kw={"semantic": SEM})
    assert loader.collate_fn is SemanticDataset.collate_fn
    assert any("--quad is not supported by SemanticDataset" in r.getMessage() for r in log.records)
    with pytest.raises(ValueError, match="quad"):
        SemanticDataset.collate_fn4([])
