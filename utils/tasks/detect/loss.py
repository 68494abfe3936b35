"""YOLOv5 detection loss (box CIoU + objectness + class BCE), computed without host synchronisation.

Target assignment keeps every candidate (5 cell offsets x anchors x targets) in fixed-size tensors with a
`valid` mask instead of filtering with boolean indexing: the shapes then depend only on the number of targets,
nothing waits for the GPU, and torch.compile sees no data-dependent shapes. Sums are normalised by the
on-device count of valid candidates, which is the same value upstream's filtered means produce.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from utils.boxes import bbox_iou
from utils.dist import world_size

# Cell offsets in the order upstream stacks them: own cell, left, up, right, down. The order matters because it
# decides which candidate writes last when several land on the same objectness cell.
_OFFSETS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))


class Match(NamedTuple):
    """Dense target candidates of one pyramid level, all of length N = 5 * na * nt (offset-major, then anchor)."""

    b: torch.Tensor  # image index (N,) long
    a: torch.Tensor  # anchor index (N,) long
    gj: torch.Tensor  # grid row (N,) long, clamped into the grid
    gi: torch.Tensor  # grid column (N,) long, clamped into the grid
    tbox: torch.Tensor  # (N, 4) target xy relative to the cell corner, wh in grid units
    anchors: torch.Tensor  # (N, 2) anchor wh in grid units
    tcls: torch.Tensor  # (N,) long class
    tidx: torch.Tensor  # (N,) long row of the target in `targets` (segmentation needs it)
    valid: torch.Tensor  # (N,) bool: anchor ratio test passed and the offset cell is used


def smooth_bce(eps: float = 0.0) -> tuple[float, float]:
    """Positive and negative BCE targets under label smoothing eps."""
    return 1.0 - 0.5 * eps, 0.5 * eps


def bce_terms(logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None,
              gamma: float = 0.0, alpha: float = 0.25) -> torch.Tensor:
    """Element-wise BCE-with-logits, focal-modulated when gamma > 0 (reduce it yourself)."""
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
    if gamma > 0:
        p = logits.sigmoid()
        p_t = target * p + (1 - target) * (1 - p)  # probability given to the true label
        alpha_t = target * alpha + (1 - target) * (1 - alpha)
        loss = loss * alpha_t * (1.0 - p_t) ** gamma
    return loss


def masked_mean(x: torch.Tensor, valid: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Mean of x over rows where valid (count = number of valid elements), 0 when there are none."""
    mask = valid.view(valid.shape + (1,) * (x.dim() - valid.dim()))
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum() / count.clamp(min=1)


def last_write_mask(lin: torch.Tensor, valid: torch.Tensor, numel: int) -> torch.Tensor:
    """True for the last valid entry of each duplicated flat index (the one a sequential index_put keeps)."""
    order = torch.arange(lin.shape[0], device=lin.device)
    prio = torch.where(valid, order, torch.full_like(order, -1))
    winner = torch.full((numel,), -1, dtype=order.dtype, device=lin.device).scatter_reduce_(0, lin, prio, "amax")
    return valid & (winner.gather(0, lin) == order)


def match_level(targets: torch.Tensor, anchors: torch.Tensor, nx: int, ny: int, anchor_t: float,
                offsets: torch.Tensor, g: float = 0.5) -> Match:
    """Assign targets (nt, 6) [img, cls, x, y, w, h] normalised to anchors (na, 2) and cells of an (ny, nx) grid."""
    na, nt = anchors.shape[0], targets.shape[0]
    gxy = torch.stack((targets[:, 2] * nx, targets[:, 3] * ny), 1)  # (nt, 2) grid units
    gwh = torch.stack((targets[:, 4] * nx, targets[:, 5] * ny), 1)
    r = gwh[None] / anchors[:, None]  # (na, nt, 2)
    ratio_ok = torch.max(r, 1 / r).amax(2) < anchor_t  # (na, nt)

    # Neighbour cells: a centre in the left/top half of its cell also uses the cell to the left/top, etc.
    gxi = torch.stack((nx - gxy[:, 0], ny - gxy[:, 1]), 1)
    jk = (gxy % 1 < g) & (gxy > 1)
    lm = (gxi % 1 < g) & (gxi > 1)
    use = torch.stack((torch.ones_like(jk[:, 0]), jk[:, 0], jk[:, 1], lm[:, 0], lm[:, 1]))  # (5, nt)
    valid = (use[:, None, :] & ratio_ok[None]).reshape(-1)  # (5*na*nt,)

    gxy5 = gxy[None] - offsets[:, None] * g  # (5, nt, 2)
    gij = gxy5.long()
    gi = gij[..., 0].clamp(0, nx - 1)
    gj = gij[..., 1].clamp(0, ny - 1)
    txy = gxy[None] - torch.stack((gi, gj), -1)  # relative to the (clamped) cell corner, as upstream
    tbox = torch.cat((txy, gwh[None].expand(5, nt, 2)), -1)  # (5, nt, 4)

    def per_anchor(x: torch.Tensor) -> torch.Tensor:  # (5, nt, ...) -> (5*na*nt, ...)
        return x[:, None].expand(5, na, *x.shape[1:]).reshape(5 * na * nt, *x.shape[2:])

    tidx = torch.arange(nt, device=targets.device)
    a = torch.arange(na, device=targets.device)[None, :, None].expand(5, na, nt).reshape(-1)
    tcls = targets[:, 1].long()
    b = targets[:, 0].long()
    return Match(
        b=per_anchor(b[None].expand(5, nt)), a=a, gj=per_anchor(gj), gi=per_anchor(gi), tbox=per_anchor(tbox),
        anchors=anchors[a], tcls=per_anchor(tcls[None].expand(5, nt)), tidx=per_anchor(tidx[None].expand(5, nt)),
        valid=valid,
    )


