"""imread (EXIF orientation, unicode paths, bad files), exif_size and letterbox arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from utils.data.formats import IMG_FORMATS, VID_FORMATS, is_image_file, is_video_file
from utils.data.imageio import exif_size, imread, letterbox


def _save_with_orientation(path, arr_rgb, orientation):
    im = Image.fromarray(arr_rgb)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, exif=exif)


def test_formats():
    assert len(IMG_FORMATS) == 10 and "pfm" in IMG_FORMATS and "jpg" in IMG_FORMATS
    assert len(VID_FORMATS) == 11 and "mp4" in VID_FORMATS and "jpg" not in VID_FORMATS
    assert is_image_file("a/B.JPG") and not is_image_file("a/b.mp4") and is_video_file("x.MOV")
    assert is_image_file("https://x.org/a/b.png?raw=1") and not is_image_file("noext")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil(tmp_path, orientation):
    arr = np.random.default_rng(orientation).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    f = tmp_path / "o.png"  # lossless, so pixels can be compared exactly
    _save_with_orientation(f, arr, orientation)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(f)))[..., ::-1]
    got = imread(f)
    assert got.shape == ref.shape
    assert np.array_equal(got, ref)
    w, h = exif_size(Image.open(f))
    assert (h, w) == got.shape[:2]


def test_exif_jpeg_rotated_size(tmp_path):
    arr = np.zeros((40, 100, 3), np.uint8)
    arr[:, :10] = 255  # a white stripe on the left of the stored image
    f = tmp_path / "rot.jpg"
    _save_with_orientation(f, arr, 6)  # 6: display rotated 90 degrees clockwise
    im = imread(f)
    assert im.shape == (100, 40, 3)
    assert im[:10].mean() > 200 and im[-10:].mean() < 50  # the stripe is now at the top
    assert exif_size(Image.open(f)) == (40, 100)


def test_imread_unicode_and_bad_files(tmp_path):
    d = tmp_path / "日本語 dir"
    d.mkdir()
    f = d / "ä.jpg"
    Image.fromarray(np.full((12, 16, 3), 200, np.uint8)).save(f)
    assert imread(f).shape == (12, 16, 3)
    (d / "bad.jpg").write_bytes(b"not an image at all")
    (d / "empty.png").write_bytes(b"")
    assert imread(d / "bad.jpg") is None
    assert imread(d / "empty.png") is None
    assert imread(d / "missing.jpg") is None


def test_letterbox_auto():
    im = np.zeros((480, 640, 3), np.uint8)
    out, ratio, (dw, dh) = letterbox(im, 640, auto=True, stride=32)
    assert out.shape == (480, 640, 3) and ratio == (1.0, 1.0) and (dw, dh) == (0, 0)
    im = np.zeros((300, 500, 3), np.uint8)
    out, ratio, (dw, dh) = letterbox(im, 640, auto=True, stride=32)
    # r = 1.28 -> 640 x 384, already multiples of 32
    assert out.shape == (384, 640, 3) and ratio == (1.28, 1.28) and (dw, dh) == (0, 0)
    im = np.zeros((100, 333, 3), np.uint8)
    out, ratio, (dw, dh) = letterbox(im, 320, auto=True, stride=32)
    # r = 320/333 -> 320 x 96.1 -> 96: pads to 96 (already a multiple of 32)
    assert out.shape == (96, 320, 3)


def test_letterbox_square_padding_split():
    im = np.full((100, 200, 3), 7, np.uint8)
    out, ratio, (dw, dh) = letterbox(im, 101, auto=False)
    # r = 101/200 = 0.505 -> 101 x 50.5 -> round(50.5) = 50 (banker's) -> dh = 51 / 2 = 25.5
    assert out.shape == (101, 101, 3)
    assert ratio == (0.505, 0.505) and dw == 0 and dh == 25.5
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    assert (top, bottom) == (25, 26)
    assert (out[:top] == 114).all() and (out[-bottom:] == 114).all()
    assert (out[top:top + 50] == 7).all()


def test_letterbox_no_scaleup_and_scalefill():
    im = np.full((100, 150, 3), 9, np.uint8)
    out, ratio, (dw, dh) = letterbox(im, 640, auto=False, scaleup=False)
    assert out.shape == (640, 640, 3) and ratio == (1.0, 1.0) and (dw, dh) == (245.0, 270.0)
    assert (out[270:370, 245:395] == 9).all()
    out, ratio, pad = letterbox(im, (320, 480), auto=False, scaleFill=True)
    assert out.shape == (320, 480, 3) and ratio == (480 / 150, 320 / 100) and pad == (0.0, 0.0)
    out, _, _ = letterbox(im, 640, auto=False, color=(1, 2, 3))
    assert tuple(out[0, 0]) == (1, 2, 3)


def huge_header_png(path) -> None:
    """A PNG whose header claims 100000 x 100000 pixels (OpenCV refuses it with an exception, not None)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10))
                     + chunk(b"IEND", b""))


def test_imread_returns_none_for_an_absurd_header(tmp_path):
    f = tmp_path / "huge.png"
    huge_header_png(f)
    assert imread(f) is None  # skipped like any unreadable image, never an OpenCV exception
