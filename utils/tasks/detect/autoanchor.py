"""AutoAnchor: measure how well the anchors fit a dataset's boxes and, when they fit poorly, evolve better ones."""

from __future__ import annotations

import random

import numpy as np
import torch

from utils.ema import unwrap_model
from utils.log import LOGGER, colorstr

PREFIX = colorstr("AutoAnchor: ")


def check_anchor_order(m) -> bool:
    """Flip the anchor levels of Detect head m if their size order disagrees with the stride order; True if flipped."""
    area = m.anchors.prod(-1).mean(-1).view(-1)  # mean anchor area per level
    da, ds = area[-1] - area[0], m.stride[-1] - m.stride[0]
    if da != 0 and torch.sign(da) != torch.sign(ds):
        LOGGER.info(f"{PREFIX}Reversing anchor order")
        m.anchors[:] = m.anchors.flip(0)
        return True
    return False


def _ratio_metric(k: torch.Tensor, wh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per label and anchor, the worse of the w and h ratios (<=1), and each label's best anchor value."""
    r = wh[:, None] / k[None]
    x = torch.min(r, 1 / r).min(2)[0]  # (n_labels, n_anchors)
    return x, x.max(1)[0]


def _label_wh(dataset, imgsz: int, jitter: bool = False) -> np.ndarray:
    """Label box sizes in pixels after letterboxing every image's long side to imgsz (optionally scaled 0.9-1.1)."""
    shapes = np.asarray(dataset.shapes, dtype=np.float64)
    shapes = imgsz * shapes / shapes.max(1, keepdims=True)
    if jitter:  # augmentation-like scale noise, so the check does not overfit the exact label sizes
        shapes = shapes * np.random.uniform(0.9, 1.1, size=(shapes.shape[0], 1))
    parts = [np.asarray(lb, dtype=np.float64)[:, 3:5] * s for s, lb in zip(shapes, dataset.labels) if len(lb)]
    return np.concatenate(parts, 0) if parts else np.zeros((0, 2))


def check_anchors(dataset, model, thr: float = 4.0, imgsz: int = 640, gen: int = 1000) -> float:
    """Report anchors/target and Best Possible Recall; if BPR <= 0.98, replace the anchors when evolution beats them.

    Returns the BPR of the anchors the model ends up with.
    """
    m = unwrap_model(model).model[-1]  # Detect head
    wh = torch.tensor(_label_wh(dataset, imgsz, jitter=True), dtype=torch.float32)
    if not len(wh):
        LOGGER.warning(f"{PREFIX}no labels found, anchors left unchanged")
        return 0.0
    stride = m.stride.to(m.anchors.device).view(-1, 1, 1)
    anchors_px = (m.anchors.detach().clone() * stride).cpu().view(-1, 2).float()

    def fit(k: torch.Tensor) -> tuple[float, float]:
        x, best = _ratio_metric(k, wh)
        return float((best > 1 / thr).float().mean()), float((x > 1 / thr).float().sum(1).mean())

    bpr, aat = fit(anchors_px)
    s = f"{aat:.2f} anchors/target, {bpr:.3f} Best Possible Recall (BPR). "
    if bpr > 0.98:
        LOGGER.info(f"{PREFIX}{s}Current anchors are a good fit to dataset ✅")
        return bpr
    LOGGER.info(f"{PREFIX}{s}Anchors are a poor fit to dataset ⚠️, attempting to improve...")
    na = m.anchors.numel() // 2
    new = torch.tensor(kmean_anchors(dataset, n=na, img_size=imgsz, thr=thr, gen=gen, verbose=False))
    new_bpr, new_aat = fit(new)
    if new_bpr > bpr:
        with torch.no_grad():
            m.anchors[:] = new.to(m.anchors.device, m.anchors.dtype).view_as(m.anchors)
            check_anchor_order(m)  # in pixels, where the size order is meaningful
            m.anchors /= stride
        LOGGER.info(f"{PREFIX}new anchors: {new_aat:.2f} anchors/target, {new_bpr:.3f} BPR (was {bpr:.3f}). "
                    f"Done ✅ (optional: put these anchors in the model YAML for future runs)")
        return new_bpr
    LOGGER.info(f"{PREFIX}evolved anchors reach only {new_bpr:.3f} BPR (current {bpr:.3f}): keeping the current ones ⚠️")
    return bpr


def kmean_anchors(dataset, n: int = 9, img_size: int = 640, thr: float = 4.0, gen: int = 1000,
                  verbose: bool = True) -> np.ndarray:
    """Anchors (n, 2) in pixels: k-means on whitened label wh, then `gen` generations of kept-if-better mutation."""
    from scipy.cluster.vq import kmeans

    t = 1 / thr
    wh0 = _label_wh(dataset, img_size)
    n_small = int((wh0 < 3.0).any(1).sum())
    if n_small:
        LOGGER.warning(f"{PREFIX}WARNING ⚠️ extremely small objects: {n_small} of {len(wh0)} labels are under 3 pixels")
    wh = wh0[(wh0 >= 2.0).any(1)].astype(np.float32)  # drop boxes under 2 px on both sides

    k = None
    if n <= len(wh):
        LOGGER.info(f"{PREFIX}running k-means for {n} anchors on {len(wh)} points...")
        sd = wh.std(0)
        sd[sd == 0] = 1.0  # all-equal sides cannot be whitened
        centroids = kmeans(wh / sd, n, iter=30)[0] * sd
        if len(centroids) == n:  # scipy may return fewer centroids than asked for
            k = centroids
    if k is None:
        LOGGER.warning(f"{PREFIX}WARNING ⚠️ k-means failed (too few or identical boxes), starting from random anchors")
        k = np.sort(np.random.rand(n * 2)).reshape(n, 2) * img_size

    wh_t, wh0_t = torch.tensor(wh, dtype=torch.float32), torch.tensor(wh0, dtype=torch.float32)

    def fitness(kk: np.ndarray) -> float:
        _, best = _ratio_metric(torch.tensor(kk, dtype=torch.float32), wh_t)
        return float((best * (best > t).float()).mean())

    k = _sorted(k)
    f, sh, mp, sigma = fitness(k), k.shape, 0.9, 0.1  # fitness, shape, mutation probability, sigma
    for _ in range(gen):
        v = np.ones(sh)
        while (v == 1).all():  # insist on a change
            v = ((np.random.random(sh) < mp) * random.random() * np.random.randn(*sh) * sigma + 1).clip(0.3, 3.0)
        kg = (k * v).clip(min=2.0)
        fg = fitness(kg)
        if fg > f:
            f, k = fg, kg.copy()
    k = _sorted(k)
    x, best = _ratio_metric(torch.tensor(k, dtype=torch.float32), wh0_t)
    bpr, aat = float((best > t).float().mean()), float((x > t).float().sum(1).mean())
    msg = (f"{PREFIX}thr={t:.2f}: {bpr:.4f} best possible recall, {aat:.2f} anchors past thr; n={n}, "
           f"img_size={img_size}, fitness={f:.4f}")
    if verbose:
        msg += "\n" + ", ".join(f"{int(round(a))},{int(round(b))}" for a, b in k)
    LOGGER.info(msg)
    return k.astype(np.float32)


def _sorted(k: np.ndarray) -> np.ndarray:
    """Anchors ordered small to large by area."""
    return k[np.argsort(k.prod(1))]
