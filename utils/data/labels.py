"""YOLO label files: where they live, how each image/label pair is checked, and the scan cache.

Bad-input policy (never modifies user files; every problem is reported naming the file):
  unreadable / non-image / truncated image -> image skipped (corrupt)
  JPEG without its FFD9 end marker          -> used as is if it decodes, else corrupt (file left untouched)
  image smaller than 10 px                  -> corrupt
  wrong column count / non-numeric value    -> corrupt
  negative or > 1 coordinates               -> corrupt
  non-positive box width or height          -> corrupt
  class id >= nc                            -> that row dropped, image kept
  duplicate rows                            -> duplicates removed
  empty label file / missing label file     -> background image
"""

from __future__ import annotations

import hashlib
import os
from multiprocessing.pool import Pool, ThreadPool
from pathlib import Path

import numpy as np
from PIL import Image

from utils.boxes import segments2boxes
from utils.data.formats import IMG_FORMATS
from utils.data.imageio import exif_size, imread
from utils.log import LOGGER

CACHE_VERSION = "mt-0.1"  # bump when the cache layout or the verification rules change
NUM_THREADS = max(1, min(8, (os.cpu_count() or 1) - 1))
MAX_PRINTED_MSGS = 30  # a broken dataset can produce thousands of lines; the cache keeps them all
MIN_IMAGE_SIZE = 10
PROCESS_POOL_MIN = 2000  # below this many images a thread pool is faster than starting processes


def swap_dir(path: str | Path, old: str, new: str) -> str | None:
    """`path` with its LAST `old` folder component replaced by `new` (a name; or a relative or absolute path, taken
    from the folder holding `old`, the result normalised); None when `path` has no such component. The one
    implementation of the contract's path rule: label files here, mask files in utils/data/semantic_spec.py."""
    p, key = str(path), f"{os.sep}{old}{os.sep}"
    i = p.rfind(key)
    if i >= 0:
        head, tail = p[: i + 1], p[i + len(key):]
    elif p.startswith(key[1:]):  # a relative path that begins with the component
        head, tail = "", p[len(key) - 1:]
    else:
        return None
    if os.sep not in new and "/" not in new and new not in (".", ".."):
        return head + new + os.sep + tail  # the common case, without normpath's cost
    return os.path.normpath(os.path.join(head, new, tail))


def img2label_paths(img_paths: list[str], images_dir: str = "images", labels_dir: str = "labels") -> list[str]:
    """Label path of each image: the last /<images_dir>/ becomes /<labels_dir>/ and the suffix becomes .txt."""
    return [os.path.splitext(swap_dir(p, images_dir, labels_dir) or p)[0] + ".txt" for p in img_paths]


def labels_dir_for(images_dir_path: str | Path, images_dir: str = "images", labels_dir: str = "labels") -> Path:
    """The labels folder paired with an images folder (the folder itself when it has no `images` component)."""
    x = img2label_paths([os.path.join(str(images_dir_path), "x.jpg")], images_dir, labels_dir)[0]
    return Path(os.path.dirname(x))


class _Corrupt(Exception):
    """A problem that makes an image/label pair unusable; the message names the problem."""


def _check_image(im_file: str) -> tuple[tuple[int, int], str]:
    """Verify one image; return its EXIF-corrected (w, h) and a warning ('' if none)."""
    msg = ""
    try:
        with Image.open(im_file) as im:
            im.verify()  # checks the structure without decoding every pixel
        with Image.open(im_file) as im:
            shape = exif_size(im)
            fmt = (im.format or "").lower()
    except Exception as e:
        raise _Corrupt(f"not a readable image ({e})") from None
    if shape[0] < MIN_IMAGE_SIZE or shape[1] < MIN_IMAGE_SIZE:
        raise _Corrupt(f"image size {shape} <{MIN_IMAGE_SIZE} pixels")
    if fmt not in IMG_FORMATS:
        raise _Corrupt(f"invalid image format {fmt or 'unknown'}")
    if fmt in ("jpeg", "jpg", "mpo"):
        with open(im_file, "rb") as f:
            f.seek(-2, 2)
            ended = f.read() == b"\xff\xd9"
        if not ended:
            # Never rewrite the user's file: use it only if it still decodes.
            if imread(im_file) is None:
                raise _Corrupt("image file is truncated (JPEG end marker missing and the data does not decode)")
            msg = "JPEG end marker missing; the image decodes and is used as is (file not modified)"
    return shape, msg


