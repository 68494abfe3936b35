"""LoadImages over files/dirs/globs/lists/videos, skip rules and messages; stream detection and failure."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from utils.data.sources import LoadImages, LoadStreams, StreamError, is_stream_source


def _video(path, n=10, size=(64, 48), fourcc="mp4v", noise=False):
    """Frame i is grey level 20*i (or random noise, which compresses badly and so spreads over the file)."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, size)
    assert w.isOpened()
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = (size[1], size[0], 3)
        w.write(rng.integers(0, 255, shape, dtype=np.uint8) if noise else np.full(shape, i * 20 % 256, np.uint8))
    w.release()
    return path


@pytest.fixture()
def logs():
    """Messages sent to the project logger (its handler writes to the real stdout, out of capsys' reach)."""
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logger = logging.getLogger("yolov5")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture()
def media(tmp_path):
    d = tmp_path / "media"
    d.mkdir()
    cv2.imwrite(str(d / "b.jpg"), np.full((40, 60, 3), 50, np.uint8))
    cv2.imwrite(str(d / "a.png"), np.full((30, 20, 3), 90, np.uint8))
    (d / "notes.md").write_text("not media")
    (d / "sub").mkdir()
    cv2.imwrite(str(d / "sub" / "c.jpg"), np.zeros((8, 8, 3), np.uint8))  # not listed: dirs are non-recursive
    _video(d / "clip.mp4")
    return d


def test_dir_images_then_videos(media):
    items = list(LoadImages(media, img_size=64, stride=32))
    paths = [x[0] for x in items]
    assert paths[0].endswith("a.png") and paths[1].endswith("b.jpg")
    assert all(p.endswith("clip.mp4") for p in paths[2:]) and len(paths) == 2 + 10
    path, im, im0, cap, s = items[1]
    assert im.shape == (3, 64, 64) and im.dtype == np.uint8 and im.flags["C_CONTIGUOUS"]
    assert im0.shape == (40, 60, 3) and cap is None
    assert s == f"image 2/3 {path}: "
    assert items[2][3] is not None
    assert items[4][4] == f"video 3/3 (frame 3/10) {items[4][0]}: "
    # CHW RGB: a blue-only BGR pixel becomes channel 2
    blue = np.zeros((32, 32, 3), np.uint8)
    blue[..., 0] = 255
    cv2.imwrite(str(media / "blue.png"), blue)
    _, im, *_ = next(iter(LoadImages(media / "blue.png", img_size=32)))
    assert im[2].mean() == 255 and im[0].max() == 0


def test_glob_txt_list(media, tmp_path):
    assert [x[0] for x in LoadImages(str(media / "*.jpg"))] == [str(media / "b.jpg")]
    txt = tmp_path / "list.txt"
    txt.write_text(f"{media / 'b.jpg'}\nmedia/a.png\n\n")  # relative entries resolve against the list's folder
    assert [x[0] for x in LoadImages(txt)] == [str(media / "b.jpg"), str(media / "a.png")]
    loader = LoadImages([str(media / "b.jpg"), str(media / "a.png")])
    assert len(loader) == 2 and [x[0] for x in loader] == [str(media / "a.png"), str(media / "b.jpg")]


def test_vid_stride_and_auto(media):
    frames = [x for x in LoadImages(media / "clip.mp4", img_size=64, vid_stride=3)]
    assert len(frames) == 4  # frames 0, 3, 6, 9
    assert frames[-1][4].startswith("video 1/1 (frame 4/4)")
    assert abs(frames[1][2].mean() - 60) < 8 and abs(frames[3][2].mean() - 180) < 8
    _, im, *_ = next(iter(LoadImages(media / "b.jpg", img_size=64, auto=True)))
    assert im.shape == (3, 64, 64)
    _, im, *_ = next(iter(LoadImages(media / "b.jpg", img_size=128, auto=True, stride=32)))
    assert im.shape == (3, 96, 128)  # 40x60 -> 85x128 -> padded to 96 (minimal stride multiple)


def test_transforms_used(media):
    _, im, im0, _, _ = next(iter(LoadImages(media / "b.jpg", transforms=lambda x: x.sum())))
    assert im == im0.sum()


