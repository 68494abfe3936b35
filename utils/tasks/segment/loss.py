"""YOLOv5 instance-segmentation loss: the detection loss plus a prototype-mask BCE, one batched pass per level."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.boxes import xywh2xyxy
from utils.dist import world_size
from utils.tasks.detect.loss import DetectionLoss
from utils.tasks.segment.masks import crop_mask as box_crop


def rank_in_image(img: torch.Tensor, bs: int) -> torch.Tensor:
    """1-based position of each target among the targets of its image, in `targets` order (the overlap-mask id)."""
    onehot = F.one_hot(img, bs)  # (nt, bs)
    return onehot.cumsum(0).gather(1, img[:, None]).squeeze(1)


def mask_loss(pmask: torch.Tensor, proto: torch.Tensor, b: torch.Tensor, gt: torch.Tensor, xyxy: torch.Tensor,
              area: torch.Tensor, bs: int) -> torch.Tensor:
    """Sum over images of the mean (over that image's matches) of box-cropped mask BCE divided by box area."""
    nm, mh, mw = proto.shape[1:]
    # One batched matmul replaces upstream's per-image loop: coefficients are laid out (image, slot, nm), padded to
    # the busiest image, so no per-match copy of the prototypes is ever made.
    slot = rank_in_image(b, bs) - 1
    n_slots = int(torch.bincount(b, minlength=bs).max())  # one sync; the caller's filtering already needed one
    coef = pmask.new_zeros(bs, n_slots, nm).index_put((b, slot), pmask)
    pred = torch.bmm(coef, proto.reshape(bs, nm, mh * mw))[b, slot].view(-1, mh, mw)
    bce = F.binary_cross_entropy_with_logits(pred, gt, reduction="none")
    per_match = box_crop(bce, xyxy).mean(dim=(1, 2)) / area
    count = torch.bincount(b, minlength=bs).clamp(min=1).to(per_match.dtype)
    return (per_match / count[b]).sum()


class SegmentationLoss(DetectionLoss):
    """`loss, items = SegmentationLoss(head, hyp)((p, proto), targets, masks)`; items (4,) = [box, seg, obj, cls]."""

    def __init__(self, head, hyp: dict, overlap: bool = True, autobalance: bool = False):
        super().__init__(head, hyp, autobalance)
        self.nm = int(getattr(self.head, "nm", 32))
        self.overlap = overlap

    def __call__(self, preds, targets: torch.Tensor, masks: torch.Tensor):
        """masks: (bs, H, W) ids 1..k per image when overlap, else (nt, H, W) binary, one per target."""
        p, proto = preds
        bs, _, mh, mw = proto.shape
        matches = self.match(p, targets)
        terms = self.level_terms(p, matches)
        masks = masks.to(proto.device).float()
        if tuple(masks.shape[-2:]) != (mh, mw):
            masks = F.interpolate(masks[None], (mh, mw), mode="nearest")[0]
        if self.overlap:
            rank = rank_in_image(targets[:, 0].long().to(proto.device), bs).to(masks.dtype)
        lseg = proto.new_zeros(()).float()
        nc = self.nc
        for (_, _, _, ps), m in zip(terms, matches):
            # Masks are (n, h, w) per match, too large to keep for invalid candidates: keep only the valid ones.
            v = m.valid.nonzero().squeeze(1)
            b, tidx = m.b[v], m.tidx[v]
            xywhn = targets[tidx, 2:6].to(device=proto.device, dtype=torch.float32)
            if self.overlap:
                gt = (masks[b] == rank[tidx][:, None, None]).float()
            else:
                gt = masks[tidx]
            x, y, w, h = xywhn.unbind(1)
            xyxy = xywh2xyxy(torch.stack((x * mw, y * mh, w * mw, h * mh), 1))  # box in prototype pixels
            pmask = ps[v, 5 + nc:5 + nc + self.nm].float()
            lseg = lseg + mask_loss(pmask, proto.float(), b, gt, xyxy, w * h, bs)
        lbox = sum(t[0] for t in terms) * self.hyp["box"]
        lobj = sum(t[1] for t in terms) * self.hyp["obj"]
        lcls = sum(t[2] for t in terms) * self.hyp["cls"]
        lseg = lseg * self.hyp["box"] * self.hyp.get("mask", 1.0) / bs  # mask: 1.0 is upstream's weighting
        items = torch.stack((lbox, lseg, lobj, lcls)).float()
        return (items.sum() * bs * world_size()).reshape(1), items.detach()  # a global-batch sum, as detection
