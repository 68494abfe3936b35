"""The built-in synthetic "shapes" dataset: one generator, three label trees (boxes, polygons, semantic masks).

Layout written by generate_shapes(root):
    root/det/images/{train,val}/*.jpg       root/det/labels/{train,val}/*.txt       class xc yc w h (normalised)
    root/seg/images/{train,val}/*.jpg       root/seg/labels/{train,val}/*.txt       class x1 y1 x2 y2 ... (normalised)
    root/semantic/images/{train,val}/*.jpg  root/semantic/masks/{train,val}/*.png   uint8: 0 background, class k -> k+1
                                            root/semantic/labels/{train,val}/*.txt  the boxes of det/ (joint training)
The images of seg/ and semantic/ are hard links to those of det/ (copies where links are impossible), so each tree keeps
YOLO's images/ -> labels/ (or masks/) pairing without costing disk. Each tree also gets a self-contained data YAML.

Annotation choice: boxes and polygons describe the WHOLE object, as a human annotator draws an occluded object; the
semantic mask holds what is VISIBLE (later shapes paint over earlier ones). Placement keeps at least half of every
object visible, so no label describes an object that can't be seen.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("rectangle", "ellipse", "triangle", "star")
TREES = ("det", "seg", "semantic")
MARKER = ".shapes-generator"  # identifies trees this module made (and with which settings)
VERSION = 2  # 2: semantic/ also holds the box labels
SHIFT = 4  # cv2 sub-pixel bits: polygons are drawn at 1/16 px precision, so the drawn shape matches its label
DEFAULTS = {"n_train": 512, "n_val": 96, "seed": 0, "imgsz_range": (256, 416)}
MIN_VISIBLE = 0.5  # fraction of an object that must stay visible after later objects are drawn over it
SPLIT_IDS = {"train": 0, "val": 1}


def _unit_polygon(rng: np.random.Generator, cls: int) -> np.ndarray:
    """Class outline around the origin with max radius 1, before rotation."""
    if cls == 0:  # rectangle
        a = rng.uniform(0.35, 1.0)
        pts = np.array([[-1, -a], [1, -a], [1, a], [-1, a]], np.float64)
    elif cls == 1:  # ellipse
        b = rng.uniform(0.4, 1.0)
        t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        pts = np.stack([np.cos(t), b * np.sin(t)], 1)
    elif cls == 2:  # triangle, from equilateral to fairly irregular
        t = np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3]) + rng.uniform(-0.35, 0.35, 3)
        rad = rng.uniform(0.7, 1.0, 3)
        pts = np.stack([rad * np.cos(t), rad * np.sin(t)], 1)
    else:  # five-pointed star
        inner = rng.uniform(0.38, 0.5)
        t = np.arange(10) * math.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        pts = np.stack([rad * np.cos(t), rad * np.sin(t)], 1)
    return pts / np.linalg.norm(pts, axis=1).max()


def _place(rng: np.random.Generator, cls: int, w: int, h: int) -> np.ndarray:
    """Absolute polygon (k, 2) of a rotated, scaled object lying fully inside the w x h image."""
    side = min(w, h)
    size = math.exp(rng.uniform(math.log(0.08), math.log(0.6))) * side  # log-uniform: as many small as large
    r = size / 2
    sx, sy = (1.0, rng.uniform(0.75, 1.0)) if rng.random() < 0.5 else (rng.uniform(0.75, 1.0), 1.0)
    angle = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(angle), math.sin(angle)
    pts = _unit_polygon(rng, cls) @ np.array([[c, s], [-s, c]]) * np.array([sx, sy]) * r
    lo, hi = pts.min(0), pts.max(0)
    cx = rng.uniform(1 - lo[0], w - 1 - hi[0])
    cy = rng.uniform(1 - lo[1], h - 1 - hi[1])
    return pts + np.array([cx, cy])


def _fixed(poly: np.ndarray) -> np.ndarray:
    """Polygon in continuous image coordinates (pixel i spans [i, i+1], as labels use) -> cv2 fixed-point points."""
    return np.round((poly - 0.5) * (1 << SHIFT)).astype(np.int32)[None]  # cv2 puts pixel i's centre at i


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Gradient, smooth-noise, tiled or flat-noisy background with distractor lines and arcs."""
    kind = rng.integers(4)
    if kind == 0:  # linear gradient in a random direction
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        a = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xx * math.cos(a) + yy * math.sin(a)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        im = c0 + t[..., None] * (c1 - c0)
    elif kind == 1:  # smooth colour blobs
        g = rng.integers(3, 10)
        blobs = cv2.resize(rng.uniform(0, 255, (g, g, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        base = rng.uniform(60, 200)
        im = base + (blobs - base) * rng.uniform(0.25, 0.9)  # muted: pure rainbow noise would drown the objects
    elif kind == 2:  # low-contrast checkerboard / stripes
        cell = int(rng.integers(8, 48))
        base = rng.uniform(40, 215, 3)
        delta = rng.uniform(-35, 35, 3)
        yy, xx = np.mgrid[0:h, 0:w]
        pattern = (xx // cell + (yy // cell) * rng.integers(0, 2)) % 2
        im = base + pattern[..., None] * delta
    else:  # flat colour, strong grain
        im = rng.uniform(0, 255, 3) + rng.integers(-30, 31, (h, w, 1), dtype=np.int16)
    im = np.clip(im, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(0, 7)):  # distractors: straight lines and open arcs are never labelled
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.7:
            p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(im, p1, p2, color, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            axes = (int(rng.integers(10, max(w, h) // 3)), int(rng.integers(10, max(w, h) // 3)))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(im, p1, axes, float(rng.uniform(0, 180)), start, start + float(rng.uniform(40, 200)),
                        color, int(rng.integers(1, 3)), cv2.LINE_AA)
    return im


def _colour_against(rng: np.random.Generator, im: np.ndarray, mask: np.ndarray, box) -> np.ndarray:
    """A random colour that stands out from what lies under the object (few tries, then the best seen)."""
    x0, y0, x1, y1 = box
    under = np.array(cv2.mean(im[y0:y1, x0:x1], mask[y0:y1, x0:x1])[:3])
    best, best_d = None, -1.0
    for _ in range(8):
        c = rng.uniform(0, 255, 3)
        d = float(np.abs(c - under).sum())
        if d > best_d:
            best, best_d = c, d
        if d > 150:
            break
    return best


def _paint(rng: np.random.Generator, im: np.ndarray, poly: np.ndarray, mask: np.ndarray) -> None:
    """Draw one object (solid, gradient or grainy fill; sometimes outlined) onto im in place."""
    h, w = im.shape[:2]
    lo = np.floor(poly.min(0)).astype(int) - 2
    hi = np.ceil(poly.max(0)).astype(int) + 3
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], w), min(hi[1], h)
    color = _colour_against(rng, im, mask, (x0, y0, x1, y1))
    style = rng.random()
    if style < 0.6:
        cv2.fillPoly(im, _fixed(poly), tuple(float(v) for v in color), cv2.LINE_AA, SHIFT)
    else:  # fill an ROI-sized texture, then copy it through an anti-aliased coverage mask
        rh, rw = y1 - y0, x1 - x0
        if style < 0.85:
            other = np.clip(color + rng.uniform(-90, 90, 3), 0, 255)
            horizontal = rng.random() < 0.5
            t = np.linspace(0, 1, rw if horizontal else rh, dtype=np.float32)
            t = t[None, :, None] if horizontal else t[:, None, None]
            fill = color + t * (other - color)
            fill = np.broadcast_to(fill, (rh, rw, 3))
        else:
            fill = color + rng.normal(0, 20, (rh, rw, 1))
        cover = np.zeros((rh, rw), np.uint8)
        cv2.fillPoly(cover, _fixed(poly - [x0, y0]), 255, cv2.LINE_AA, SHIFT)
        a = cover[..., None].astype(np.float32) / 255
        roi = im[y0:y1, x0:x1]
        roi[:] = np.clip(roi * (1 - a) + np.clip(fill, 0, 255) * a, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        edge = tuple(float(v) for v in np.clip(color + rng.choice([-1, 1]) * 100, 0, 255))
        cv2.polylines(im, _fixed(poly), True, edge, int(rng.integers(1, 3)), cv2.LINE_AA, SHIFT)


def render(rng: np.random.Generator, w: int, h: int, n_objects: int):
    """One image: (BGR uint8 image, [(cls, polygon px (k,2))] in drawing order, semantic mask uint8)."""
    im = _background(rng, w, h)
    inst = np.zeros((h, w), np.uint8)  # which object is visible at each pixel (0 = none)
    sem = np.zeros((h, w), np.uint8)
    full_area: list[int] = []
    visible: list[int] = []
    objects: list[tuple[int, np.ndarray]] = []
    for _ in range(n_objects):
        cls = int(rng.integers(len(CLASSES)))
        for _try in range(10):
            poly = _place(rng, cls, w, h)
            x0, y0 = np.floor(poly.min(0)).astype(int)
            x1, y1 = np.ceil(poly.max(0)).astype(int) + 1
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)  # the object's own box only: cheap to test placements
            cv2.fillPoly(mask, _fixed(poly - [x0, y0]), 1, cv2.LINE_8, SHIFT)
            m = mask.astype(bool)
            area = int(m.sum())
            if area < 16:
                continue
            hidden = np.bincount(inst[y0:y1, x0:x1][m], minlength=len(objects) + 1)[1:]
            if objects and np.any(np.array(visible) - hidden < MIN_VISIBLE * np.array(full_area)):
                continue  # it would hide too much of an earlier object
            break
        else:
            continue  # no acceptable placement: fewer objects in this image
        full = np.zeros((h, w), np.uint8)
        full[y0:y1, x0:x1] = mask
        _paint(rng, im, poly, full)
        visible = [v - int(c) for v, c in zip(visible, hidden)] + [area]
        objects.append((cls, poly))
        full_area.append(area)
        inst[y0:y1, x0:x1][m] = len(objects)
        sem[y0:y1, x0:x1][m] = cls + 1
    if rng.random() < 0.3:
        im = cv2.GaussianBlur(im, (3, 3), 0)
    amp = int(rng.integers(0, 14))  # uniform sensor-like grain (normal samples cost 5x more to draw)
    if amp > 1:
        im = cv2.add(im, rng.integers(-amp, amp + 1, im.shape, dtype=np.int16), dtype=cv2.CV_8U)
    return im, objects, sem


def image_rng(seed: int, split: str, i: int) -> np.random.Generator:
    """Independent stream per image, so any image can be rebuilt alone and order never matters."""
    return np.random.default_rng([seed, SPLIT_IDS[split], i])


def _sample(seed: int, split: str, i: int, imgsz_range) -> tuple:
    rng = image_rng(seed, split, i)
    lo, hi = imgsz_range
    w, h = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    n = 0 if i % 16 == 3 else int(rng.integers(1, 9))  # every 16th image (from the 4th) is a background image
    im, objects, sem = render(rng, w, h, n)
    return im, objects, sem, int(rng.integers(80, 96))


def _label_lines(objects, w: int, h: int) -> tuple[str, str]:
    """(box label text, polygon label text) for one image, both normalised to 0..1."""
    det, seg = [], []
    scale = np.array([w, h], np.float64)
    for cls, poly in objects:
        p = np.clip(poly / scale, 0, 1)
        (x0, y0), (x1, y1) = p.min(0), p.max(0)
        det.append(f"{cls} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}\n")
        seg.append(f"{cls} " + " ".join(f"{v:.6f}" for v in p.ravel()) + "\n")
    return "".join(det), "".join(seg)


def _write_sample(job: tuple) -> None:
    """Render image i of a split and write its image, links, box and polygon labels and semantic mask."""
    seed, split, i, imgsz_range, d = job
    im, objects, sem, quality = _sample(seed, split, i, imgsz_range)
    name = f"{split}_{i:05d}"
    img = d["img"] / f"{name}.jpg"
    cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tofile(str(img))
    _link(img, d["seg_img"] / img.name)
    _link(img, d["sem_img"] / img.name)
    det, seg = _label_lines(objects, im.shape[1], im.shape[0])
    (d["det"] / f"{name}.txt").write_text(det)
    (d["sem_det"] / f"{name}.txt").write_text(det)
    (d["seg"] / f"{name}.txt").write_text(seg)
    cv2.imencode(".png", sem)[1].tofile(str(d["sem"] / f"{name}.png"))


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # other file system, or links not allowed
        shutil.copyfile(src, dst)


def _signature(n_train: int, n_val: int, seed: int, imgsz_range) -> str:
    return f"version={VERSION} n_train={n_train} n_val={n_val} seed={seed} imgsz_range={tuple(imgsz_range)}\n"


def shapes_up_to_date(root: Path, n_train: int = DEFAULTS["n_train"], n_val: int = DEFAULTS["n_val"],
                      seed: int = DEFAULTS["seed"], imgsz_range=DEFAULTS["imgsz_range"]) -> bool:
    """True when all three trees under root were generated with these settings."""
    sig = _signature(n_train, n_val, seed, imgsz_range)
    return all((Path(root) / t / MARKER).is_file() and (Path(root) / t / MARKER).read_text() == sig for t in TREES)


def _yaml_text(tree: Path, kind: str) -> str:
    names = [f"  {k}: {v}" for k, v in enumerate(CLASSES)]
    lines = [f"# Synthetic shapes dataset ({kind}), written by utils/data/synthetic.py", f"path: {tree}",
             "train: images/train", "val: images/val", "names:", *names]
    if kind == "semantic":  # the semantic data contract: boxes in labels/, class-id masks in masks/
        lines.insert(1, "# masks/{train,val}/*.png pair with images/{train,val}/*.jpg; mask value = semantic.names key")
        lines += ["semantic:", "  masks_dir: masks", "  names:", "    0: background",
                  *[f"    {i + 1}: {c}" for i, c in enumerate(CLASSES)]]
    return "\n".join(lines) + "\n"


def generate_shapes(root: str | Path, n_train: int = DEFAULTS["n_train"], n_val: int = DEFAULTS["n_val"],
                    seed: int = DEFAULTS["seed"], imgsz_range=DEFAULTS["imgsz_range"]) -> Path:
    """Write the det/seg/semantic trees under root (atomically per tree) and return root/det/shapes.yaml."""
    root = Path(root).resolve()
    for t in TREES:
        if (root / t).exists() and not (root / t / MARKER).is_file():
            raise FileExistsError(f"{root / t} exists and was not made by generate_shapes: refusing to overwrite it")
    tmp = root / f".generating-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    dirs = {}
    for split in SPLIT_IDS:
        dirs[split] = {k: tmp / t / sub / split for k, (t, sub) in {
            "img": ("det", "images"), "det": ("det", "labels"), "seg_img": ("seg", "images"),
            "seg": ("seg", "labels"), "sem_img": ("semantic", "images"), "sem": ("semantic", "masks"),
            "sem_det": ("semantic", "labels")}.items()}
        for d in dirs[split].values():
            d.mkdir(parents=True, exist_ok=True)
    try:
        jobs = [(seed, split, i, tuple(imgsz_range), dirs[split]) for split, n in (("train", n_train), ("val", n_val))
                for i in range(n)]
        # every image has its own random stream, so processes can share the work and the files stay the same
        n_proc = min(os.cpu_count() or 1, 8, max(len(jobs) // 32, 1))
        if n_proc > 1:
            with ProcessPoolExecutor(n_proc, mp_context=multiprocessing.get_context("spawn" if os.name == "nt"
                                                                                     else "fork")) as pool:
                list(pool.map(_write_sample, jobs, chunksize=16))
        else:
            for job in jobs:
                _write_sample(job)
        sig = _signature(n_train, n_val, seed, imgsz_range)
        yaml_names = {"det": "shapes.yaml", "seg": "shapes-seg.yaml", "semantic": "shapes-semantic.yaml"}
        for t in TREES:
            (tmp / t / yaml_names[t]).write_text(_yaml_text(root / t, t))
            (tmp / t / MARKER).write_text(sig)
        for t in TREES:
            if (root / t).exists():
                shutil.rmtree(root / t)
            os.replace(tmp / t, root / t)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / "det" / "shapes.yaml"


def write_samples(folder: str | Path, seed: int = 2024, size: tuple[int, int] = (480, 360), n: int = 2,
                  quality: int = 80) -> list[Path]:
    """Write n sample JPEGs (detect.py's default source) and return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        im, _, _ = render(rng, size[0], size[1], 6)
        f = folder / f"shapes{i + 1}.jpg"
        cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tofile(str(f))
        out.append(f)
    return out


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere
    from utils.paths import DATASETS_DIR

    ap = argparse.ArgumentParser(description="Generate the synthetic shapes dataset")
    ap.add_argument("--root", default=str(DATASETS_DIR / "shapes"))
    ap.add_argument("--n-train", type=int, default=DEFAULTS["n_train"])
    ap.add_argument("--n-val", type=int, default=DEFAULTS["n_val"])
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    ap.add_argument("--samples", default="", help="instead write sample images into this folder")
    a = ap.parse_args()
    if a.samples:
        print("\n".join(map(str, write_samples(a.samples))))
    else:
        print(generate_shapes(a.root, a.n_train, a.n_val, a.seed))
