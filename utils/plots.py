"""Drawing and plotting: box annotation, training mosaics, label statistics, results/metric curves, crops, features.

Figures are built on `matplotlib.figure.Figure` objects rendered by the Agg canvas and written with cv2, so importing
this module never switches the global pyplot backend and no figure leaks into pyplot's registry (training may plot from
threads). Images are drawn with cv2 only: no font downloads.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils.boxes import xywh2xyxy
from utils.log import LOGGER
from utils.paths import increment_path

# 20 mutually distinct colours (RGB); class i uses entry i % 20.
_PALETTE = tuple(
    tuple(int(h[k:k + 2], 16) for k in (0, 2, 4))
    for h in ("E6194B", "3CB44B", "FFC61A", "4363D8", "F58231", "911EB4", "22B8D6", "F032E6", "9BC53D", "E87EA1",
              "469990", "8C6BC8", "9A6324", "C9B400", "800000", "2EC48A", "808000", "D9822B", "000075", "7F7F7F")
)


def colors(i: int, bgr: bool = False) -> tuple[int, int, int]:
    """Colour of class i from a fixed 20-colour palette (RGB, or BGR for cv2 drawing)."""
    c = _PALETTE[int(i) % len(_PALETTE)]
    return c[::-1] if bgr else c


def _to_numpy(x) -> np.ndarray:
    """Tensor or array-like -> numpy (half tensors widened first because numpy lacks bfloat16)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def _name(names, c: int) -> str:
    """Class name from a dict or a sequence, falling back to the index so odd label files never crash a plot."""
    if isinstance(names, dict):
        return str(names.get(c, c))
    return str(names[c]) if names is not None and 0 <= c < len(names) else str(c)