def test_truncated_video_ends_cleanly(tmp_path, logs):
    v = _video(tmp_path / "v.avi", n=20, fourcc="MJPG", noise=True)
    data = v.read_bytes()
    t = tmp_path / "t.avi"
    t.write_bytes(data[: len(data) // 2])  # header still announces 20 frames
    n = sum(1 for _ in LoadImages(t))
    assert 0 < n < 20
    assert any(f"ended at frame {n}, header announced 20" in m for m in logs)


def test_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg does not exist"):
        LoadImages(tmp_path / "nope.jpg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No images or videos found.*bmp.*mp4"):
        LoadImages(tmp_path / "empty")


def test_corrupt_image_skipped(media, logs):
    (media / "0bad.jpg").write_bytes(b"\xff\xd8 garbage")
    loader = LoadImages(media)
    paths = [x[0] for x in loader]
    assert str(media / "0bad.jpg") not in paths and len(paths) == 12
    assert loader.skipped == 1
    assert any("0bad.jpg: cannot read or decode, skipped" in m for m in logs)
    assert any("1 of 4 files could not be read" in m for m in logs)


def test_is_stream_source(tmp_path):
    assert is_stream_source("0") and is_stream_source("12")
    assert is_stream_source("rtsp://example.com/media.mp4/live")
    assert is_stream_source("https://example.com/live") and is_stream_source("rtmp://h/app")
    assert not is_stream_source("https://example.com/a/bus.jpg")
    assert not is_stream_source("http://example.com/a/video.mp4")
    assert not is_stream_source("data/images") and not is_stream_source("a.jpg")
    assert is_stream_source("list.streams")
    urls = tmp_path / "urls.txt"
    urls.write_text("rtsp://a/1\n0\n")
    paths = tmp_path / "paths.txt"
    paths.write_text("a.jpg\nb.jpg\n")
    assert is_stream_source(str(urls)) and not is_stream_source(str(paths))
    assert not is_stream_source(["0"])


def test_stream_failure_is_one_line():
    with pytest.raises(StreamError, match=r"stream 1/1: failed to open rtsp://127.0.0.1:1/live") as e:
        LoadStreams("rtsp://127.0.0.1:1/live")
    assert "\n" not in str(e.value) and isinstance(e.value, ValueError)
    with pytest.raises(StreamError, match="failed to open 97"):
        LoadStreams("97")


def test_media_urls_are_fetched_to_a_temporary_folder(media, http_files, tmp_path):
    from conftest import unreachable_url

    www, url = http_files
    for f in ("b.jpg", "clip.mp4"):
        (www / f).write_bytes((media / f).read_bytes())
    loader = LoadImages([f"{url}/b.jpg?size=large", f"{url}/clip.mp4", f"{url}/sub%20dir/../b.jpg"], img_size=64)
    items = list(loader)
    names = [Path(p).name for p, *_ in items]
    assert names[:2] == ["b.jpg", "b.jpg"] and names[2:] == ["clip.mp4"] * 10  # both copies, then every frame
    assert (items[0][2] == cv2.imread(str(media / "b.jpg"))).all()
    folder = Path(items[0][0]).parents[1]
    assert folder.is_dir() and not folder.is_relative_to(tmp_path)  # a temporary folder, not the user's
    del loader, items
    import gc

    gc.collect()
    assert not folder.exists()  # removed with the loader
    with pytest.raises(FileNotFoundError) as e:
        LoadImages(unreachable_url("bus.jpg"))
    assert "bus.jpg: could not download" in str(e.value) and "offline?" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="cut/b.jpg: could not download .*stopped after"):
        LoadImages(f"{url}/cut/b.jpg")


def test_detect_source_url(http_files, tmp_path):
    from conftest import write_checkpoint

    import detect

    www, url = http_files
    cv2.imwrite(str(www / "bus.jpg"), np.full((48, 64, 3), 120, np.uint8))
    w = write_checkpoint(tmp_path / "w.pt")
    out = detect.run(weights=str(w), source=f"{url}/bus.jpg", imgsz=[64], project=str(tmp_path / "runs"),
                     device="cpu", save_txt=True)
    assert (out / "bus.jpg").is_file()
    assert is_stream_source(f"{url}/live") and not is_stream_source(f"{url}/bus.jpg")
