"""What the hub model accepts as an image, turned into one form: an HWC uint8 RGB array and a file name.

Accepted: a path (str or Path), an http(s) URL, encoded image bytes, a PIL image, a numpy array and a (3,H,W)
torch tensor. Numpy arrays are taken as RGB, as upstream YOLOv5's hub model takes them (np.asarray of a PIL image
is RGB): pass OpenCV images as `im[..., ::-1]`.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import torch

from utils.data.imageio import apply_orientation, exif_orientation, imdecode, imread
from utils.downloads import is_url
from utils.errors import UserError

URL_TIMEOUT = 10.0  # seconds to wait for an image URL before giving up
KINDS = "a file path, an http(s) URL, image bytes, a PIL image, a uint8 numpy array (HWC, RGB) or a (3,H,W) tensor"


class ImageInputError(UserError, ValueError):
    """An input the hub model cannot turn into an image (wrong type, shape or dtype, or bytes that don't decode)."""


def fetch_url(url: str, timeout: float = URL_TIMEOUT) -> bytes:
    """The bytes behind an image URL; one-line FileNotFoundError when it can't be fetched (e.g. offline)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()
    except (urllib.error.URLError, OSError, ValueError) as e:  # URLError, HTTPError and timeouts are OSErrors
        reason = getattr(e, "reason", e)
        raise FileNotFoundError(f"{url}: could not download the image ({reason}); offline? "
                                f"download it and pass the file path") from None


def _name_from_url(url: str, default: str) -> str:
    return Path(urllib.parse.urlparse(url).path).name or default


def _from_array(a: np.ndarray, what: str) -> np.ndarray:
    """uint8 HWC (or CHW, or HW) with 1, 3 or 4 channels -> contiguous uint8 HWC with 3."""
    if a.dtype != np.uint8:
        raise ImageInputError(f"{what}: numpy images must be uint8 0-255 (got {a.dtype}); "
                              f"convert with .clip(0, 255).astype(np.uint8)")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)  # CHW given: channels-first arrays have few rows and many columns
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or 0 in a.shape:
        raise ImageInputError(f"{what}: expected an HxWx3 image array, got shape {tuple(a.shape)}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[..., :3])  # RGBA: alpha dropped


def _from_tensor(t: torch.Tensor, what: str) -> np.ndarray:
    """A (3,H,W) tensor, float 0-1 or uint8 0-255, -> uint8 HWC RGB."""
    if t.ndim != 3 or t.shape[0] != 3:
        raise ImageInputError(f"{what}: a tensor in a list must be one (3,H,W) image, got shape {tuple(t.shape)}")
    t = t.detach().cpu()
    if t.is_floating_point():
        t = (t.float() * 255).round_().clamp_(0, 255)
    return np.ascontiguousarray(t.to(torch.uint8).permute(1, 2, 0).numpy())


def _from_pil(im) -> np.ndarray:
    rgb = np.asarray(im.convert("RGB"))
    return np.ascontiguousarray(apply_orientation(rgb, exif_orientation(im)))


def _decode(buf: bytes, what: str) -> np.ndarray:
    bgr = imdecode(buf)
    if bgr is None:
        raise ImageInputError(f"{what}: not an image (could not decode {len(buf)} bytes)")
    return np.ascontiguousarray(bgr[..., ::-1])


def to_rgb(x, i: int = 0) -> tuple[np.ndarray, str]:
    """One input -> (HWC uint8 RGB array, file name used when saving: the source's name or image{i}.jpg)."""
    default = f"image{i}.jpg"
    if isinstance(x, (str, Path)):
        s = str(x).strip()
        if is_url(s) and urllib.parse.urlparse(s).scheme in ("http", "https"):
            return _decode(fetch_url(s), s), _name_from_url(s, default)
        p = Path(s)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: image not found")
        bgr = imread(p)
        if bgr is None:
            raise ImageInputError(f"{p}: not an image, or a corrupt one (could not decode it)")
        return np.ascontiguousarray(bgr[..., ::-1]), p.name
    if isinstance(x, (bytes, bytearray, memoryview)):
        return _decode(bytes(x), f"input {i} (bytes)"), default
    if isinstance(x, np.ndarray):
        return _from_array(x, f"input {i} (numpy array)"), default
    if isinstance(x, torch.Tensor):
        return _from_tensor(x, f"input {i} (tensor)"), default
    if hasattr(x, "convert") and hasattr(x, "size") and hasattr(x, "getexif"):  # PIL.Image without importing PIL
        name = Path(getattr(x, "filename", "") or default).name
        return _from_pil(x), name
    raise ImageInputError(f"input {i}: {type(x).__name__} is not an image; pass {KINDS}, or a list of them")
