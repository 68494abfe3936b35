"""What the predictor draws and writes for semantic output: palettes, colour maps, overlays, frames joined to video."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from utils.data.dataset_config import DatasetError
from utils.data.video import frames_in, frames_to_video
from utils.tasks.semantic.palette import colourise, overlay, palette, palette_for


def test_palette_is_distinct_and_never_black():
    p = palette(600)
    assert p.shape == (600, 3) and p.dtype == np.uint8
    assert len({tuple(c) for c in p}) == 600
    assert not (p == 0).all(1).any()
    assert np.array_equal(palette(5), p[:5])  # fixed: a class keeps its colour whatever the class count


def test_cityscapes_and_custom_palettes():
    cs = palette_for(19, "cityscapes")
    assert tuple(cs[10]) == (70, 130, 180) and tuple(cs[0]) == (128, 64, 128)  # sky, road: official colours
    custom = palette_for(3, {1: (1, 2, 3)})
    assert tuple(custom[1]) == (1, 2, 3) and tuple(custom[0]) == tuple(palette(3)[0])
    with pytest.raises(ValueError, match="unknown palette"):
        palette_for(3, "rainbow")


def test_colourise_never_indexes_past_the_palette():
    colors = palette(3)
    cm = torch.tensor([[0, 1, 2], [3, 255, -1]])
    rgb = colourise(cm, colors)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[0], colors)
    assert (rgb[1] == 0).all()  # past the class count, ignore and negative: black
    bgr = colourise(cm.numpy().astype(np.uint16), colors, bgr=True)
    assert np.array_equal(bgr[0], colors[:, ::-1])


def test_overlay_blends_and_checks_shapes():
    im = np.full((4, 6, 3), 100, np.uint8)
    col = np.full((4, 6, 3), 200, np.uint8)
    assert (overlay(im, col, alpha=0.25) == 125).all()
    with pytest.raises(ValueError, match="equal shapes"):
        overlay(im, col[:2])


def _frames(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        im = np.zeros((h, w, 3), np.uint8)
        im[:, : (i * 7) % w + 1] = 255  # frames differ, so their order is visible in the video
        cv2.imwrite(str(folder / f"frame_{i + 1}.jpg"), im)


def test_frames_to_video(tmp_path):
    _frames(tmp_path / "f", [(64, 48)] * 12)
    (tmp_path / "f" / "notes.txt").write_text("not a frame")
    assert [p.name for p in frames_in(tmp_path / "f")][:3] == ["frame_1.jpg", "frame_2.jpg", "frame_3.jpg"]
    assert frames_in(tmp_path / "f")[-1].name == "frame_12.jpg"  # natural order, not frame_1, frame_10, ...
    out = frames_to_video(tmp_path / "f", tmp_path / "v" / "out.mp4", fps=12.5)
    cap = cv2.VideoCapture(str(out))
    try:
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.5, abs=0.01)
        assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (64, 48)
        widths = []
        while True:
            ok, fr = cap.read()
            if not ok:
                break
            widths.append(int((fr[10].mean(1) > 128).sum()))
    finally:
        cap.release()
    assert len(widths) == 12 and widths[:3] == pytest.approx([1, 8, 15], abs=2)


def test_frames_to_video_refuses_mixed_sizes(tmp_path):
    _frames(tmp_path / "f", [(64, 48), (64, 48), (32, 48)])
    with pytest.raises(DatasetError) as e:
        frames_to_video(tmp_path / "f", tmp_path / "out.mp4")
    msg = str(e.value)
    assert "frame_3.jpg: frame is 32x48 but frame_1.jpg is 64x48" in msg and "\n" not in msg
    assert not (tmp_path / "out.mp4").exists()  # checked before anything is written
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image frames"):
        frames_to_video(tmp_path / "empty", tmp_path / "x.mp4")
    with pytest.raises(NotADirectoryError):
        frames_to_video(tmp_path / "missing", tmp_path / "x.mp4")
    with pytest.raises(DatasetError, match="frame rate"):
        frames_to_video(tmp_path / "f", tmp_path / "x.mp4", fps=0)