def _save_fig(fig: Figure, path: Path, dpi: int = 200) -> Path:
    """Render a Figure with Agg and write it with cv2 (any cv2 extension; no PIL needed for .jpg)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    if not cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR)):
        LOGGER.warning(f"WARNING ⚠️ {path}: could not write the figure (unsupported extension or unwritable folder)")
    return path


class Annotator:
    """Draw boxes, labels, text and masks on a BGR uint8 image with cv2."""

    def __init__(self, im: np.ndarray, line_width: int | None = None, example: str = "abc"):
        if not isinstance(im, np.ndarray) or im.ndim != 3:
            raise TypeError(f"Annotator needs an HxWx3 numpy image, got {type(im).__name__}")
        # cv2 draws in place and needs contiguous memory; this is a no-op (same array) for ordinary images
        self.im = np.ascontiguousarray(im)
        self.lw = line_width or max(round(sum(im.shape) / 2 * 0.003), 2)
        self.tf = max(self.lw - 1, 1)  # font thickness
        self.fs = self.lw / 3  # font scale; keeps text height proportional to line width
        self.example = example  # kept for API compatibility: cv2's Hershey font has no non-ASCII glyphs anyway

    @staticmethod
    def _ascii(text: str) -> str:
        return str(text).encode("ascii", "replace").decode()

    def box_label(self, box, label: str = "", color=(128, 128, 128), txt_color=None) -> None:
        """Draw an xyxy box with an optional filled label tag; txt_color None = white, or black on bright tags."""
        x1, y1, x2, y2 = (round(float(v)) for v in list(box)[:4])  # nearest pixel: unit conversions stay stable
        cv2.rectangle(self.im, (x1, y1), (x2, y2), color, thickness=self.lw, lineType=cv2.LINE_AA)
        if label:
            label = self._ascii(label)
            if txt_color is None:  # white on yellow/light-green tags is unreadable; colours are BGR, hence the weights
                txt_color = (0, 0, 0) if np.dot(color[:3], (0.114, 0.587, 0.299)) > 170 else (255, 255, 255)
            tw, th = cv2.getTextSize(label, 0, fontScale=self.fs, thickness=self.tf)[0]
            above = y1 - th - 3 >= 0  # tag sits above the box unless that would leave the image
            ty1, ty2 = (y1 - th - 3, y1) if above else (y1, y1 + th + 3)
            tx1 = min(x1, max(self.im.shape[1] - tw, 0))  # slide left rather than clip at the right edge
            cv2.rectangle(self.im, (tx1, ty1), (tx1 + tw, ty2), color, -1, cv2.LINE_AA)
            cv2.putText(self.im, label, (tx1, ty2 - 2), 0, self.fs, txt_color, self.tf, cv2.LINE_AA)

    def rectangle(self, xy, fill=None, outline=(255, 255, 255), width: int = 1) -> None:
        """Draw an xyxy rectangle; `fill` fills it, `outline` draws its border."""
        x1, y1, x2, y2 = (round(float(v)) for v in list(xy)[:4])
        if fill is not None:
            cv2.rectangle(self.im, (x1, y1), (x2, y2), fill, -1)
        if outline is not None:
            cv2.rectangle(self.im, (x1, y1), (x2, y2), outline, width)

    def text(self, xy, text: str, txt_color=(255, 255, 255), scale: float | None = None) -> None:
        """Write text with its top-left corner at xy."""
        fs = scale or self.fs
        th = cv2.getTextSize(self._ascii(text), 0, fs, self.tf)[0][1]
        org = (int(xy[0]), int(xy[1]) + th)  # cv2 anchors text at the baseline; callers think in top-left
        cv2.putText(self.im, self._ascii(text), org, 0, fs, txt_color, self.tf, cv2.LINE_AA)

    def masks(self, masks, mask_colors, alpha: float = 0.5) -> None:
        """Blend (n,h,w) binary masks into the image, one BGR colour per mask; masks are resized to the image."""
        masks = _to_numpy(masks)
        h, w = self.im.shape[:2]
        for m, c in zip(masks, mask_colors):
            if m.shape != (h, w):
                m = cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
            sel = m > 0.5
            blended = self.im[sel] * (1 - alpha) + np.asarray(c, np.float32) * alpha
            self.im[sel] = blended.clip(0, 255).astype(np.uint8)

    def result(self) -> np.ndarray:
        """The annotated BGR image."""
        return self.im


def plot_images(images, targets=None, paths=None, fname="images.jpg", names=None, max_size: int = 1920,
                max_subplots: int = 16) -> np.ndarray | None:
    """Save a mosaic of a batch (B,3,H,W RGB) with its targets [img, cls, x, y, w, h(, conf)]; returns it (BGR)."""
    images = _to_numpy(images)
    if images.ndim == 3:
        images = images[None]
    if not len(images):
        LOGGER.info(f"plot_images: empty batch, {fname} not written")
        return None
    if images.dtype != np.uint8:
        images = images.astype(np.float32)
        if images.max() <= 1.01:  # float batches come normalised to 0-1 from the dataloader/val pipeline
            images = images * 255
        images = images.clip(0, 255).astype(np.uint8)
    targets = np.zeros((0, 6)) if targets is None else _to_numpy(targets).astype(np.float64)
    targets = targets.reshape(-1, targets.shape[-1]) if targets.size else np.zeros((0, 6))
    bs, _, h, w = images.shape
    bs = min(bs, max_subplots)
    ns = math.ceil(bs ** 0.5)  # tiles per side
    mosaic = np.full((ns * h, ns * w, 3), 255, np.uint8)
    for i in range(bs):
        x, y = w * (i % ns), h * (i // ns)
        mosaic[y:y + h, x:x + w] = images[i].transpose(1, 2, 0)
    scale = max_size / ns / max(h, w)
    if scale < 1:
        h, w = math.ceil(scale * h), math.ceil(scale * w)
        mosaic = cv2.resize(mosaic, (ns * w, ns * h))
    mosaic = np.ascontiguousarray(mosaic[..., ::-1])  # batches are RGB, cv2 writes BGR

    is_pred = targets.shape[1] >= 7
    # One decision for the whole batch: a tile whose pixel boxes happen to be tiny must not be taken as normalised.
    normalised = len(targets) == 0 or np.abs(targets[:, 2:6]).max() <= 1.01
    ann = Annotator(mosaic, line_width=max(round((h + w) * ns * 0.001), 1))
    for i in range(bs):
        x, y = w * (i % ns), h * (i // ns)
        ann.rectangle((x, y, x + w, y + h), outline=(255, 255, 255), width=2)
        if paths is not None and i < len(paths):
            ann.text((x + 5, y + 5), Path(paths[i]).name[:40], txt_color=(220, 220, 220))
        ti = targets[targets[:, 0] == i]
        if not len(ti):
            continue
        boxes = xywh2xyxy(ti[:, 2:6].copy())
        if normalised:
            boxes[:, [0, 2]] *= w
            boxes[:, [1, 3]] *= h
        elif scale < 1:
            boxes *= scale
        boxes[:, [0, 2]] += x
        boxes[:, [1, 3]] += y
        for j, box in enumerate(boxes):
            c = int(ti[j, 1])
            if is_pred and ti[j, 6] <= 0.25:  # low-confidence predictions would bury the picture
                continue
            label = f"{_name(names, c)} {ti[j, 6]:.1f}" if is_pred else _name(names, c)
            ann.box_label(box, label, color=colors(c, bgr=True))
    fname = Path(fname)
    fname.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(fname), ann.result())
    return ann.result()


def hist2d(x, y, n: int = 100) -> np.ndarray:
    """Log point density: for each (x, y) the log count of its cell in an n x n histogram (for colouring scatters)."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if not len(x):
        return np.zeros(0)

    def edges(v):
        lo, hi = np.nanmin(v), np.nanmax(v)
        if not np.isfinite(lo) or hi <= lo:  # constant column: np.histogram2d needs increasing edges
            lo, hi = (0.0, 1.0) if not np.isfinite(lo) else (lo - 0.5, hi + 0.5)
        return np.linspace(lo, hi, n)

    hist, xe, ye = np.histogram2d(x, y, (edges(x), edges(y)))
    ix = np.clip(np.digitize(x, xe) - 1, 0, hist.shape[0] - 1)
    iy = np.clip(np.digitize(y, ye) - 1, 0, hist.shape[1] - 1)
    return np.log(np.maximum(hist[ix, iy], 1))


