"""Semantic-segmentation scoring: one confusion matrix over the whole split, then IoU per class, mIoU and accuracy.

The matrix lives on the predictions' device and is only read back in compute(), so validation never waits on the
host per batch. IoU follows the Cityscapes evaluation (cityscapesscripts' evalPixelLevelSemanticLabeling): ignored
ground-truth pixels count for nothing, IoU = TP / (TP + FP + FN) over the whole split, and the mean is taken over the
classes whose IoU is defined (a class absent from both the labels and the predictions has no IoU and is left out).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist

from utils.data.masks import read_mask
from utils.data.semantic_spec import SemanticSpec
from utils.log import LOGGER
from utils.tasks.detect.metric import DetMetric
from utils.tasks.semantic.rescale import logits_to_label_map


def _histogram(idx: torch.Tensor, n: int, scatter: bool | None = None) -> torch.Tensor:
    """Counts of the values 0..n-1 in a flat int64 tensor, without a device-to-host sync on CUDA."""
    if not (idx.device.type != "cpu" if scatter is None else scatter):
        return torch.bincount(idx, minlength=n)[:n]
    # torch.bincount sizes its output from the data's max, which reads it back to the host; a scatter of ones
    # into a fixed-size buffer does not.
    return torch.zeros(n, dtype=torch.int64, device=idx.device).index_add_(0, idx, torch.ones_like(idx))


class SemanticConfusion:
    """Pixel confusion matrix (nc, nc) indexed [ground truth, prediction]; ignore_index pixels are skipped."""

    names = ("metrics/mIoU", "metrics/pixel_acc", "metrics/mean_acc")
    header = ("%22s" + "%11s" * 3) % ("Class", "Pixels", "Acc", "IoU")

    def __init__(self, nc: int, ignore_index: int = 255, device: torch.device | str | None = None):
        self.nc, self.ignore_index = int(nc), int(ignore_index)
        self.matrix = torch.zeros(self.nc, self.nc, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add predicted class ids and label ids of equal shape ((H, W) or (B, H, W), any integer dtype).

        Label values outside 0..nc-1 (ignore_index included) are skipped; predictions are argmax ids, 0..nc-1.
        """
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(target.shape)} shapes differ: "
                             f"map predictions back to the label's resolution first")
        if self.matrix.device != pred.device:
            self.matrix = self.matrix.to(pred.device)
        n = self.nc
        p = pred.reshape(-1)
        t = target.reshape(-1).to(p.device)
        valid = (t < n) & (p < n)  # compared in the given dtypes: no widened copies
        if t.is_signed():
            valid &= t >= 0
        if p.is_signed():
            valid &= p >= 0
        # Skipped pixels go to an extra bin past the matrix instead of being filtered out: boolean indexing would
        # need the count of kept pixels on the host.
        idx = torch.where(valid, t.long() * n + p.long(), n * n)
        self.matrix += _histogram(idx, n * n + 1)[: n * n].view(n, n)

    def reset(self) -> None:
        """Zero the matrix for a new evaluation."""
        self.matrix.zero_()

    def reduce(self) -> None:
        """Sum the matrices of all DDP ranks onto every rank (no-op outside a process group)."""
        if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
            m = self.matrix
            if tdist.get_backend() == "nccl" and m.device.type != "cuda":
                m = m.cuda()
            tdist.all_reduce(m, op=tdist.ReduceOp.SUM)
            self.matrix = m.to(self.matrix.device)

    def iou(self) -> np.ndarray:
        """(nc,) IoU per class, NaN where a class is in neither labels nor predictions."""
        m = self.matrix.double().cpu().numpy()
        tp = np.diag(m)
        denom = m.sum(0) + m.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, tp / denom, np.nan)

    def compute(self) -> dict[str, float]:
        """mIoU (mean over classes with a defined IoU), pixel accuracy and mean class accuracy; 0 when empty."""
        m = self.matrix.double().cpu().numpy()
        tp, gt = np.diag(m), m.sum(1)
        iou = self.iou()
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(gt > 0, tp / gt, np.nan)
        total = m.sum()

        def mean(x: np.ndarray) -> float:
            return float(np.nanmean(x)) if np.isfinite(x).any() else 0.0

        return dict(zip(self.names, (mean(iou), float(tp.sum() / total) if total else 0.0, mean(acc))))

    def summary(self, class_names: dict[int, str] | None = None, verbose: bool = True) -> str:
        """Table of labelled pixels, accuracy and IoU per class; the 'all' row has pixel accuracy and mIoU."""
        figures = self.compute()
        m = self.matrix.cpu().numpy()
        gt = m.sum(1)
        iou = self.iou()
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.diag(m) / gt
        pf = "%22s" + "%11i" + "%11.3g" * 2
        lines = [self.header, pf % ("all", gt.sum(), figures[self.names[1]], figures[self.names[0]])]
        if gt.sum() == 0:
            LOGGER.warning("WARNING ⚠️ no labelled pixels in the evaluated set, cannot compute mIoU")
        if verbose:
            names = class_names or {}
            for c in range(self.nc):
                if np.isnan(iou[c]):
                    continue  # neither labelled nor predicted: no figure, and not in the mean
                lines.append(pf % (names.get(c, str(c)), gt[c], 0.0 if gt[c] == 0 else acc[c], iou[c]))
        return "\n".join(lines)


class SemanticDetectionMetric(DetMetric):
    """Box AP as detection scores it, plus a confusion matrix of the class maps at each label's full resolution.

    Predictions are SemanticPrediction(det, logits at input size); each image's logits are mapped back through its
    letterbox and compared with its mask file read at full size (images without a mask add no pixels).
    """

    names = DetMetric.names + ("metrics/mIoU", "metrics/pixel_acc")
    post_name = "NMS+seg"

    def __init__(self, names: dict[int, str], save_dir: Path = Path("."), plots: bool = False,
                 training: bool = False, spec: SemanticSpec | None = None, **kw):
        super().__init__(names, save_dir, plots=plots, training=training, **kw)
        if spec is None:
            raise ValueError("SemanticDetectionMetric needs the data's SemanticSpec (its masks and classes)")
        self.spec = spec
        self.pixels = SemanticConfusion(spec.nc, spec.ignore_index)

    def _unpack(self, item) -> tuple[torch.Tensor, None]:
        return item[0], None

    def update(self, preds: list, batch: dict) -> None:
        """Boxes as detection; class maps against the full-resolution masks."""
        super().update(preds, batch)
        input_hw = tuple(batch["img"].shape[2:])
        for i, has in enumerate(batch["has_semantic"].tolist()):  # one host read per batch, not per image
            if not has:
                continue
            shape0, ratio_pad = batch["shapes"][i][0], batch["shapes"][i][1]
            label = torch.from_numpy(self.spec.remap(read_mask(self.spec.mask_path(batch["paths"][i]),
                                                               tuple(shape0))).astype(np.int64))
            pred = logits_to_label_map(preds[i][1], input_hw, shape0, ratio_pad)
            self.pixels.update(pred, label.to(pred.device))

    def reduce(self) -> None:
        super().reduce()
        self.pixels.reduce()

    def compute(self) -> dict[str, float]:
        seg = self.pixels.compute()
        return {**super().compute(), **{k: seg[k] for k in self.names[4:]}}

    def summary(self, verbose: bool = False) -> str:
        """Detection's table, then the class table (every class outside training; 'all' = pixel acc and mIoU)."""
        return super().summary(verbose) + "\n" + self.pixels.summary(self.spec.names, verbose=verbose or
                                                                      not self.training)