def level_loss(pi: torch.Tensor, m: Match, nc: int, cp: float, cn: float, gr: float,
               cls_pw: torch.Tensor | None, obj_pw: torch.Tensor | None, fl_gamma: float = 0.0,
               image_mask: torch.Tensor | None = None):
    """Box, objectness and class loss of one level: (lbox, lobj unweighted, lcls, matched prediction rows).

    image_mask (B,) bool: images whose boxes are labelled; the others (images labelled only for another head) add no
    objectness term, which would otherwise teach that they hold no objects. None: every image is labelled.
    """
    bs, na, ny, nx, _ = pi.shape
    ps = pi[m.b, m.a, m.gj, m.gi]  # (N, no)
    n = m.valid.sum()

    pxy = ps[:, :2].float().sigmoid() * 2 - 0.5
    pwh = (ps[:, 2:4].float().sigmoid() * 2) ** 2 * m.anchors
    iou = bbox_iou(torch.cat((pxy, pwh), 1), m.tbox, CIoU=True).squeeze(-1)  # (N,)
    lbox = masked_mean(1.0 - iou, m.valid, n)

    # Objectness target = CIoU at the matched cells; duplicates resolve to the last candidate, as upstream's index_put.
    score = iou.detach().clamp(0)
    if gr < 1:
        score = (1.0 - gr) + gr * score
    lin = ((m.b * na + m.a) * ny + m.gj) * nx + m.gi
    keep = last_write_mask(lin, m.valid, bs * na * ny * nx)
    obj_logits = pi[..., 4]
    tobj = torch.zeros(obj_logits.numel(), dtype=obj_logits.dtype, device=pi.device)
    # Exactly one non-zero contribution per cell, so the (atomic) add is exact and order-independent.
    tobj.scatter_add_(0, lin, torch.where(keep, score, torch.zeros_like(score)).to(tobj.dtype))
    obj_terms = bce_terms(obj_logits, tobj.view_as(obj_logits), obj_pw, fl_gamma)
    if image_mask is None:
        lobj = obj_terms.mean()
    else:  # the mean over the labelled images' cells (equal to .mean() when all are labelled)
        per_image = obj_terms.flatten(1).mean(1)
        lobj = (per_image * image_mask).sum() / image_mask.sum().clamp(min=1)

    if nc > 1:  # a single class needs no class loss
        pcls = ps[:, 5:5 + nc]
        t = torch.full_like(pcls, cn).scatter_(1, m.tcls[:, None], cp)
        lcls = masked_mean(bce_terms(pcls, t, cls_pw, fl_gamma), m.valid, n * nc)
    else:
        lcls = pi.new_zeros(()).float()
    return lbox, lobj, lcls, ps


def _unwrap_head(obj):
    """Accept the Detect head itself, a model (its last layer) or a DDP/compiled wrapper of either."""
    for _ in range(4):
        if hasattr(obj, "nl") and hasattr(obj, "anchors"):
            return obj
        if hasattr(obj, "module"):  # DistributedDataParallel / DataParallel
            obj = obj.module
        elif hasattr(obj, "_orig_mod"):  # torch.compile wrapper
            obj = obj._orig_mod
        elif hasattr(obj, "model"):
            obj = obj.model[-1]
    raise TypeError(f"DetectionLoss needs a Detect head (nc, nl, na, anchors, stride), got {type(obj).__name__}")


