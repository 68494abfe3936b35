"""Cityscapes -> YOLO: box labels for the object classes and train-id masks for the 19 semantic classes.

Input (the official archives unzipped into one ROOT):
    ROOT/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_{polygons.json,labelIds.png,instanceIds.png}
Output:
    ROOT/labels/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.txt      YOLO boxes (cls xc yc w h, normalised)
    ROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   train ids, 255 = ignore
    ROOT/cityscapes.yaml                                                   data/cityscapes.yaml with path: ROOT

Box rules (ConvertOptions):
- from `_polygons.json` when present (else from `_instanceIds.png`): one box per polygon of a chosen class, spanning
  the pixels the polygon covers ([min, max + 1] of its vertices), clipped to the image;
- polygons marked `deleted` are skipped; group labels (`cargroup`, `persongroup`, ...) mark crowds without
  instance outlines and are dropped unless keep_groups;
- boxes narrower or lower than min_size pixels after clipping are dropped;
- from `_instanceIds.png`: one box per instance id (value // 1000 = label id); classes without instance ids in
  Cityscapes (traffic light, traffic sign) get one box per 8-connected region, and so do groups with keep_groups.
Train-id masks are rasterised from the polygons the way cityscapesscripts' json2labelImg does (file order, later
polygons on top, background 'unlabeled'), else looked up from `_labelIds.png`; existing ones are kept unless
overwrite. The test split has no public ground truth: it gets no labels but is listed in the YAML.
Every frame whose files disagree (image without ground truth, size mismatch, unreadable file, unknown label) is
reported by name; the conversion carries on with the others.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from multiprocessing.pool import Pool
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image, ImageDraw

from utils.data.dataset_config import DatasetError
from utils.data.labels import swap_dir
from utils.log import LOGGER
from utils.paths import ROOT as REPO_ROOT
from utils.tasks.semantic.labels import DETECTION_CLASSES, IGNORE, cityscapes_labels, ids_to_train_ids

SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
GT = {"polygons": "_gtFine_polygons.json", "labelIds": "_gtFine_labelIds.png",
      "instanceIds": "_gtFine_instanceIds.png", "trainIds": "_gtFine_labelTrainIds.png"}
TEMPLATE = REPO_ROOT / "data" / "cityscapes.yaml"
SOURCES = ("auto", "polygons", "instanceIds")


@dataclass
class ConvertOptions:
    """How boxes and masks are made (see the module docstring for the rules)."""

    classes: tuple[str, ...] = DETECTION_CLASSES  # boxed classes, in class-id order
    min_size: float = 1.0  # drop boxes narrower or lower than this many pixels
    keep_groups: bool = False  # box group regions (cargroup, ...) as their class instead of dropping them
    source: str = "auto"  # boxes from 'polygons', 'instanceIds', or 'auto' (polygons, else instanceIds)
    overwrite: bool = False  # rewrite existing _labelTrainIds.png files
    workers: int = 0  # processes; 0 converts in this process


@dataclass
class FrameResult:
    """What converting one frame did."""

    split: str
    boxes: int = 0
    label_written: bool = False
    mask: str = ""  # 'written', 'kept' or '' (no mask)
    problems: list[str] = field(default_factory=list)


@dataclass
class Report:
    """Totals of a conversion and every problem found, one line per frame and problem."""

    frames: dict[str, int] = field(default_factory=dict)  # split -> frames found
    converted: dict[str, int] = field(default_factory=dict)  # split -> frames with a box label or a mask
    boxes: int = 0
    masks_written: int = 0
    masks_kept: int = 0
    problems: list[str] = field(default_factory=list)
    yaml_file: Path | None = None

    @property
    def n_converted(self) -> int:
        """Frames that got a box label or a train-id mask."""
        return sum(self.converted.values())


def check_options(opt: ConvertOptions) -> None:
    """Reject unknown class names or sources with one line naming the choices."""
    known = cityscapes_labels().name_to_id
    bad = [c for c in opt.classes if c not in known]
    if bad:
        raise ValueError(f"unknown Cityscapes class {bad[0]!r}; known: {', '.join(sorted(known))}")
    if len(set(opt.classes)) != len(opt.classes) or not opt.classes:
        raise ValueError(f"classes must be distinct and non-empty, got {list(opt.classes)}")
    if opt.source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {opt.source!r}")


def gt_paths(image: Path, root: Path, split: str) -> dict[str, Path]:
    """The gtFine files of one image, keyed as in GT."""
    core = image.name[: -len(IMAGE_SUFFIX)]
    folder = root / "gtFine" / split / image.parent.name
    return {k: folder / (core + suffix) for k, suffix in GT.items()}


def label_path(image: Path) -> Path:
    """Where the data contract looks for the box label of an image (leftImg8bit -> labels, .png -> .txt)."""
    return Path(os.path.splitext(swap_dir(image, "leftImg8bit", "labels"))[0] + ".txt")


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header; raises OSError when unreadable."""
    with Image.open(path) as im:
        return im.size


