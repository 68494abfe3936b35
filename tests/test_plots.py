"""Plots: every writer produces a readable image of a sensible size, also for empty input; drawing stays in its box."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from utils.plots import (
    Annotator,
    colors,
    feature_visualization,
    hist2d,
    plot_evolve,
    plot_images,
    plot_labels,
    plot_mc_curve,
    plot_pr_curve,
    plot_results,
    save_one_box,
)

DET_KEYS = ["epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
            "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "val/box_loss", "val/obj_loss", "val/cls_loss",
            "x/lr0", "x/lr1", "x/lr2"]


def _read(path, min_hw=(100, 100), max_hw=(5000, 5000)) -> np.ndarray:
    assert path.is_file(), f"{path} not written"
    im = cv2.imread(str(path))
    assert im is not None, f"{path} not readable by cv2"
    h, w = im.shape[:2]
    assert min_hw[0] <= h <= max_hw[0] and min_hw[1] <= w <= max_hw[1], (path, im.shape)
    return im


def _write_csv(path, keys, rows, width=20):
    lines = [",".join(f"{k:>{width}s}" for k in keys)]
    lines += [",".join(f"{v:>{width}.5g}" for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_colors_cycle_and_bgr():
    assert colors(0) == colors(20) != colors(1)
    assert colors(3, bgr=True) == colors(3)[::-1]
    assert all(0 <= v <= 255 for i in range(20) for v in colors(i))


def test_annotator_draws_only_inside_box():
    im = np.zeros((200, 300, 3), np.uint8)
    ann = Annotator(im)
    assert ann.lw == max(round(sum(im.shape) / 2 * 0.003), 2)
    ann.box_label((100, 80, 180, 150), "", color=(0, 255, 0))
    out = ann.result()
    m = ann.lw + 1  # a line of width lw straddles the box edge, anti-aliasing adds a pixel
    inside = out[80 - m:150 + m, 100 - m:180 + m]
    assert inside.any()
    outside = out.copy()
    outside[80 - m:150 + m, 100 - m:180 + m] = 0
    assert not outside.any()
    assert (out[80, 140] == (0, 255, 0)).all()  # the top edge carries the colour
    assert not out[115, 140].any()  # the interior stays untouched


def test_annotator_label_and_text_change_pixels():
    im = np.zeros((200, 300, 3), np.uint8)
    ann = Annotator(im, line_width=2)
    ann.box_label((100, 80, 180, 150), "cat 0.9", color=(255, 0, 0))
    assert ann.result()[60:80, 100:180].any()  # label tag above the box
    before = ann.result().copy()
    ann.text((5, 5), "hello")
    assert (ann.result()[:30, :100] != before[:30, :100]).any()
    bright = Annotator(np.zeros((100, 100, 3), np.uint8), line_width=2)
    bright.box_label((20, 40, 90, 90), "ab", color=(0, 230, 255))  # yellow tag: text switches to black
    tag = bright.result()[25:38, 20:40]
    assert (tag[..., 2] > 200).mean() > 0.3 and not (tag.min(2) > 200).any()  # a yellow tag with no white text
    ann2 = Annotator(np.zeros((50, 60, 3), np.uint8))
    ann2.box_label((0, 0, 30, 30), "top", color=(0, 0, 255))  # no room above: tag goes inside, must not crash
    assert ann2.result()[0:15, 0:30].any()
    ann2.masks(np.ones((1, 25, 30)), [(0, 255, 0)], alpha=0.5)  # resized to the image
    assert ann2.result()[40, 50, 1] > 100


def _batch(b=4, h=64, w=80, float_=False):
    g = torch.Generator().manual_seed(1)
    ims = torch.randint(0, 255, (b, 3, h, w), generator=g, dtype=torch.uint8)
    return ims.float() / 255 if float_ else ims


def test_plot_images_normalised_and_pixel_targets(tmp_path):
    ims = _batch()
    tn = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.3], [2, 0, 0.3, 0.6, 0.2, 0.2], [3, 5, 0.7, 0.7, 0.3, 0.5]])
    kw = dict(paths=[f"im{i}.jpg" for i in range(4)], names={1: "dog"})
    out_n = plot_images(ims, tn, fname=tmp_path / "n.jpg", **kw)
    im = _read(tmp_path / "n.jpg", (128, 160), (128, 160))  # 2x2 tiles of 64x80
    assert out_n.shape == (128, 160, 3)
    tp = tn.clone()
    tp[:, [2, 4]] *= 80
    tp[:, [3, 5]] *= 64
    out_p = plot_images(ims, tp, fname=tmp_path / "p.jpg", **kw)
    _read(tmp_path / "p.jpg", (128, 160), (128, 160))
    plain = plot_images(ims, None, fname=tmp_path / "plain.jpg", **kw)
    assert (out_n != plain).any(2).sum() > 200  # three boxes drawn
    # the same boxes in pixels draw (almost) the same pixels; float rounding may move an edge by one pixel
    assert (out_n != out_p).any(2).mean() < 0.01
    assert (out_n[:64, 82:] == plain[:64, 82:]).all()  # tile 1 (top right) has no targets: untouched
    assert im.shape == (128, 160, 3)


def test_plot_images_predictions_conf_and_float(tmp_path):
    ims = _batch(b=2, float_=True)
    preds = np.array([[0, 1, 0.5, 0.5, 0.5, 0.5, 0.9], [1, 2, 0.5, 0.5, 0.5, 0.5, 0.1]])
    plain = plot_images(ims, np.zeros((0, 7)), fname=tmp_path / "none.jpg")
    out = plot_images(ims, preds, fname=tmp_path / "pred.jpg", names=["a", "b", "c"])
    _read(tmp_path / "pred.jpg", (128, 160), (128, 160))  # 2 images still make a 2x2 grid
    assert (out[:64, :80] != plain[:64, :80]).any()  # conf 0.9 drawn on tile 0
    assert (out[:64, 82:] == plain[:64, 82:]).all()  # conf 0.1 hidden on tile 1


def test_plot_images_big_batch_scaled_and_empty(tmp_path):
    ims = torch.zeros((20, 3, 640, 640), dtype=torch.uint8)
    plot_images(ims, torch.zeros((0, 6)), fname=tmp_path / "big.jpg", max_size=960)
    _read(tmp_path / "big.jpg", (900, 900), (970, 970))  # 16 tiles cap, scaled to max_size
    assert plot_images(torch.zeros((0, 3, 32, 32)), None, fname=tmp_path / "empty.jpg") is None
    assert not (tmp_path / "empty.jpg").exists()


@pytest.mark.parametrize("n", [0, 1, 300])
def test_plot_labels(tmp_path, n):
    rng = np.random.default_rng(0)
    labels = np.concatenate([rng.integers(0, 3, (n, 1)), rng.uniform(0.05, 0.95, (n, 4))], 1)
    plot_labels(labels, names={0: "a", 1: "b", 2: "c"}, save_dir=tmp_path)
    _read(tmp_path / "labels.jpg", (600, 600))
    _read(tmp_path / "labels_correlogram.jpg", (600, 600))


def test_plot_results_detection_and_other_layouts(tmp_path):
    rows = [[e, *np.linspace(1, 0.1, 13) / (e + 1)] for e in range(12)]
    _write_csv(tmp_path / "results.csv", DET_KEYS, rows)
    out = plot_results(tmp_path / "results.csv")
    im = _read(out, (1000, 2000))
    assert out == tmp_path / "results.png" and im.shape[1] > im.shape[0]
    # classification-style csv: a different column set must still plot
    cls_dir = tmp_path / "cls"
    cls_dir.mkdir()
    _write_csv(cls_dir / "results.csv", ["epoch", "train/loss", "val/loss", "metrics/accuracy_top1",
                                         "metrics/accuracy_top5", "lr/0"], [[0, 1, 1, 0.1, 0.5, 0.01]], 23)
    _read(plot_results(cls_dir), (500, 500))


def test_plot_results_empty_and_missing(tmp_path):
    _write_csv(tmp_path / "results.csv", DET_KEYS, [])
    _read(plot_results(tmp_path / "results.csv"), (1000, 2000))
    assert plot_results(tmp_path / "missing" / "results.csv") is None
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "results.csv").write_text("")
    assert plot_results(tmp_path / "e" / "results.csv") is None


@pytest.mark.parametrize("nc", [0, 3, 30])
def test_pr_and_mc_curves(tmp_path, nc):
    px = np.linspace(0, 1, 1000)
    py = [np.clip(1 - px ** (i + 1), 0, 1) for i in range(nc)]
    ap = np.full((nc, 10), 0.5)
    names = {i: f"c{i}" for i in range(nc)}
    _read(plot_pr_curve(px, py, ap, tmp_path / "PR_curve.png", names), (800, 1200))
    f1 = np.stack(py) if nc else np.zeros((0, 1000))
    _read(plot_mc_curve(px, f1, tmp_path / "F1_curve.png", names, ylabel="F1"), (800, 1200))


def test_save_one_box_arithmetic_and_no_overwrite(tmp_path):
    rng = np.random.default_rng(0)
    im = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    box = torch.tensor([100.0, 100.0, 200.0, 150.0])
    w, h = 100 * 1.02 + 10, 50 * 1.02 + 10
    exp = (int(125 + h / 2) - int(125 - h / 2), int(150 + w / 2) - int(150 - w / 2))
    f = tmp_path / "crops" / "a" / "im.jpg"
    c1 = save_one_box(box, im, file=f, BGR=True)
    assert c1.shape[:2] == exp
    assert (c1 == im[int(125 - h / 2):int(125 + h / 2), int(150 - w / 2):int(150 + w / 2)]).all()
    c2 = save_one_box(box, im, file=f, BGR=False)
    assert (c2 == c1[..., ::-1]).all()
    assert sorted(p.name for p in f.parent.iterdir()) == ["im.jpg", "im2.jpg"]
    assert cv2.imread(str(f)).shape == (*exp, 3)
    sq = save_one_box(box, im, file=f, square=True, save=False)
    assert abs(sq.shape[0] - sq.shape[1]) <= 1 and sq.shape[1] == exp[1]
    assert len(list(f.parent.iterdir())) == 2  # save=False writes nothing
    clipped = save_one_box([-50, -50, 20, 20], im, file=f, save=False)
    assert clipped.shape[:2] == (int(-15 + 81.4 / 2), int(-15 + 81.4 / 2))
    empty = save_one_box([500, 500, 600, 600], im, file=tmp_path / "out.jpg")  # fully outside: warn, no file
    assert empty.size == 0 and not (tmp_path / "out.jpg").exists()


def test_feature_visualization(tmp_path):
    x = torch.randn(1, 20, 16, 16)
    feature_visualization(x, "models.common.C3", 4, n=12, save_dir=tmp_path)
    png = tmp_path / "stage4_C3_features.png"
    _read(png, (100, 600))
    assert np.load(png.with_suffix(".npy")).shape == (20, 16, 16)
    feature_visualization(x, "models.heads.Detect", 24, save_dir=tmp_path / "d")
    feature_visualization(torch.randn(1, 8, 1, 1), "Conv", 9, save_dir=tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_plot_evolve_and_empty(tmp_path):
    keys = DET_KEYS[4:11] + ["lr0", "momentum", "mosaic"]
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.uniform(0, 1, (15, 7)), rng.uniform(0.01, 0.9, (15, 3))], 1)
    _write_csv(tmp_path / "evolve.csv", keys, rows)
    _read(plot_evolve(tmp_path / "evolve.csv"), (200, 400))
    # the engine's own format: a leading fitness column, then the hyperparameters, unpadded
    lines = ["fitness,lr0,momentum"] + [f"{f:.6g},{a:.6g},{b:.6g}" for f, a, b in rng.uniform(0, 1, (9, 3))]
    (tmp_path / "own.csv").write_text("\n".join(lines) + "\n")
    assert plot_evolve(tmp_path / "own.csv") == tmp_path / "own.png"
    own = _read(tmp_path / "own.png", (150, 300))
    assert own.shape[1] > 1.5 * own.shape[0]  # 2 panels in one row: fitness itself is not plotted as a hyp
    _write_csv(tmp_path / "e2.csv", keys, [])
    assert plot_evolve(tmp_path / "e2.csv") is None
    assert plot_evolve(tmp_path / "none.csv") is None


def test_hist2d_density():
    x = np.r_[np.zeros(50), np.ones(1)]
    d = hist2d(x, x, 10)
    assert d.shape == (51,) and d[0] == pytest.approx(np.log(50)) and d[-1] == 0
    assert hist2d(np.ones(3), np.ones(3)).shape == (3,)
    assert hist2d([], []).shape == (0,)
