"""Detection metrics: prediction/label matching, per-class AP and the confusion matrix.

Numbers follow upstream YOLOv5 v7.0 (101-point interpolated AP, P/R/F1 read at the confidence that maximises
the smoothed mean F1), so mAPs are comparable with upstream's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from utils.boxes import box_iou
from utils.log import LOGGER


def smooth(y: np.ndarray, f: float = 0.05) -> np.ndarray:
    """Box-filter y with an odd window of about f*len(y) samples, padding the ends with the edge values."""
    nf = round(len(y) * f * 2) // 2
    nf += 1 - nf % 2  # upstream adds 1 unconditionally; identical for its 1000-point curves, odd for any length
    pad = np.ones(nf // 2)
    yp = np.concatenate((pad * y[0], y, pad * y[-1]))
    return np.convolve(yp, np.ones(nf) / nf, mode="valid")


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AP of one P/R curve by 101-point interpolation (COCO style) -> (ap, envelope precision, recall)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))  # precision envelope
    x = np.linspace(0, 1, 101)
    # np.interp returns the final sentinel 0 at recall 1, so even a perfect detector scores 0.995: kept for parity
    ap = np.trapezoid(np.interp(x, mrec, mpre), x)
    return float(ap), mpre, mrec


def _plots():
    """The curve plotters of utils.plots, or None when that module is not available."""
    try:
        from utils.plots import plot_mc_curve, plot_pr_curve
    except ImportError as e:
        LOGGER.warning(f"WARNING ⚠️ curve plots skipped: utils.plots unavailable ({e})")
        return None
    return plot_pr_curve, plot_mc_curve


def ap_per_class(tp, conf, pred_cls, target_cls, plot: bool = False, save_dir=Path("."), names=(),
                 eps: float = 1e-16, prefix: str = ""):
    """Per-class AP at each IoU threshold -> (tp, fp, p, r, f1, ap (nc, nthr), unique_classes) over labelled classes.

    tp (n, nthr) bool, conf (n,), pred_cls (n,), target_cls (m,): numpy arrays (tensors are converted).
    """
    tp, conf, pred_cls, target_cls = (x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
                                      for x in (tp, conf, pred_cls, target_cls))
    tp = tp.reshape(len(conf), -1)
    i = np.argsort(-conf)
    tp, conf, pred_cls = tp[i], conf[i], pred_cls[i]

    unique_classes, nt = np.unique(target_cls, return_counts=True)
    nc = unique_classes.shape[0]
    px, py = np.linspace(0, 1, 1000), []  # py: precision at px recall, for the PR plot
    ap, p, r = np.zeros((nc, tp.shape[1])), np.zeros((nc, 1000)), np.zeros((nc, 1000))
    for ci, c in enumerate(unique_classes):
        i = pred_cls == c
        n_l = nt[ci]
        if not i.any() or n_l == 0:
            continue
        tpc = tp[i].cumsum(0)
        fpc = (1 - tp[i]).cumsum(0)
        recall = tpc / (n_l + eps)
        precision = tpc / (tpc + fpc)
        # conf decreases along the detections, so interpolate against -conf to get an increasing axis
        r[ci] = np.interp(-px, -conf[i], recall[:, 0], left=0)
        p[ci] = np.interp(-px, -conf[i], precision[:, 0], left=1)
        for j in range(tp.shape[1]):
            ap[ci, j], mpre, mrec = compute_ap(recall[:, j], precision[:, j])
            if plot and j == 0:
                py.append(np.interp(px, mrec, mpre))

    f1 = 2 * p * r / (p + r + eps)
    items = names.items() if isinstance(names, dict) else enumerate(names)
    names = dict(enumerate(v for k, v in items if k in unique_classes))  # only classes with data
    if plot and (plotters := _plots()) is not None:
        plot_pr_curve, plot_mc_curve = plotters
        save_dir = Path(save_dir)
        if py:
            plot_pr_curve(px, py, ap, save_dir / f"{prefix}PR_curve.png", names)
        plot_mc_curve(px, f1, save_dir / f"{prefix}F1_curve.png", names, "Confidence", "F1")
        plot_mc_curve(px, p, save_dir / f"{prefix}P_curve.png", names, "Confidence", "Precision")
        plot_mc_curve(px, r, save_dir / f"{prefix}R_curve.png", names, "Confidence", "Recall")

    i = smooth(f1.mean(0), 0.1).argmax()  # confidence index of the best smoothed mean F1
    p, r, f1 = p[:, i], r[:, i], f1[:, i]
    tp = (r * nt).round()
    fp = (tp / (p + eps) - tp).round()
    return tp, fp, p, r, f1, ap, unique_classes.astype(int)


def ap_summary(p: np.ndarray, r: np.ndarray, ap: np.ndarray) -> tuple[float, float, float, float]:
    """Mean P, mean R, mAP@.5 and mAP@.5:.95 from ap_per_class outputs (zeros when there are no classes)."""
    if not len(ap):
        return 0.0, 0.0, 0.0, 0.0
    return float(p.mean()), float(r.mean()), float(ap[:, 0].mean()), float(ap.mean(1).mean())


def _first_per_key(key: torch.Tensor) -> torch.Tensor:
    """Mask of the first occurrence of each value of key (an int64 vector), in the current order."""
    pos = torch.arange(key.shape[0], device=key.device)
    first = torch.full((int(key.max()) + 1,), key.shape[0], device=key.device, dtype=torch.long)
    first.scatter_reduce_(0, key, pos, reduce="amin")
    return first[key] == pos


def match_predictions(detections: torch.Tensor, labels: torch.Tensor, iouv: torch.Tensor,
                      iou: torch.Tensor | None = None) -> torch.Tensor:
    """Correct-prediction matrix (n, len(iouv)) for detections (n, 6) xyxy/conf/cls vs labels (m, 5) cls/xyxy.

    `iou` (m, n) replaces the box IoU, e.g. with mask IoU for instance segmentation.
    """
    correct = torch.zeros((detections.shape[0], iouv.shape[0]), dtype=torch.bool, device=iouv.device)
    if not detections.shape[0] or not labels.shape[0]:
        return correct
    iou = box_iou(labels[:, 1:], detections[:, :4]) if iou is None else iou.to(iouv.device)  # (m, n)
    same_class = labels[:, 0:1] == detections[:, 5]
    for k, thr in enumerate(iouv.tolist()):
        li, di = torch.nonzero((iou >= thr) & same_class, as_tuple=True)  # host sync
        if not li.shape[0]:
            continue
        # Upstream order: pairs by IoU descending (ties: later pair first), best pair per detection, then
        # per label the surviving pair of the lowest detection index (its list is ordered by detection there).
        o = iou[li, di].sort(stable=True).indices.flip(0)
        li, di = li[o], di[o]
        m = _first_per_key(di)
        li, di = li[m], di[m]
        o = di.sort(stable=True).indices
        li, di = li[o], di[o]
        di = di[_first_per_key(li)]
        correct[di.to(iouv.device), k] = True
    return correct


class ConfusionMatrix:
    """Detection confusion matrix (nc+1, nc+1) indexed [predicted, true]; index nc is background."""

    def __init__(self, nc: int, conf: float = 0.25, iou_thres: float = 0.45):
        self.matrix = np.zeros((nc + 1, nc + 1))
        self.nc = nc
        self.conf = conf
        self.iou_thres = iou_thres

    def process_batch(self, detections: torch.Tensor | None, labels: torch.Tensor) -> None:
        """Add one image: detections (n, 6) xyxy/conf/cls or None, labels (m, 5) cls/xyxy (or (m,) classes if None)."""
        if detections is None:  # no predictions: every label is a missed object
            gt = labels[:, 0] if labels.ndim == 2 else labels
            for gc in gt.int().tolist():
                self.matrix[self.nc, gc] += 1
            return
        detections = detections[detections[:, 4] > self.conf]
        gt_classes = labels[:, 0].int().tolist()
        det_classes = detections[:, 5].int().tolist()
        matches = np.zeros((0, 3))
        if labels.shape[0] and detections.shape[0]:
            iou = box_iou(labels[:, 1:], detections[:, :4])
            li, di = torch.nonzero(iou > self.iou_thres, as_tuple=True)
            if li.shape[0]:
                matches = torch.stack((li.double(), di.double(), iou[li, di].double()), 1).cpu().numpy()
                # one match per detection and per label, highest IoU first
                matches = matches[matches[:, 2].argsort(kind="stable")[::-1]]
                matches = matches[np.unique(matches[:, 1], return_index=True)[1]]
                matches = matches[matches[:, 2].argsort(kind="stable")[::-1]]
                matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
        m0, m1 = matches[:, 0].astype(int), matches[:, 1].astype(int)
        for i, gc in enumerate(gt_classes):
            j = m0 == i
            if j.sum() == 1:
                self.matrix[det_classes[m1[j][0]], gc] += 1  # matched: correct or confused class
            else:
                self.matrix[self.nc, gc] += 1  # missed: background predicted
        # Upstream only counts these when some match exists; every unmatched detection is a background FP.
        for i, dc in enumerate(det_classes):
            if not (m1 == i).any():
                self.matrix[dc, self.nc] += 1

    def tp_fp(self) -> tuple[np.ndarray, np.ndarray]:
        """True and false positives per class (background excluded)."""
        tp = self.matrix.diagonal()
        fp = self.matrix.sum(1) - tp
        return tp[:-1], fp[:-1]

    def plot(self, normalize: bool = True, save_dir="", names=()) -> Path | None:
        """Save confusion_matrix.png (columns normalised to sum 1 when normalize) into save_dir."""
        from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

        array = self.matrix / ((self.matrix.sum(0).reshape(1, -1) + 1e-9) if normalize else 1)
        array[array < 0.005] = np.nan  # leave near-zero cells blank
        names = list(names.values()) if isinstance(names, dict) else list(names)
        n = self.nc + 1
        ticks = names + ["background"] if 0 < len(names) < 99 and len(names) == self.nc else None
        fig = Figure(figsize=(12, 9), layout="tight")
        ax = fig.subplots()
        im = ax.imshow(array, cmap="Blues", vmin=0.0, vmax=np.nanmax(array) if np.isfinite(array).any() else 1.0)
        fig.colorbar(im, ax=ax)
        if self.nc < 30:
            for (y, x), v in np.ndenumerate(array):
                if np.isfinite(v):
                    ax.text(x, y, f"{v:.2f}" if normalize else f"{v:.0f}", ha="center", va="center", fontsize=8,
                            color="white" if v > 0.5 * np.nanmax(array) else "black")
        if ticks is not None:
            ax.set_xticks(range(n), ticks, rotation=90, fontsize=8)
            ax.set_yticks(range(n), ticks, fontsize=8)
        ax.set_xlabel("True")
        ax.set_ylabel("Predicted")
        ax.set_title("Confusion Matrix")
        file = Path(save_dir) / "confusion_matrix.png"
        fig.savefig(file, dpi=250)
        return file

    def print(self) -> None:
        """Log the raw matrix, one predicted-class row per line."""
        for row in self.matrix:
            LOGGER.info(" ".join(map(str, row)))