def _read_png(path: Path) -> np.ndarray:
    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if a is None or a.ndim != 2:
        raise OSError("not a readable single-channel PNG")
    return a


def _write_png(path: Path, a: np.ndarray) -> None:
    """Write atomically, so an interrupted run never leaves a half-written mask that a re-run would keep."""
    tmp = path.with_name(path.stem + ".tmp.png")
    if not cv2.imwrite(str(tmp), a):
        raise OSError(f"could not write {tmp}")
    os.replace(tmp, path)


def _base_label(name: str) -> str:
    """'cargroup' -> 'car', as cityscapesscripts resolves group labels; other names unchanged."""
    known = cityscapes_labels().name_to_id
    return name[: -len("group")] if name not in known and name.endswith("group") else name


def rasterise_train_ids(annotation: dict, problems: list[str] | None = None) -> np.ndarray:
    """(H, W) uint8 train ids drawn from a polygons JSON dict in cityscapesscripts' order (255 = ignore)."""
    cs = cityscapes_labels()
    size = (int(annotation["imgWidth"]), int(annotation["imgHeight"]))
    im = Image.new("L", size, int(cs.id_to_train[cs.name_to_id["unlabeled"]]))
    draw = ImageDraw.Draw(im)
    for obj in annotation.get("objects", []):
        if obj.get("deleted"):
            continue
        name = _base_label(str(obj["label"]))
        label_id = cs.name_to_id.get(name)
        if label_id is None:
            if problems is not None:
                problems.append(f"unknown label {obj['label']!r} drawn as ignore")
            value = IGNORE
        elif label_id < 0:
            continue  # e.g. license plate: not drawn in label images
        else:
            value = int(cs.id_to_train[label_id])
        pts = [(p[0], p[1]) for p in obj["polygon"]]
        if len(pts) >= 2:
            draw.polygon(pts, fill=value)
    return np.asarray(im, dtype=np.uint8)


def _clip_box(x1: float, y1: float, x2: float, y2: float, w: int, h: int) -> tuple[float, float, float, float]:
    return max(0.0, min(x1, w)), max(0.0, min(y1, h)), max(0.0, min(x2, w)), max(0.0, min(y2, h))


def boxes_from_polygons(annotation: dict, opt: ConvertOptions) -> list[tuple[int, float, float, float, float]]:
    """(class, x1, y1, x2, y2) pixel boxes of the chosen classes from a polygons JSON dict."""
    w, h = int(annotation["imgWidth"]), int(annotation["imgHeight"])
    cls_of = {c: i for i, c in enumerate(opt.classes)}
    out = []
    for obj in annotation.get("objects", []):
        label = str(obj["label"])
        if obj.get("deleted") or not obj.get("polygon"):
            continue
        base = _base_label(label)
        if base != label and not opt.keep_groups:
            continue  # a crowd region, not one object
        if base not in cls_of:
            continue
        pts = np.asarray(obj["polygon"], dtype=np.float64).reshape(-1, 2)
        # Vertices are pixel indices and the polygon covers the pixel under its last vertex, hence + 1.
        x1, y1, x2, y2 = _clip_box(*pts.min(0), *(pts.max(0) + 1), w, h)
        if x2 - x1 >= opt.min_size and y2 - y1 >= opt.min_size and x2 > x1 and y2 > y1:
            out.append((cls_of[base], x1, y1, x2, y2))
    return out