def _parse_rows(lb_file: str) -> list[list[str]]:
    with open(lb_file, encoding="utf-8", errors="replace") as f:
        return [line.split() for line in f.read().strip().splitlines() if line.strip()]


def _parse_labels(rows: list[list[str]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rows of text -> (labels (n, 5) cls xywhn float32, polygons normalised (k, 2) each; [] in box mode)."""
    try:
        if any(len(r) > 6 for r in rows):  # segment mode: every row is a polygon
            classes = np.array([float(r[0]) for r in rows], dtype=np.float32)
            segments = []
            for r in rows:
                v = np.array(r[1:], dtype=np.float32)
                if len(r) == 5:  # a box row inside a polygon file: use its rectangle
                    x1, y1, x2, y2 = v[0] - v[2] / 2, v[1] - v[3] / 2, v[0] + v[2] / 2, v[1] + v[3] / 2
                    v = np.array([x1, y1, x2, y1, x2, y2, x1, y2], dtype=np.float32)
                if len(v) % 2 or len(v) < 6:
                    raise _Corrupt(f"polygon needs an even number of coordinates (>= 6), got {len(v)}")
                segments.append(v.reshape(-1, 2))
            for s in segments:
                if (s < 0).any() or (s > 1).any():
                    raise _Corrupt(f"non-normalized or out of bounds polygon coordinates {s[(s < 0) | (s > 1)][:8]}")
            lb = np.concatenate((classes.reshape(-1, 1), segments2boxes(segments)), 1).astype(np.float32)
        else:
            bad = [len(r) for r in rows if len(r) != 5]
            if bad:
                raise _Corrupt(f"labels require 5 columns, {bad[0]} columns detected")
            lb = np.array(rows, dtype=np.float32).reshape(-1, 5)
            segments = []
    except ValueError as e:
        raise _Corrupt(f"non-numeric label value ({e})") from None
    if (lb[:, 0] < 0).any() or (lb[:, 0] != np.round(lb[:, 0])).any():
        raise _Corrupt(f"class ids must be non-negative integers, got {np.unique(lb[:, 0])[:8]}")
    coords = lb[:, 1:]
    if (coords < 0).any():
        raise _Corrupt(f"negative label values {coords[coords < 0][:8]}")
    if (coords > 1).any():
        raise _Corrupt(f"non-normalized or out of bounds coordinates {coords[coords > 1][:8]}")
    if (coords[:, 2:] <= 0).any():
        raise _Corrupt(f"non-positive box width/height {coords[:, 2:][(coords[:, 2:] <= 0).any(1)][:4].tolist()}")
    return lb, segments


def drop_classes(lb: np.ndarray, segments: list, num_cls: int | None, lb_file: str,
                 prefix: str = "") -> tuple[np.ndarray, list, str]:
    """Remove rows whose class id is >= num_cls; returns (labels, segments, warning naming file and ids | '')."""
    if num_cls is None or not len(lb) or not (lb[:, 0] >= num_cls).any():
        return lb, segments, ""
    bad = lb[:, 0] >= num_cls
    ids = sorted({int(c) for c in lb[bad, 0]})
    msg = (f"{prefix}WARNING ⚠️ {lb_file}: {int(bad.sum())} label row(s) with class id {ids} >= nc={num_cls} "
           f"dropped (valid ids are 0-{num_cls - 1})")
    return lb[~bad], ([s for s, k in zip(segments, ~bad) if k] if segments else []), msg


def verify_image_label(args: tuple) -> tuple:
    """Check one image/label pair: (im_file, lb_file, prefix, nc|None) ->
    (im_file|None, labels (n,5)|None, (w,h)|None, segments|None, nm, nf, ne, nc_corrupt, msg)."""
    im_file, lb_file, prefix, *rest = args
    num_cls = rest[0] if rest else None
    nm = nf = ne = 0
    msgs = []
    try:
        shape, m = _check_image(im_file)
        if m:
            msgs.append(f"{prefix}WARNING ⚠️ {im_file}: {m}")
        if not os.path.isfile(lb_file):
            return im_file, np.zeros((0, 5), np.float32), shape, [], 1, 0, 0, 0, "\n".join(msgs)
        nf = 1
        try:
            rows = _parse_rows(lb_file)
        except OSError as e:
            raise _Corrupt(f"label file {lb_file} unreadable ({e})") from None
        if not rows:
            return im_file, np.zeros((0, 5), np.float32), shape, [], 0, 1, 1, 0, "\n".join(msgs)
        try:
            lb, segments = _parse_labels(rows)
        except _Corrupt as e:
            raise _Corrupt(f"label file {lb_file}: {e}") from None
        lb, segments, m = drop_classes(lb, segments, num_cls, lb_file, prefix)
        msgs += [m] if m else []
        _, first = np.unique(lb, axis=0, return_index=True)
        if len(first) < len(lb):
            keep = np.sort(first)  # keep the first copy of each row, in file order
            msgs.append(f"{prefix}WARNING ⚠️ {lb_file}: {len(lb) - len(keep)} duplicate labels removed")
            lb = lb[keep]
            segments = [segments[i] for i in keep] if segments else []
        return im_file, lb, shape, segments, nm, nf, ne, 0, "\n".join(msgs)
    except _Corrupt as e:
        msgs.append(f"{prefix}WARNING ⚠️ {im_file}: ignoring corrupt image/label: {e}")
    except Exception as e:  # an unforeseen failure must skip one file, not stop the scan
        msgs.append(f"{prefix}WARNING ⚠️ {im_file}: ignoring corrupt image/label: {type(e).__name__}: {e}")
    return None, None, None, None, nm, nf, ne, 1, "\n".join(msgs)


def get_hash(paths: list[str], extra: str = "") -> str:
    """md5 over path, size and mtime of every existing file, so any edit, addition or removal invalidates."""
    h = hashlib.md5(extra.encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0-\n".encode())
    return h.hexdigest()


def load_cache(path: Path, hash_: str) -> dict | None:
    """Our own scan cache if it exists and matches version and hash, else None."""
    try:
        # allow_pickle only because this file is written by save_cache below, never taken from elsewhere.
        cache = np.load(str(path), allow_pickle=True).item()
        if cache.get("version") == CACHE_VERSION and cache.get("hash") == hash_:
            return cache
    except Exception:
        pass
    return None


def save_cache(path: Path, cache: dict, prefix: str = "") -> bool:
    """Write the cache atomically; an unwritable folder only costs a warning."""
    path = Path(path)
    if not path.parent.is_dir():
        return False  # no labels folder: nothing to put a cache next to
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, cache, allow_pickle=True)
        os.replace(tmp, path)
        LOGGER.info(f"{prefix}New cache created: {path}")
        return True
    except OSError as e:
        tmp.unlink(missing_ok=True)
        LOGGER.warning(f"{prefix}WARNING ⚠️ Cache directory {path.parent} is not writeable: {e}")
        return False


def _print_msgs(msgs: list[str]) -> None:
    for m in msgs[:MAX_PRINTED_MSGS]:
        LOGGER.warning(m)
    if len(msgs) > MAX_PRINTED_MSGS:
        LOGGER.warning(f"... and {len(msgs) - MAX_PRINTED_MSGS} more warnings like these")


def warn_missing_label_dirs(im_files: list[str], label_files: list[str], prefix: str = "") -> list[Path]:
    """One warning per missing labels folder (subfolders of one already reported stay quiet); returns them."""
    pairs = {}
    for im, lb in zip(im_files, label_files):
        pairs.setdefault(os.path.dirname(im), Path(os.path.dirname(lb)))
    warned: list[Path] = []
    for d in sorted(pairs):  # parents sort before their subfolders
        ld = pairs[d]
        if any(w == ld or w in ld.parents for w in warned) or ld.is_dir():
            continue
        LOGGER.warning(f"{prefix}WARNING ⚠️ no labels folder found next to {d}: expected {ld}")
        warned.append(ld)
    return warned


def scan_labels(im_files: list[str], label_files: list[str], cache_path: Path, prefix: str = "",
                num_cls: int | None = None, warn_missing_dirs: bool = True) -> dict:
    """Verified labels for all images, from the cache when it is current, else by a parallel scan (then cached).

    Returns {im_file: [labels, (w, h), segments], 'results': (nf, nm, ne, nc, n), 'msgs': [...], ...}.
    warn_missing_dirs: False where a missing labels folder is normal (a set with masks and no boxes).
    """
    if warn_missing_dirs:
        warn_missing_label_dirs(im_files, label_files, prefix)
    hash_ = get_hash(label_files + im_files)
    cache = load_cache(cache_path, hash_)
    if cache is not None:
        nf, nm, ne, nc, n = cache["results"]
        _print_msgs(cache["msgs"])
        LOGGER.info(f"{prefix}Scanning {cache_path}... {nf} found, {nm} missing, {ne} empty, {nc} corrupt (from cache)")
    else:
        cache = _scan(im_files, label_files, cache_path, prefix, hash_)
    if num_cls is None:
        return cache
    out, msgs = dict(cache), []
    for im_file, lb_file in zip(im_files, label_files):
        if im_file in out:
            lb, shape, segments = out[im_file]
            lb, segments, m = drop_classes(lb, segments, num_cls, lb_file, prefix)
            if m:
                out[im_file] = [lb, shape, segments]
                msgs.append(m)
    _print_msgs(msgs)
    return out


def _scan(im_files: list[str], label_files: list[str], cache_path: Path, prefix: str, hash_: str) -> dict:
    """Verify every pair in a pool, report, and save the result as the cache."""
    from tqdm import tqdm

    cache = {}
    nm = nf = ne = nc = 0
    msgs = []
    desc = f"{prefix}Scanning {cache_path.parent / cache_path.stem}..."
    # nc is applied after the cache (in scan_labels) so that loaders with and without nc share one cache
    jobs = [(im, lb, prefix, None) for im, lb in zip(im_files, label_files)]
    # Processes pay off only for big datasets; threads start instantly and cv2/PIL file IO releases the GIL.
    pool_cls = Pool if len(jobs) >= PROCESS_POOL_MIN and NUM_THREADS > 1 else ThreadPool
    with pool_cls(NUM_THREADS) as pool:
        pbar = tqdm(pool.imap(verify_image_label, jobs, chunksize=16), desc=desc, total=len(jobs),
                    bar_format="{l_bar}{bar:10}{r_bar}", disable=len(jobs) < 2)
        for im_file, lb, shape, segments, nm_f, nf_f, ne_f, nc_f, msg in pbar:
            nm, nf, ne, nc = nm + nm_f, nf + nf_f, ne + ne_f, nc + nc_f
            if im_file:
                cache[im_file] = [lb, shape, segments]
            if msg:
                msgs.extend(msg.split("\n"))
            pbar.desc = f"{desc} {nf} images, {nm + ne} backgrounds, {nc} corrupt"
        pbar.close()
    _print_msgs(msgs)
    LOGGER.info(f"{desc} {nf} found, {nm} missing, {ne} empty, {nc} corrupt")  # desc starts with the prefix
    cache.update(hash=hash_, results=(nf, nm, ne, nc, len(im_files)), msgs=msgs, version=CACHE_VERSION)
    save_cache(cache_path, cache, prefix)
    return cache