class DetectionLoss:
    """YOLOv5 ComputeLoss: `loss, items = DetectionLoss(head, hyp)(preds, targets)`."""

    def __init__(self, head, hyp: dict, autobalance: bool = False):
        head = _unwrap_head(head)
        self.head = head  # anchors are read from it at call time, so AutoAnchor or .to(device) is picked up
        self.nc, self.nl, self.na = int(head.nc), int(head.nl), int(head.na)
        self.hyp = hyp
        self.cp, self.cn = smooth_bce(hyp.get("label_smoothing", 0.0))
        self.fl_gamma = float(hyp.get("fl_gamma", 0.0))
        self.anchor_t = float(hyp["anchor_t"])
        self.gr = 1.0
        self.autobalance = autobalance
        self.balance = {3: [4.0, 1.0, 0.4]}.get(self.nl, [4.0, 1.0, 0.25, 0.06, 0.02])
        strides = [float(s) for s in torch.as_tensor(head.stride).flatten().tolist()] if hasattr(head, "stride") else []
        self.ssi = strides.index(16.0) if autobalance and 16.0 in strides else 0
        self._pw = (float(hyp["cls_pw"]), float(hyp["obj_pw"]))
        self._consts: dict[torch.device, tuple] = {}  # per-device constants, made once (no H2D copy per batch)

    @property
    def anchors(self) -> torch.Tensor:
        """Anchors (nl, na, 2) in grid units, as currently held by the head."""
        return self.head.anchors

    def _device_consts(self, device: torch.device):
        if device not in self._consts:
            self._consts[device] = (
                torch.tensor([self._pw[0]], device=device),
                torch.tensor([self._pw[1]], device=device),
                torch.tensor(_OFFSETS, device=device),
            )
        return self._consts[device]

    def match(self, preds: list[torch.Tensor], targets: torch.Tensor) -> list[Match]:
        """Dense per-level candidates with a validity mask (no filtering, no host sync)."""
        device = preds[0].device
        targets = targets.to(device=device, dtype=torch.float32)
        offsets = self._device_consts(device)[2]
        anchors = self.anchors.to(device=device, dtype=torch.float32)
        return [match_level(targets, anchors[i], p.shape[3], p.shape[2], self.anchor_t, offsets)
                for i, p in enumerate(preds)]

    def build_targets(self, preds: list[torch.Tensor], targets: torch.Tensor):
        """Upstream-form targets per level: (tcls, tbox, indices (b, a, gj, gi), anchors), filtered (syncs)."""
        tcls, tbox, indices, anch = [], [], [], []
        for m in self.match(preds, targets):
            v = m.valid
            tcls.append(m.tcls[v])
            tbox.append(m.tbox[v])
            indices.append((m.b[v], m.a[v], m.gj[v], m.gi[v]))
            anch.append(m.anchors[v])
        return tcls, tbox, indices, anch

    def level_terms(self, preds: list[torch.Tensor], matches: list[Match], image_mask: torch.Tensor | None = None):
        """Per level (lbox, lobj, lcls, ps) after balancing lobj; updates autobalance state."""
        cls_pw, obj_pw = self._device_consts(preds[0].device)[:2]
        out = []
        for i, (pi, m) in enumerate(zip(preds, matches)):
            lbox, obji, lcls, ps = level_loss(pi, m, self.nc, self.cp, self.cn, self.gr, cls_pw, obj_pw,
                                              self.fl_gamma, image_mask)
            out.append((lbox, obji * self.balance[i], lcls, ps))
            if self.autobalance:  # stays a device tensor: no .item()
                self.balance[i] = self.balance[i] * 0.9999 + 0.0001 / obji.detach()
        if self.autobalance:
            ref = self.balance[self.ssi]
            self.balance = [x / ref for x in self.balance]
        return out

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor, image_mask: torch.Tensor | None = None):
        """Loss (1,) = (lbox + lobj + lcls) * bs and detached items (3,) [box, obj, cls].

        image_mask (B,) bool: which images have box labels (see level_loss); None: all of them.
        """
        mask = None if image_mask is None else image_mask.to(device=preds[0].device, dtype=torch.float32)
        terms = self.level_terms(preds, self.match(preds, targets), mask)
        lbox = sum(t[0] for t in terms) * self.hyp["box"]
        lobj = sum(t[1] for t in terms) * self.hyp["obj"]
        lcls = sum(t[2] for t in terms) * self.hyp["cls"]
        bs = preds[0].shape[0]
        items = torch.stack((lbox, lobj, lcls)).float()
        # YOLOv5 losses are sums over the global batch; DDP averages gradients over ranks, hence x world size
        return (items.sum() * bs * world_size()).reshape(1), items.detach()