def _region_boxes(mask: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Pixel boxes of the 8-connected regions of a boolean mask."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return [(float(x), float(y), float(x + bw), float(y + bh)) for x, y, bw, bh, _ in stats[1:n]]


def boxes_from_instance_ids(inst: np.ndarray, opt: ConvertOptions,
                            notes: list[str] | None = None) -> list[tuple[int, float, float, float, float]]:
    """(class, x1, y1, x2, y2) pixel boxes from an instanceIds map (value // 1000 = label id for instances); an
    instance whose label id is in no Cityscapes label table gets no box and a line in `notes`."""
    cs = cityscapes_labels()
    known = set(cs.name_to_id.values())
    cls_of = {cs.name_to_id[c]: i for i, c in enumerate(opt.classes)}
    found: list[tuple[int, float, float, float, float]] = []
    ys, xs = np.nonzero(inst >= 1000)
    if len(ys):
        vals = inst[ys, xs]
        order = np.argsort(vals, kind="stable")
        vals, ys, xs = vals[order], ys[order], xs[order]
        ids, starts = np.unique(vals, return_index=True)
        x1, x2 = np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts) + 1
        y1, y2 = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts) + 1
        for v, a, b, c, d in zip(ids.tolist(), x1, y1, x2, y2):
            if v // 1000 not in known and notes is not None:
                notes.append(f"instance id {v} (label id {v // 1000}) is not in the Cityscapes label table: no box")
            if v // 1000 in cls_of:
                found.append((cls_of[v // 1000], float(a), float(b), float(c), float(d)))
    for label_id, k in cls_of.items():
        name = next(n for n, i in cs.name_to_id.items() if i == label_id)
        # Pixels holding a bare label id of an instance class are group regions; of other classes, plain regions.
        if cs.has_instances[name] and not opt.keep_groups:
            continue
        region = inst == label_id
        if region.any():
            found.extend((k, *b) for b in _region_boxes(region))
    return [b for b in found if b[3] - b[1] >= opt.min_size and b[4] - b[2] >= opt.min_size]


def _yolo_lines(boxes, w: int, h: int) -> str:
    return "".join(f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n"
                   for c, x1, y1, x2, y2 in boxes)


def convert_frame(image: Path, root: Path, split: str, opt: ConvertOptions) -> FrameResult:
    """Write one frame's box label and train-id mask; problems are returned, not raised."""
    res = FrameResult(split)
    name = image.relative_to(root).as_posix()
    notes: list[str] = []

    def problem(msg: str) -> FrameResult:
        res.problems.append(f"{name}: {msg}")
        return res

    try:
        w, h = _png_size(image)
    except OSError:
        return problem("image unreadable")
    if split == "test":
        return res
    gt = gt_paths(image, root, split)
    have = {k: p.is_file() for k, p in gt.items()}
    if not (have["polygons"] or have["labelIds"] or have["instanceIds"]):
        return problem(f"no ground truth in {gt['polygons'].parent.relative_to(root).as_posix()} (no polygons, "
                       f"labelIds or instanceIds)")
    ann = None
    if have["polygons"]:
        try:
            ann = json.loads(gt["polygons"].read_text(encoding="utf-8"))
            size = (int(ann["imgWidth"]), int(ann["imgHeight"]))
        except (OSError, ValueError, KeyError, TypeError):
            ann = None
            notes.append(f"{gt['polygons'].name} unreadable")
        else:
            if size != (w, h):
                return problem(f"image is {w}x{h} but {gt['polygons'].name} says {size[0]}x{size[1]}")
    for key in ("labelIds", "instanceIds") + (() if opt.overwrite else ("trainIds",)):
        if have[key]:
            try:
                size = _png_size(gt[key])
            except OSError:
                have[key] = False
                notes.append(f"{gt[key].name} unreadable")
                continue
            if size != (w, h):
                return problem(f"image is {w}x{h} but {gt[key].name} is {size[0]}x{size[1]}")

    # Boxes
    boxes = None
    try:
        if ann is not None and opt.source in ("auto", "polygons"):
            boxes = boxes_from_polygons(ann, opt)
        elif have["instanceIds"] and opt.source in ("auto", "instanceIds"):
            found: list[str] = []
            boxes = boxes_from_instance_ids(_read_png(gt["instanceIds"]), opt, found)
            notes.extend(f"{gt['instanceIds'].name}: {n}" for n in found)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        notes.append(f"boxes not made ({e})")
        boxes = None
    if boxes is None:
        notes.append(f"no {'polygons or instanceIds' if opt.source == 'auto' else opt.source} to box from, "
                     f"no box label written")
    else:
        lp = label_path(image)
        lp.parent.mkdir(parents=True, exist_ok=True)
        lp.write_text(_yolo_lines(boxes, w, h))
        res.boxes, res.label_written = len(boxes), True

    # Train-id mask
    if have["trainIds"] and not opt.overwrite:
        res.mask = "kept"
    else:
        mask = None
        try:
            if ann is not None:
                mask = rasterise_train_ids(ann, notes)
            elif have["labelIds"]:
                mask = ids_to_train_ids(_read_png(gt["labelIds"]))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            notes.append(f"mask not made ({e})")
        if mask is None:
            notes.append("no polygons or labelIds to make the train-id mask from")
        else:
            _write_png(gt["trainIds"], mask)
            res.mask = "written"
    for n in notes:
        problem(n)
    return res


def find_frames(root: Path) -> dict[str, list[Path]]:
    """Images per split found under ROOT/leftImg8bit (splits without a folder are absent)."""
    out = {}
    for split in SPLITS:
        d = root / "leftImg8bit" / split
        if d.is_dir():
            out[split] = sorted(d.glob(f"*/*{IMAGE_SUFFIX}"))
    return out


def misnamed_images(root: Path) -> list[str]:
    """Files under ROOT/leftImg8bit that are not <split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png, as report
    lines (the converter skips them, or boxes them under a name the benchmark will not match)."""
    lines = []
    for f in sorted(p for p in (root / "leftImg8bit").rglob("*") if p.is_file()):
        parts = f.relative_to(root / "leftImg8bit").parts
        core = f.name[: -len(IMAGE_SUFFIX)] if f.name.endswith(IMAGE_SUFFIX) else ""
        fields = core.split("_")
        ok = (len(parts) == 3 and parts[0] in SPLITS and len(fields) == 3 and fields[0] == parts[1]
              and fields[1].isdigit() and fields[2].isdigit())
        if not ok:
            lines.append(f"leftImg8bit/{'/'.join(parts)}: not named as Cityscapes names frames "
                         f"(<split>/<city>/<city>_<seq>_<frame>{IMAGE_SUFFIX})")
    return lines


def orphan_ground_truth(root: Path, frames: dict[str, list[Path]]) -> list[str]:
    """gtFine polygon/labelIds files whose image is missing, as report lines."""
    have = {(s, p.parent.name, p.name[: -len(IMAGE_SUFFIX)]) for s, ims in frames.items() for p in ims}
    lines = []
    for split in frames:
        seen = set()
        for suffix in (GT["polygons"], GT["labelIds"]):
            for f in sorted((root / "gtFine" / split).glob(f"*/*{suffix}")):
                core = f.name[: -len(suffix)]
                if (split, f.parent.name, core) not in have and core not in seen:
                    seen.add(core)
                    lines.append(f"{f.relative_to(root).as_posix()}: ground truth without an image "
                                 f"(leftImg8bit/{split}/{f.parent.name}/{core}{IMAGE_SUFFIX})")
    return lines


def write_yaml(root: Path, splits: list[str], opt: ConvertOptions, out: Path | None = None) -> Path:
    """ROOT/cityscapes.yaml: the repository's data/cityscapes.yaml with path ROOT, the splits found and the classes."""
    d = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
    d["path"] = str(root.resolve())
    for s in SPLITS:
        if s in splits:
            d[s] = f"leftImg8bit/{s}"
        else:
            d.pop(s, None)
    d["names"] = dict(enumerate(opt.classes))
    d["semantic"]["names"] = dict(cityscapes_labels().names)
    out = out or root / "cityscapes.yaml"
    head = (f"# Written by data/scripts/cityscapes_to_yolo.py from {TEMPLATE.relative_to(REPO_ROOT).as_posix()}.\n"
            f"# Box labels: {root.resolve() / 'labels'}; masks: gtFine/*/*/*{GT['trainIds']} (255 = ignore).\n")
    out.write_text(head + yaml.safe_dump(d, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return out


def _convert_one(args) -> FrameResult:
    return convert_frame(*args)


def convert(root: str | Path, opt: ConvertOptions | None = None) -> Report:
    """Convert a Cityscapes tree in place (see the module docstring); returns the report, logs every problem."""
    opt = opt or ConvertOptions()
    check_options(opt)
    root = Path(root)
    if not (root / "leftImg8bit").is_dir():
        raise DatasetError(f"{root}: no leftImg8bit folder; unzip leftImg8bit_trainvaltest.zip and "
                           f"gtFine_trainvaltest.zip into this folder")
    frames = find_frames(root)
    if not frames:
        raise DatasetError(f"{root / 'leftImg8bit'}: no {'/'.join(SPLITS)} split folders")
    report = Report(frames={s: len(v) for s, v in frames.items()})
    jobs = [(p, root, s, opt) for s, ims in frames.items() for p in ims]
    if opt.workers > 0 and len(jobs) > 1:
        with Pool(min(opt.workers, len(jobs))) as pool:
            results = pool.map(_convert_one, jobs, chunksize=max(1, len(jobs) // (opt.workers * 8)))
    else:
        results = [_convert_one(j) for j in jobs]
    for r in results:
        report.boxes += r.boxes
        report.masks_written += r.mask == "written"
        report.masks_kept += r.mask == "kept"
        if r.split != "test":
            report.converted[r.split] = report.converted.get(r.split, 0) + (r.label_written or bool(r.mask))
        report.problems.extend(r.problems)
    report.problems.extend(orphan_ground_truth(root, frames))
    report.problems.extend(misnamed_images(root))
    for line in report.problems:
        LOGGER.warning(f"WARNING ⚠️ {line}")
    labelled = [s for s in frames if s != "test"]
    if report.n_converted:
        report.yaml_file = write_yaml(root, list(frames), opt)
        if "val" not in frames or "train" not in frames:
            LOGGER.warning(f"WARNING ⚠️ {report.yaml_file}: no leftImg8bit/{'val' if 'train' in frames else 'train'} "
                           f"folder, so the data YAML lacks that split; add it before training")
    LOGGER.info(f"Cityscapes {root}: " + ", ".join(f"{s} {report.converted.get(s, 0)}/{report.frames[s]}"
                                                   for s in labelled) +
                (f", test {report.frames['test']} images (no labels)" if "test" in frames else "") +
                f"; {report.boxes} boxes, masks {report.masks_written} written, {report.masks_kept} kept, "
                f"{len(report.problems)} problem(s)" +
                (f"; data YAML {report.yaml_file}" if report.yaml_file else ""))
    return report
