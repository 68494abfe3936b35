"""Joint loss of the detection + semantic model: YOLOv5's detection loss plus per-pixel cross-entropy.

loss = detection (box + obj + cls, over the images with box labels) + seg x CE(logits, mask) + seg_aux x the same on
each auxiliary head; the gains come from the hyp file (`seg`, `seg_aux`, `ohem_thresh`). Pixels equal to the ignore
index, and so every pixel of an image without a mask, count for nothing: an image labelled for one head trains only
that head. Nothing here reads a value back to the host.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from utils.dist import world_size
from utils.tasks.detect.loss import DetectionLoss

# used when a hyp file predates the semantic head
SEG_DEFAULTS = {"seg": 0.2, "seg_aux": 0.4, "ohem_thresh": 0.0, "seg_lr_mult": 10.0}  # hyp.shapes.yaml says why


def pixel_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, ohem_thresh: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the labelled pixels (0 when there are none), logits resized to the target first.

    ohem_thresh > 0 (e.g. 0.7): online hard example mining as BiSeNet trains, the mean over the pixels whose true
    class gets a probability below the threshold, or over all labelled pixels when none is that hard.
    """
    if logits.shape[-2:] != target.shape[-2:]:  # auxiliary heads may predict at a coarser stride
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    ce = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    mean_all = (ce * valid).sum() / valid.sum().clamp(min=1)
    if ohem_thresh <= 0:
        return mean_all
    hard = valid & (ce > -math.log(ohem_thresh))
    mean_hard = (ce * hard).sum() / hard.sum().clamp(min=1)
    return torch.where(hard.any(), mean_hard, mean_all)


class SemanticDetectionLoss:
    """`loss, items = SemanticDetectionLoss(model, hyp, ignore_index)(preds, batch)`; items: box, obj, cls, seg."""

    def __init__(self, head, hyp: dict, ignore_index: int = 255):
        self.det = DetectionLoss(head, hyp)
        h = {**SEG_DEFAULTS, **hyp}
        self.seg_gain, self.aux_gain, self.ohem = float(h["seg"]), float(h["seg_aux"]), float(h["ohem_thresh"])
        self.ignore_index = int(ignore_index)

    def __call__(self, preds: tuple, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """preds: (detection maps, seg logits (B, C, H, W), auxiliary logits); batch: targets, semantic, has_boxes."""
        det_out, seg, aux = preds
        det_loss, det_items = self.det(det_out, batch["targets"], image_mask=batch["has_boxes"])
        target = batch["semantic"]
        lseg = pixel_ce(seg, target, self.ignore_index, self.ohem) * self.seg_gain
        laux = sum((pixel_ce(a, target, self.ignore_index, self.ohem) for a in aux), seg.new_zeros(()).float())
        # as the detection sums: x batch size, and x world size because DDP averages gradients over ranks
        seg_loss = (lseg + self.aux_gain * laux) * seg.shape[0] * world_size()
        items = torch.cat((det_items, lseg.detach().float()[None]))
        return det_loss + seg_loss, items
