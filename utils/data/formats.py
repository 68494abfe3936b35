"""File suffixes the loaders accept as images and as videos (lower case, without the dot)."""

from __future__ import annotations

IMG_FORMATS = ("bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm")
VID_FORMATS = ("asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv")


def suffix_of(path: str) -> str:
    """Lower-case suffix of a path or URL without the dot ('' when there is none)."""
    name = str(path).split("?")[0].rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def is_image_file(path: str) -> bool:
    """True when the path's suffix is one of IMG_FORMATS (case-insensitive)."""
    return suffix_of(path) in IMG_FORMATS


def is_video_file(path: str) -> bool:
    """True when the path's suffix is one of VID_FORMATS (case-insensitive)."""
    return suffix_of(path) in VID_FORMATS