def _density(ax, a, b, xlabel: str, ylabel: str, bins: int = 50) -> None:
    """2-D histogram of two normalised columns on fixed 0-1 axes (fixed range so empty input still plots)."""
    counts = np.histogram2d(a, b, bins=bins, range=[[0, 1], [0, 1]])[0]
    ax.imshow(np.log1p(counts.T), origin="lower", extent=(0, 1, 0, 1), cmap="Blues", aspect="auto")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def plot_labels(labels, names=(), save_dir=Path("")) -> None:
    """Dataset label statistics -> labels.jpg (classes, boxes, x-y, w-h) and labels_correlogram.jpg."""
    labels = _to_numpy(labels).astype(np.float64).reshape(-1, 5)
    save_dir = Path(save_dir)
    LOGGER.info(f"Plotting labels to {save_dir / 'labels.jpg'}... ")
    cls = labels[:, 0].astype(int)
    xywh = labels[:, 1:].T
    keys = ("x", "y", "width", "height")
    nc = max(int(cls.max()) + 1 if len(cls) else 0, len(names))

    fig = Figure(figsize=(8, 8))
    axes = fig.subplots(4, 4)
    for i in range(4):
        for j in range(4):
            ax = axes[i, j]
            if j > i:  # the upper triangle mirrors the lower one
                ax.axis("off")
            elif i == j:
                ax.hist(xywh[i], bins=50, range=(0, 1), color=np.array(colors(0)) / 255)
                ax.set_xlabel(keys[i])
            else:
                _density(ax, xywh[j], xywh[i], keys[j], keys[i])
    fig.tight_layout()
    _save_fig(fig, save_dir / "labels_correlogram.jpg", dpi=150)

    fig = Figure(figsize=(8, 8))
    axes = fig.subplots(2, 2).ravel()
    counts = np.bincount(cls, minlength=nc) if nc else np.zeros(0)
    axes[0].bar(range(nc), counts, color=[np.array(colors(c)) / 255 for c in range(nc)])
    axes[0].set_ylabel("instances")
    if 0 < nc < 30:
        axes[0].set_xticks(range(nc), [_name(names, c) for c in range(nc)], rotation=90, fontsize=8)
    else:
        axes[0].set_xlabel("classes")
    if not len(labels):
        axes[0].set_title("no labels")
    # Box shapes: up to 1000 boxes drawn centred on one canvas show the size/aspect spread at a glance.
    canvas = np.full((1000, 1000, 3), 255, np.uint8)
    if len(labels):
        sizes = labels[:1000, 3:5] * 1000
        corners = np.concatenate([500 - sizes / 2, 500 + sizes / 2], 1).astype(int)
        for c, (x1, y1, x2, y2) in zip(cls[:1000], corners):
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colors(c), 1)
    axes[1].imshow(canvas)
    axes[1].axis("off")
    _density(axes[2], xywh[0], xywh[1], "x", "y")
    _density(axes[3], xywh[2], xywh[3], "width", "height")
    fig.tight_layout()
    _save_fig(fig, save_dir / "labels.jpg", dpi=150)


