"""Joining a folder of image frames into one video file (detect.py --save-as-video)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
from PIL import Image

from utils.data.dataset_config import DatasetError
from utils.data.formats import is_image_file
from utils.data.imageio import exif_size, imread


def natural_key(name: str) -> list:
    """Sort key that orders frame_2 before frame_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def frames_in(folder: str | Path) -> list[Path]:
    """Image files directly inside a folder, in natural order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder of frames")
    files = (p for p in folder.iterdir() if p.is_file() and is_image_file(p.name))
    return sorted(files, key=lambda p: natural_key(p.name))


def frames_to_video(folder: str | Path, out_file: str | Path, fps: float = 30.0, fourcc: str = "mp4v") -> Path:
    """Write the folder's frames, in natural order, into one video; every frame must have the first one's size."""
    files = frames_in(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no image frames to join into a video")
    if not fps > 0:
        raise DatasetError(f"frame rate must be positive, got {fps}")
    sizes = []
    for f in files:  # check every header before writing, so a bad folder leaves no half-written video behind
        try:
            with Image.open(f) as im:
                sizes.append(exif_size(im))
        except OSError:
            raise DatasetError(f"{f}: not a readable image") from None
    first = sizes[0]
    for f, s in zip(files, sizes):
        if s != first:
            raise DatasetError(f"{f}: frame is {s[0]}x{s[1]} but {files[0].name} is {first[0]}x{first[1]}; "
                               f"a video needs frames of one size")
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out_file), cv2.VideoWriter_fourcc(*fourcc), float(fps), first)
    if not writer.isOpened():
        raise OSError(f"{out_file}: cannot open a {fourcc!r} video writer")
    try:
        for f in files:
            im = imread(f)
            if im is None:
                raise DatasetError(f"{f}: not a readable image")
            writer.write(im)
    finally:
        writer.release()
    return out_file
