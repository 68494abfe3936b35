"""COCO-JSON evaluation of saved predictions with pycocotools (val.py --save-json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from utils.log import LOGGER


def find_annotations(data: dict) -> Path | None:
    """COCO annotations of a dataset: `coco_json` in its YAML, else path/annotations/instances_val2017.json."""
    if data.get("coco_json"):
        p = Path(data["coco_json"])
        return p if p.is_absolute() or not data.get("path") else Path(data["path"]) / p
    p = Path(data.get("path", ".")) / "annotations" / "instances_val2017.json"
    return p if p.exists() else None


def coco_class_map(data: dict) -> list[int] | None:
    """Category ids of the dataset's COCO annotations in class order (COCO's 1..90), when they match `names`."""
    anno_json = find_annotations(data)
    if anno_json is None or not anno_json.exists():
        return None
    cats = json.loads(anno_json.read_text()).get("categories", [])
    ids = sorted(int(c["id"]) for c in cats)
    return ids if len(ids) == len(data["names"]) else None


def mask_to_rle(mask: np.ndarray) -> dict:
    """A binary (h, w) mask -> COCO run-length encoding {'size': [h, w], 'counts': str}, JSON-ready."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def evaluate_coco_json(pred_json: Path, data: dict, result: Any, iou_types: tuple[str, ...] = ("bbox",)) -> None:
    """Score predictions with pycocotools and put its mAP50 / mAP50-95 into `result.figures`.

    iou_types: 'bbox', then 'segm' for masks; each one's two figures replace the 3rd and 4th of its group of four
    (Box(P R mAP50 mAP50-95) then Mask(...), as upstream's segment/val.py).
    """
    anno_json = find_annotations(data)
    if anno_json is None or not anno_json.exists():
        LOGGER.info("pycocotools: no COCO annotations for this dataset (set 'coco_json' in the data YAML); skipped")
        return
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        LOGGER.warning("WARNING ⚠️ pycocotools is not installed; skipped COCO evaluation")
        return
    anno = COCO(str(anno_json))
    preds = json.loads(Path(pred_json).read_text())
    if not preds:
        LOGGER.warning("WARNING ⚠️ no predictions to evaluate with pycocotools")
        return
    stems = {Path(f["file_name"]).stem: i for i, f in anno.imgs.items()}
    for p in preds:  # our image_id is the file stem (an int when numeric); map to the annotation ids
        key = str(p["image_id"]).zfill(12) if str(p["image_id"]).zfill(12) in stems else str(p["image_id"])
        p["image_id"] = stems.get(key, p["image_id"])
    det = anno.loadRes(preds)
    keys = list(result.figures)
    for i, kind in enumerate(iou_types):
        ev = COCOeval(anno, det, kind)
        ev.params.imgIds = sorted({p["image_id"] for p in preds if p["image_id"] in anno.imgs} or anno.getImgIds())
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        result.figures[keys[4 * i + 3]], result.figures[keys[4 * i + 2]] = float(ev.stats[0]), float(ev.stats[1])
