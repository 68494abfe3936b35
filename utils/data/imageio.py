"""Reading images with EXIF orientation applied, EXIF-corrected sizes, and the letterbox resize."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

ORIENTATION_TAG = 0x0112  # EXIF "Orientation"

# How to turn a stored image upright for each EXIF orientation value (2..8); 1 means "already upright".
_UPRIGHT = {
    2: lambda im: cv2.flip(im, 1),
    3: lambda im: cv2.rotate(im, cv2.ROTATE_180),
    4: lambda im: cv2.flip(im, 0),
    5: lambda im: cv2.transpose(im),
    6: lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE),
    7: lambda im: cv2.flip(cv2.transpose(im), -1),
    8: lambda im: cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def exif_orientation(source) -> int:
    """EXIF orientation (1..8) of a PIL image, a path or encoded bytes; 1 when absent or unreadable."""
    try:
        from PIL import Image

        if isinstance(source, (bytes, bytearray, memoryview, np.ndarray)):
            # Image.open only parses the header here; the pixels are never decoded by PIL.
            with Image.open(io.BytesIO(bytes(source))) as im:
                value = im.getexif().get(ORIENTATION_TAG, 1)
        elif isinstance(source, (str, Path)):
            with Image.open(source) as im:
                value = im.getexif().get(ORIENTATION_TAG, 1)
        else:
            value = source.getexif().get(ORIENTATION_TAG, 1)
        value = int(value)
    except Exception:  # no EXIF, a format PIL can't parse (pfm), a broken header: treat as upright
        return 1
    return value if value in range(1, 9) else 1


def apply_orientation(im: np.ndarray, orientation: int) -> np.ndarray:
    """Return the image turned upright for the given EXIF orientation value."""
    fix = _UPRIGHT.get(orientation)
    return np.ascontiguousarray(fix(im)) if fix else im


def imread(path: str | Path) -> np.ndarray | None:
    """Read an image as a BGR uint8 array (EXIF orientation applied); None if it can't be read or decoded."""
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)  # np.fromfile + imdecode copes with non-ASCII paths
    except OSError:
        return None
    return imdecode(buf)


def imdecode(buf: bytes | bytearray | np.ndarray) -> np.ndarray | None:
    """Decode encoded image bytes to a BGR uint8 array (EXIF orientation applied); None if they are not an image."""
    buf = np.frombuffer(buf, dtype=np.uint8) if isinstance(buf, (bytes, bytearray)) else buf
    if buf.size == 0:
        return None
    # Decode without OpenCV's own rotation and apply the tag ourselves, so the rule is the same for every format.
    try:
        im = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:  # e.g. a header claiming more pixels than OpenCV allows: unreadable, like a broken file
        return None
    if im is None:
        return None
    return apply_orientation(im, exif_orientation(buf))


def exif_size(pil_img) -> tuple[int, int]:
    """(width, height) of a PIL image as displayed, i.e. swapped for the rotating EXIF orientations 5..8."""
    w, h = pil_img.size
    return (h, w) if exif_orientation(pil_img) in (5, 6, 7, 8) else (w, h)


def letterbox_geometry(hw: tuple[int, int], new_shape: int | tuple[int, int] = 640, auto: bool = True,
                       scaleFill: bool = False, scaleup: bool = True, stride: int = 32):
    """Where letterbox puts an image of size hw: ((nw, nh) resized size, (rw, rh), (dw, dh) pad per side,
    (top, bottom, left, right) border in pixels). One rule, so masks can follow their images exactly."""
    h0, w0 = hw
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    th, tw = new_shape
    r = min(th / h0, tw / w0)
    if not scaleup:  # only shrink: upscaling would make validation optimistic about small objects
        r = min(r, 1.0)
    ratio = (r, r)
    nw, nh = int(round(w0 * r)), int(round(h0 * r))
    dw, dh = tw - nw, th - nh
    if auto:  # smallest padding that makes both sides a multiple of stride
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    elif scaleFill:  # stretch to fill, no padding
        dw, dh = 0.0, 0.0
        nw, nh = tw, th
        ratio = (tw / w0, th / h0)
    dw, dh = dw / 2, dh / 2
    # The -0.1/+0.1 sends an odd pixel of padding to the bottom/right side.
    border = int(round(dh - 0.1)), int(round(dh + 0.1)), int(round(dw - 0.1)), int(round(dw + 0.1))
    return (nw, nh), ratio, (dw, dh), border


def letterbox(im: np.ndarray, new_shape: int | tuple[int, int] = 640, color=(114, 114, 114), auto: bool = True,
              scaleFill: bool = False, scaleup: bool = True, stride: int = 32, interp: int = cv2.INTER_LINEAR):
    """Resize keeping aspect ratio, pad to new_shape (h, w); return (im, (rw, rh), (dw, dh)) with dw/dh pad per side."""
    (nw, nh), ratio, pad, (top, bottom, left, right) = letterbox_geometry(im.shape[:2], new_shape, auto, scaleFill,
                                                                          scaleup, stride)
    if im.shape[:2] != (nh, nw):
        im = cv2.resize(im, (nw, nh), interpolation=interp)
    im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return im, ratio, pad
