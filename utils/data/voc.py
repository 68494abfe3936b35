"""The `voc` converter: PASCAL VOC (VOCdevkit/VOC<year>/ XML annotations) to YOLO images/ and labels/ folders.

Input, as the VOC archives unpack under <root>/images:
    VOCdevkit/VOC2007/Annotations/<id>.xml, JPEGImages/<id>.jpg, ImageSets/Main/{train,val,test}.txt
Output, the layout VOC.yaml names (one folder per image set and year, e.g. train2012, test2007):
    <root>/images/<set><year>/<id>.jpg (moved, not copied) and <root>/labels/<set><year>/<id>.txt
Objects marked difficult and names the YAML doesn't list are left out, as upstream's conversion does.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from utils.errors import DatasetError
from utils.log import LOGGER

IMAGE_SETS = ("train", "val", "test")


def voc_box_to_yolo(size: tuple[int, int], xmin: float, xmax: float, ymin: float, ymax: float) -> tuple[float, ...]:
    """VOC's 1-based pixel corners -> YOLO's normalised (x_center, y_center, width, height)."""
    w, h = size
    # VOC numbers pixels from 1; shifting the centre by one pixel puts it on YOLO's 0-based grid
    return ((xmin + xmax) / 2 - 1) / w, ((ymin + ymax) / 2 - 1) / h, (xmax - xmin) / w, (ymax - ymin) / h


def _text(node: ET.Element, tag: str, xml: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise DatasetError(f"{xml}: missing <{tag}>")
    return child.text.strip()


def annotation_rows(xml: Path, class_ids: dict[str, int]) -> list[str]:
    """One VOC XML file -> YOLO label lines 'cls x y w h' (difficult and unknown objects left out)."""
    try:
        tree = ET.parse(xml).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"{xml}: not valid XML ({e})") from None
    size = tree.find("size")
    if size is None:
        raise DatasetError(f"{xml}: missing <size>")
    wh = int(float(_text(size, "width", xml))), int(float(_text(size, "height", xml)))
    if min(wh) <= 0:
        raise DatasetError(f"{xml}: image size {wh[0]}x{wh[1]} is not positive")
    rows = []
    for obj in tree.iter("object"):
        cls = _text(obj, "name", xml)
        difficult = obj.find("difficult")
        if cls not in class_ids or (difficult is not None and (difficult.text or "0").strip() == "1"):
            continue
        bb = obj.find("bndbox")
        if bb is None:
            raise DatasetError(f"{xml}: object {cls!r} has no <bndbox>")
        corners = [float(_text(bb, k, xml)) for k in ("xmin", "xmax", "ymin", "ymax")]
        rows.append(" ".join([str(class_ids[cls])] + [f"{v:.6f}" for v in voc_box_to_yolo(wh, *corners)]))
    return rows


def voc_to_yolo(root: Path, data: dict) -> None:
    """Convert every VOC<year> image set found under root/images/VOCdevkit (names from the data YAML)."""
    devkit = Path(root) / "images" / "VOCdevkit"
    class_ids = {str(v): int(k) for k, v in data["names"].items()}
    done = 0
    for year_dir in sorted(devkit.glob("VOC*")):
        year = year_dir.name[3:]
        for image_set in IMAGE_SETS:
            listing = year_dir / "ImageSets" / "Main" / f"{image_set}.txt"
            if not listing.is_file():
                continue
            images, labels = Path(root) / "images" / f"{image_set}{year}", Path(root) / "labels" / f"{image_set}{year}"
            images.mkdir(parents=True, exist_ok=True)
            labels.mkdir(parents=True, exist_ok=True)
            ids = listing.read_text().split()
            for image_id in ids:
                rows = annotation_rows(year_dir / "Annotations" / f"{image_id}.xml", class_ids)
                (labels / f"{image_id}.txt").write_text("".join(r + "\n" for r in rows))
                jpg = year_dir / "JPEGImages" / f"{image_id}.jpg"
                if not jpg.is_file():
                    raise DatasetError(f"{listing}: lists {image_id} but {jpg} does not exist")
                os.replace(jpg, images / jpg.name)
            LOGGER.info(f"voc: {image_set}{year}: {len(ids)} images")
            done += 1
    if not done:
        raise DatasetError(f"{devkit}: no VOC<year>/ImageSets/Main/{{train,val,test}}.txt found to convert")