def _read_csv(file: Path) -> tuple[list[str], np.ndarray]:
    """Read a padded results/evolve csv -> (stripped header keys, float rows); unparsable cells become nan."""
    lines = [ln for ln in Path(file).read_text().splitlines() if ln.strip()]
    if not lines:
        return [], np.zeros((0, 0))
    keys = [k.strip() for k in lines[0].split(",")]
    while keys and not keys[-1]:  # tolerate a trailing comma
        keys.pop()

    def num(s: str) -> float:
        try:
            return float(s)
        except ValueError:
            return float("nan")

    rows = [[num(v) for v in (ln.split(",") + [""] * len(keys))[:len(keys)]] for ln in lines[1:]]
    return keys, np.array(rows, np.float64).reshape(-1, len(keys))


def _gauss_smooth(y: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    """Gaussian smoothing with mirrored edges, so the trend line does not sag toward zero at the ends."""
    if len(y) < 2:
        return y
    r = int(4 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return np.convolve(np.pad(y, r, mode="symmetric"), k / k.sum(), mode="valid")


def _results_layout(keys: list[str]) -> tuple[list[int], int]:
    """Columns to plot and plots per row: train losses + P/R on top, val losses + mAPs below, when they pair up."""
    train = [i for i, k in enumerate(keys) if k.startswith("train/")]
    val = [i for i, k in enumerate(keys) if k.startswith(("val/", "test/"))]
    metrics = [i for i, k in enumerate(keys) if k.startswith("metrics/")]
    pr = [i for i in metrics if "precision" in keys[i] or "recall" in keys[i]]
    top, bottom = train + pr, val + [i for i in metrics if i not in pr]
    if top and len(top) == len(bottom):  # detection gives [1,2,3,4,5 | 8,9,10,6,7], segmentation 2x8
        return top + bottom, len(top)
    cols = [i for i, k in enumerate(keys) if i > 0 and not k.startswith(("x/", "lr"))]
    return cols, max(math.ceil(len(cols) / 2), 1)


def plot_results(file="path/to/results.csv") -> Path | None:
    """Plot every metric/loss column of results.csv against epoch -> results.png in the same folder."""
    file = Path(file)
    if file.is_dir():
        file = file / "results.csv"
    if not file.is_file():
        LOGGER.warning(f"WARNING ⚠️ plot_results: {file} not found, nothing plotted")
        return None
    keys, data = _read_csv(file)
    if not keys:
        LOGGER.warning(f"WARNING ⚠️ plot_results: {file} is empty, nothing plotted")
        return None
    cols, ncol = _results_layout(keys)
    x = data[:, 0] if keys[0] == "epoch" else np.arange(len(data))
    fig = Figure(figsize=(2.6 * ncol, 6))
    axes = fig.subplots(2, ncol, squeeze=False).ravel()
    for ax, j in zip(axes, cols):
        y = data[:, j]
        ax.plot(x, y, marker=".", label=file.stem, linewidth=2, markersize=8)
        ax.plot(x, _gauss_smooth(y), ":", label="smooth", linewidth=2)
        ax.set_title(keys[j], fontsize=12)
    for ax in axes[len(cols):]:
        ax.axis("off")
    if not len(data):
        axes[0].text(0.5, 0.5, "no rows yet", ha="center", transform=axes[0].transAxes)
    elif cols:
        axes[min(1, len(cols) - 1)].legend()
    fig.tight_layout()
    return _save_fig(fig, file.with_name("results.png"), dpi=200)


def _name_list(names) -> list[str]:
    return [str(v) for v in (names.values() if isinstance(names, dict) else names or ())]


def _box_smooth(y: np.ndarray, f: float = 0.05) -> np.ndarray:
    """Box filter over a fraction f of the points, so the 'best' operating point is not a single noisy spike."""
    nf = round(len(y) * f * 2) // 2 + 1  # odd width keeps the output aligned with the input
    return np.convolve(np.pad(y, nf // 2, mode="edge"), np.ones(nf) / nf, mode="valid")


def plot_pr_curve(px, py, ap, save_dir=Path("pr_curve.png"), names=()) -> Path:
    """Precision-recall curve: per-class lines (< 21 classes) and the mean, legend with mAP@0.5."""
    px = _to_numpy(px)
    py = np.stack([_to_numpy(p) for p in py], 1) if len(py) else np.zeros((len(px), 0))  # (points, classes)
    # py only has curves of classes that got predictions, ap has every class with labels: keep their own shapes
    ap = _to_numpy(ap)
    ap = ap.reshape(len(ap), -1) if ap.size else np.zeros((0, 1))
    names = _name_list(names)
    fig = Figure(figsize=(9, 6), tight_layout=True)
    ax = fig.subplots()
    nc = py.shape[1]
    for i in range(nc if 0 < nc < 21 else 0):
        apl = f"{ap[i, 0]:.3f}" if i < len(ap) else ""
        ax.plot(px, py[:, i], linewidth=1, label=f"{names[i] if i < len(names) else i} {apl}")
    if nc:
        m = ap[:, 0].mean() if len(ap) else 0.0
        ax.plot(px, py.mean(1), linewidth=3, color="blue", label=f"all classes {m:.3f} mAP@0.5")
    else:
        ax.set_title("no predictions / labels")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    if nc:
        ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    return _save_fig(fig, Path(save_dir), dpi=200)


def plot_mc_curve(px, py, save_dir=Path("mc_curve.png"), names=(), xlabel="Confidence", ylabel="Metric") -> Path:
    """Metric-vs-confidence curve (F1, P, R): per-class lines (< 21 classes), smoothed mean and its best point."""
    px = _to_numpy(px)
    py = _to_numpy(py).reshape(-1, len(px)) if len(py) else np.zeros((0, len(px)))  # (classes, points)
    names = _name_list(names)
    fig = Figure(figsize=(9, 6), tight_layout=True)
    ax = fig.subplots()
    nc = len(py)
    for i in range(nc if 0 < nc < 21 else 0):
        ax.plot(px, py[i], linewidth=1, label=names[i] if i < len(names) else str(i))
    if nc:
        y = _box_smooth(py.mean(0))
        ax.plot(px, y, linewidth=3, color="blue", label=f"all classes {y.max():.2f} at {px[y.argmax()]:.3f}")
        ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    else:
        ax.set_title("no predictions / labels")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return _save_fig(fig, Path(save_dir), dpi=200)


def save_one_box(xyxy, im: np.ndarray, file=Path("im.jpg"), gain: float = 1.02, pad: int = 10, square: bool = False,
                 BGR: bool = False, save: bool = True) -> np.ndarray:
    """Crop box xyxy (grown by gain and pad pixels, optionally squared) from BGR im; save without overwriting."""
    b = _to_numpy(xyxy).astype(np.float64).ravel()[:4]
    centre, wh = (b[:2] + b[2:]) / 2, b[2:] - b[:2]
    if square:
        wh[:] = wh.max()
    wh = wh * gain + pad
    h, w = im.shape[:2]
    x1, x2 = (int(np.clip(v, 0, w)) for v in (centre[0] - wh[0] / 2, centre[0] + wh[0] / 2))
    y1, y2 = (int(np.clip(v, 0, h)) for v in (centre[1] - wh[1] / 2, centre[1] + wh[1] / 2))
    region = im[y1:y2, x1:x2]
    crop = region if BGR else region[..., ::-1]
    if save:
        if region.size == 0:
            LOGGER.warning(f"WARNING ⚠️ save_one_box: box {b.tolist()} lies outside the image, {file} not written")
        else:
            f = increment_path(Path(file).with_suffix(".jpg"))
            f.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(f), np.ascontiguousarray(region))  # always the BGR region: true colours on disk
    return crop


def feature_visualization(x, module_type: str, stage: int, n: int = 32, save_dir=Path("runs/detect/exp")) -> None:
    """Save the first n feature maps of image 0 after a layer as stage{i}_{type}_features.png (+ .npy of all maps)."""
    if any(k in module_type for k in ("Detect", "Segment", "Classify")) or getattr(x, "ndim", 0) != 4:
        return  # heads return tuples/lists of maps, nothing to show as an image grid
    _, ch, h, w = x.shape
    if h <= 1 or w <= 1:
        return
    maps = _to_numpy(x[0])
    f = Path(save_dir) / f"stage{stage}_{module_type.split('.')[-1]}_features.png"
    n = min(n, ch)
    rows = math.ceil(n / 8)
    fig = Figure(figsize=(8, rows), tight_layout=True)
    axes = fig.subplots(rows, 8, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < n:
            ax.imshow(maps[i])
    LOGGER.info(f"Saving {f}... ({n}/{ch})")
    _save_fig(fig, f, dpi=150)
    np.save(f.with_suffix(".npy"), maps)


def _fitness(keys: list[str], data: np.ndarray) -> np.ndarray:
    """A 'fitness' column if the csv has one, else 0.1*mAP@0.5 + 0.9*mAP@0.5:0.95 found by column name."""
    if "fitness" in keys:
        return data[:, keys.index("fitness")]
    m50 = [i for i, k in enumerate(keys) if k.startswith("metrics/mAP_0.5") and ":" not in k]
    m95 = [i for i, k in enumerate(keys) if k.startswith("metrics/mAP_0.5:0.95")]
    if m50 and m95:
        return 0.1 * data[:, m50[0]] + 0.9 * data[:, m95[0]]
    # upstream's column order (P, R, mAP@0.5, mAP@0.5:0.95 first) under unfamiliar names
    return data[:, :4] @ np.array([0.0, 0.0, 0.1, 0.9])[: min(4, data.shape[1])]


def plot_evolve(evolve_csv="path/to/evolve.csv") -> Path | None:
    """Scatter of fitness against each evolved hyperparameter -> evolve.png, best generation marked."""
    file = Path(evolve_csv)
    if not file.is_file():
        LOGGER.warning(f"WARNING ⚠️ plot_evolve: {file} not found, nothing plotted")
        return None
    keys, data = _read_csv(file)
    if not len(data):
        LOGGER.warning(f"WARNING ⚠️ plot_evolve: {file} has no rows, nothing plotted")
        return None
    # Result columns (fitness, metrics/..., val/...) are not hyperparameters; everything else is.
    hyp_cols = [i for i, k in enumerate(keys) if "/" not in k and k != "fitness"]
    if not hyp_cols:
        LOGGER.warning(f"WARNING ⚠️ plot_evolve: {file} has no hyperparameter columns, nothing plotted")
        return None
    fit = _fitness(keys, data)
    best = int(np.nanargmax(fit)) if np.isfinite(fit).any() else 0
    ncol = math.ceil(len(hyp_cols) ** 0.5)
    nrow = math.ceil(len(hyp_cols) / ncol)
    fig = Figure(figsize=(2.5 * ncol, 2.5 * nrow), tight_layout=True)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for i, (ax, j) in enumerate(zip(axes, hyp_cols)):
        v, k = data[:, j], keys[j]
        ax.scatter(v, fit, c=hist2d(v, fit, 20), cmap="viridis", alpha=0.8, edgecolors="none", s=8)
        ax.plot(v[best], fit[best], "k+", markersize=15)
        ax.set_title(f"{k} = {v[best]:.3g}", fontsize=9)
        if i % ncol:
            ax.set_yticklabels([])
    for ax in axes[len(hyp_cols):]:
        ax.axis("off")
    out = _save_fig(fig, file.with_suffix(".png"), dpi=150)
    LOGGER.info(f"Saved {out}")
    return out
