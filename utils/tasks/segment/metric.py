"""Instance-segmentation scoring: box AP and mask AP side by side, as YOLOv5 v7.0's segment/val.py reports them."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from utils.metrics import ap_per_class, match_predictions
from utils.tasks.detect.metric import DetMetric
from utils.tasks.segment.masks import gt_instance_masks, mask_iou, masks_to_original

BOX = ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP_0.5(B)", "metrics/mAP_0.5:0.95(B)")
MASK = ("metrics/precision(M)", "metrics/recall(M)", "metrics/mAP_0.5(M)", "metrics/mAP_0.5:0.95(M)")


def mask_ious(gt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """IoU (labels, predictions) of binary masks; labels are resized to the predictions' resolution first."""
    if gt.shape[1:] != pred.shape[1:]:
        gt = F.interpolate(gt[None].float(), pred.shape[1:], mode="bilinear", align_corners=False)[0].gt_(0.5)
    return mask_iou(gt.reshape(gt.shape[0], -1), pred.reshape(pred.shape[0], -1).float())


class SegMetric(DetMetric):
    """Accumulates (mask correct, box correct, conf, cls, target cls) per image; box and mask AP computed apart."""

    names = BOX + MASK
    header = ("%22s" + "%11s" * 10) % ("Class", "Images", "Instances", "Box(P", "R", "mAP50", "mAP50-95)",
                                       "Mask(P", "R", "mAP50", "mAP50-95)")
    post_name = "NMS+masks"

    def __init__(self, *args, overlap: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.overlap = overlap

    n_correct = 2  # mask hits, then box hits: upstream's order in its stats rows

    def _unpack(self, item) -> tuple[torch.Tensor, torch.Tensor]:
        """(detections (n, 6) xyxy/conf/cls, masks (n, h, w)): the first two fields of a SegPrediction."""
        return item[0], item[1]

    def _match(self, predn: torch.Tensor, labelsn: torch.Tensor, iouv: torch.Tensor, extra: torch.Tensor,
               batch: dict, si: int, sel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask hits, box hits): masks matched by mask IoU against the image's ground-truth instance masks."""
        masks, overlap = batch["masks"], batch.get("overlap", self.overlap)
        gt = gt_instance_masks(masks[[si]] if overlap else masks[sel.to(masks.device)], len(labelsn), overlap)
        hits_mask = match_predictions(predn, labelsn, iouv, iou=mask_ious(gt, extra))
        return hits_mask, match_predictions(predn, labelsn, iouv)

    def _json_fields(self, extra: torch.Tensor, img_shape: tuple, shape0: tuple, ratio_pad) -> list[dict]:
        """Each predicted mask as COCO RLE in original-image pixels (upstream's segment/val.py --save-json)."""
        from utils.coco import mask_to_rle

        shape0 = tuple(int(x) for x in shape0)
        masks = masks_to_original(extra.float(), tuple(img_shape), shape0, ratio_pad).gt(0.5).cpu().numpy()
        return [{"segmentation": mask_to_rle(m)} for m in masks]

    def compute(self) -> dict[str, float]:
        """Box P, R, mAP50, mAP50-95, then the same for masks (all zeros when no mask matched)."""
        if self._result is not None:
            return self._result["figures"]
        stats = [torch.cat(x, 0).cpu().numpy() for x in zip(*self.stats)] if self.stats else []
        nt = np.bincount(stats[4].astype(int), minlength=self.nc) if stats else np.zeros(self.nc, int)
        rows = {int(c): (0.0,) * 8 for c in np.flatnonzero(nt)}
        if stats and stats[0].any():  # upstream's gate is the mask hits
            plot = self.plots and not self.training
            parts = {}
            for k, prefix in ((1, "Box"), (0, "Mask")):
                _, _, p, r, _, ap, cls = ap_per_class(stats[k], *stats[2:], plot=plot, save_dir=self.save_dir,
                                                      names=self.class_names, prefix=prefix)
                parts[prefix] = {int(c): (p[i], r[i], ap[i, 0], ap[i].mean()) for i, c in enumerate(cls)}
            rows.update({c: (*parts["Box"][c], *parts["Mask"][c]) for c in parts["Box"]})
        per_class = np.array(list(rows.values()), dtype=np.float64).reshape(-1, 8)
        figures = dict(zip(self.names, per_class.mean(0).tolist() if len(per_class) else [0.0] * 8))
        # per-class mAP50-95 of boxes plus masks, as upstream's image weights read it
        self.maps = np.full(self.nc, figures[BOX[3]] + figures[MASK[3]])
        for c, row in rows.items():
            self.maps[c] = row[3] + row[7]
        self._result = {"nt": nt, "rows": rows, "figures": figures}
        return figures

    def summary(self, verbose: bool = False) -> str:
        """The 'all' row with box and mask figures, plus per-class rows (verbose, or few classes outside training)."""
        figures = self.compute()
        res = self._result
        pf = "%22s" + "%11i" * 2 + "%11.3g" * 8
        lines = [self.header, pf % ("all", self.seen, res["nt"].sum(), *figures.values())]
        if (verbose or (self.nc < 50 and not self.training)) and self.nc > 1:
            for c, row in sorted(res["rows"].items()):
                lines.append(pf % (self.class_names.get(c, str(c)), self.seen, res["nt"][c], *row))
        return "\n".join(lines)
