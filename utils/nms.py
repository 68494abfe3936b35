"""Non-maximum suppression: the greedy box NMS kernel and the per-image YOLO post-processing around it.

`nms` uses torchvision's kernel when torchvision is installed. Without it, CPU boxes go through ONNX Runtime's
NonMaxSuppression operator (a C++ greedy loop, given ranks for scores so the order is ours) and other devices through
a pure-torch greedy NMS; all three keep exactly the boxes torchvision keeps, in the same order. Unlike upstream's
`non_max_suppression` there is no wall-clock limit: results never depend on machine speed.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from utils.boxes import xywh2xyxy

try:  # optional dependency: only its NMS kernel is used
    from torchvision.ops import nms as _tv_nms
except Exception:  # ImportError, or a torchvision built against another torch
    _tv_nms = None

MAX_WH = 7680  # per-class coordinate offset: larger than any image side, so classes never overlap
MAX_NMS = 30000  # candidates passed to the NMS kernel per image
_BLOCK = 512  # boxes resolved together by the pure-torch kernel
_SPARSE_RATIO = 8  # use x-sweep windows when they hold fewer than n*n/_SPARSE_RATIO pairs


def _overlapping_pairs(b1, a1, b2, a2, iou_thres: float, upper: bool = False):
    """Index pairs (i, j) of b1 x b2 (xyxy, areas a1/a2) whose IoU exceeds iou_thres (>= 0); upper: only j > i.

    Only pairs whose boxes intersect can pass, so a cheap byte mask of intersecting pairs picks the candidates
    and the exact IoU is computed for those alone (crowded scenes: a fraction of all pairs).
    """
    x1, y1, x2, y2 = b1[:, None, 0], b1[:, None, 1], b1[:, None, 2], b1[:, None, 3]
    cand = (b2[None, :, 0] < x2) & (x1 < b2[None, :, 2]) & (b2[None, :, 1] < y2) & (y1 < b2[None, :, 3])
    if upper:
        cand.triu_(1)
    i, j = cand.nonzero().T  # host sync
    p, q = b1[i], b2[j]
    # torchvision's float expression, no eps: inter / (area_i + area_j - inter)
    w = (torch.minimum(p[:, 2], q[:, 2]) - torch.maximum(p[:, 0], q[:, 0])).clamp_(min=0)
    h = (torch.minimum(p[:, 3], q[:, 3]) - torch.maximum(p[:, 1], q[:, 1])).clamp_(min=0)
    inter = w * h
    iou = inter / (a1[i] + a2[j] - inter)
    # torchvision compares the float IoU with the double threshold; a float32 comparison would round the
    # threshold and flip decisions for IoUs that land exactly on float32(thres)
    m = iou.double() > iou_thres
    return i[m], j[m]


def _resolve_block(over: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Greedy keep mask of one score-ordered block given over[j, i] (earlier j suppresses i) and the survivors."""
    # keep = alive & ~any(kept earlier and overlapping): entry i is final after i rounds, and the loop stops at
    # the first round that changes nothing, so a suppression chain of length L costs L rounds (one sync each).
    keep = alive
    while True:
        new = alive & ~(over & keep[:, None]).any(0)
        if torch.equal(new, keep):
            return keep
        keep = new


def _nms_dense(b: torch.Tensor, area: torch.Tensor, iou_thres: float, max_keep: int) -> torch.Tensor:
    """Keep mask for score-sorted boxes, each block checked against every box kept so far: O(n * kept)."""
    keep_all = torch.zeros(b.shape[0], dtype=torch.bool, device=b.device)
    kept_box, kept_area = b[:0], area[:0]
    for s in range(0, b.shape[0], _BLOCK):
        bb, ab = b[s:s + _BLOCK], area[s:s + _BLOCK]
        alive = torch.ones(bb.shape[0], dtype=torch.bool, device=b.device)
        if kept_box.shape[0]:
            alive[_overlapping_pairs(kept_box, kept_area, bb, ab, iou_thres)[1]] = False
        over = torch.zeros((bb.shape[0], bb.shape[0]), dtype=torch.bool, device=b.device)
        over[_overlapping_pairs(bb, ab, bb, ab, iou_thres, upper=True)] = True
        keep = _resolve_block(over, alive)
        keep_all[s:s + _BLOCK] = keep
        idx = keep.nonzero().squeeze(1)  # host sync
        kept_box, kept_area = torch.cat((kept_box, bb[idx])), torch.cat((kept_area, ab[idx]))
        if kept_box.shape[0] >= max_keep:  # later blocks could only add boxes beyond the cap
            break
    return keep_all


def _x_windows(b: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Order boxes by x1 and, per chunk of _BLOCK in that order, the end of the run of boxes that can overlap it."""
    xo = b[:, 0].argsort(stable=True)
    x1 = b[xo, 0].contiguous()
    n, pad = b.shape[0], -b.shape[0] % _BLOCK
    x2 = torch.cat((b[xo, 2], b.new_full((pad,), -torch.inf))).view(-1, _BLOCK).amax(1)
    # a later box q can only overlap a box p of the chunk if x1[q] < x2[p] <= max x2 of the chunk
    hi = torch.searchsorted(x1, x2, side="left").clamp_(max=n)
    return xo, hi.tolist()  # host sync


def _overlap_edges(b, area, xo, hi, iou_thres):
    """All pairs (earlier, later) in score order whose IoU exceeds the threshold, found within the x windows."""
    srcs, dsts = [], []
    bx, ax = b[xo], area[xo]
    for k, end in enumerate(hi):
        s = k * _BLOCK
        e = min(s + _BLOCK, b.shape[0])
        if end <= s + 1:
            continue
        r, c = _overlapping_pairs(bx[s:e], ax[s:e], bx[s:end], ax[s:end], iou_thres, upper=True)
        p, q = xo[r + s], xo[c + s]  # score ranks of the pair
        srcs.append(torch.minimum(p, q))
        dsts.append(torch.maximum(p, q))
    empty = torch.zeros(0, dtype=torch.long, device=b.device)
    return (torch.cat(srcs), torch.cat(dsts)) if srcs else (empty, empty)


def _nms_sparse(b: torch.Tensor, area: torch.Tensor, iou_thres: float, xo, hi, max_keep: int) -> torch.Tensor:
    """Keep mask for score-sorted boxes from the sparse list of suppressing pairs: O(pairs in the x windows)."""
    n = b.shape[0]
    src, dst = _overlap_edges(b, area, xo, hi, iou_thres)
    dst, perm = dst.sort(stable=True)
    src = src[perm]
    bounds = torch.searchsorted(dst, torch.arange(0, n + _BLOCK, _BLOCK, device=b.device)).tolist()  # host sync
    keep_all = torch.zeros(n, dtype=torch.bool, device=b.device)
    for k, s in enumerate(range(0, n, _BLOCK)):
        m = min(_BLOCK, n - s)
        es, ed = src[bounds[k]:bounds[k + 1]], dst[bounds[k]:bounds[k + 1]] - s
        inner = es >= s
        hits = torch.zeros(m, dtype=torch.int32, device=b.device)
        hits.index_add_(0, ed[~inner], keep_all[es[~inner]].int())
        over = torch.zeros((m, m), dtype=torch.bool, device=b.device)
        over[es[inner] - s, ed[inner]] = True
        keep_all[s:s + m] = _resolve_block(over, hits == 0)
        if int(keep_all[:s + m].sum()) >= max_keep:  # host sync; later boxes would only exceed the cap
            break
    return keep_all


def nms_torch(boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float, max_keep: int | None = None) -> torch.Tensor:
    """Pure-torch greedy NMS, identical to torchvision.ops.nms: kept indices (int64) sorted by score descending.

    Greedy NMS keeps boxes in score order, so with `max_keep` it stops once that many are kept: the result is
    exactly the first `max_keep` of the full result (what callers capping at max_det keep anyway).

    Boxes are resolved in score order, in blocks of _BLOCK, each block against the boxes kept before it. Two ways
    to find who overlaps whom, picked by cost: when boxes are spread out (many classes shifted apart by
    the class offset, or small boxes) only pairs inside sweep windows along x are measured; when they are
    crowded, each block is measured against all kept boxes. Host syncs: a few per block (block bookkeeping
    and one per fixed-point round), none per box.
    """
    if iou_thres < 0:
        raise ValueError(f"nms: iou_thres {iou_thres} is negative (it must be in [0, 1])")
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = scores.argsort(descending=True, stable=True)
    b = boxes[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    max_keep = n if max_keep is None else max_keep
    if n > _BLOCK:
        xo, hi = _x_windows(b)
        window_pairs = sum(min(e, n) - k * _BLOCK for k, e in enumerate(hi)) * _BLOCK
        if window_pairs < n * n // _SPARSE_RATIO:
            return order[_nms_sparse(b, area, iou_thres, xo, hi, max_keep)][:max_keep]
    return order[_nms_dense(b, area, iou_thres, max_keep)][:max_keep]


# One NonMaxSuppression node (opset 11, IR 8: readable by every onnxruntime the requirements allow) with inputs boxes
# (1, n, 4) float, scores (1, 1, n) float, max_keep (1,) int64, iou (1,) float and output selected (k, 3) int64,
# serialised. Stored as bytes because building it with onnx.helper imports onnx, 1.4 s of start-up;
# tests/test_nms.py rebuilds it with onnx.helper and checks it is these bytes.
NMS_ONNX_MODEL = (
    b"\x08\x08\x12\tmt-yolov5:\xbe\x01\n;\n\x05boxes\n\x06scores\n\x08max_keep\n\x03iou\x12\x08selected\"\x11"
    b"NonMaxSuppression\x12\x03nmsZ\x19\n\x05boxes\x12\x10\n\x0e\x08\x01\x12\n\n\x02\x08\x01\n\x00\n\x02\x08\x04Z\x1a\n"
    b"\x06scores\x12\x10\n\x0e\x08\x01\x12\n\n\x02\x08\x01\n\x02\x08\x01\n\x00Z\x16\n\x08max_keep\x12\n\n\x08\x08\x07\x12"
    b"\x04\n\x02\x08\x01Z\x11\n\x03iou\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01b\x18\n\x08selected\x12\x0c\n\n\x08"
    b"\x07\x12\x06\n\x00\n\x02\x08\x03B\x04\n\x00\x10\x0b"
)


@functools.lru_cache(maxsize=1)
def _ort_nms_session() -> Any:
    """An ONNX Runtime session of NMS_ONNX_MODEL on one thread; None without onnxruntime."""
    try:  # optional; imported on first use
        import onnxruntime as ort
    except Exception:  # ImportError, or a build that fails to load
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # greedy NMS is one sequential loop
    return ort.InferenceSession(NMS_ONNX_MODEL, options, providers=["CPUExecutionProvider"])


def _float32_at_most(x: float) -> np.float32:
    """The largest float32 <= x: for a float32 IoU v, v > x holds exactly when v > this value."""
    f = np.float32(x)
    return np.nextafter(f, np.float32(-np.inf)) if float(f) > x else f


def nms_onnxruntime(boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float,
                    max_keep: int | None = None) -> torch.Tensor | None:
    """torchvision's greedy NMS on CPU boxes through ONNX Runtime (None when it can't run or the boxes are unusual).

    Equal to torchvision because: the operator gets score ranks (exact in float32), so its order is the stable
    score order; its IoU is the same float expression (intersection / (area + area - intersection)); and its
    strict float32 comparison is made against the largest float32 not above the threshold, which torchvision
    compares in double. Only float32 boxes: torchvision computes fp16 boxes in fp16. Its corner normalisation
    (min/max of each pair) only matters for inverted boxes, which are left to the torch kernel, as are non-finite
    ones. On a 2-core EPYC, 3122 boxes keeping 300: 0.9 ms, against 19 ms in torch.
    """
    n = boxes.shape[0]
    usable = boxes.device.type == "cpu" and boxes.dtype == torch.float32 and 0 < n < 2**24 and iou_thres >= 0
    session = _ort_nms_session() if usable else None
    if session is None:
        return None
    b = boxes.detach()
    if not (torch.isfinite(b).all() and (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()):
        return None
    order = scores.argsort(descending=True, stable=True)
    feeds = {"boxes": b[order].numpy()[None], "scores": np.arange(n, 0, -1, dtype=np.float32)[None, None],
             "max_keep": np.array([n if max_keep is None else max_keep], np.int64),
             "iou": np.array([_float32_at_most(iou_thres)], np.float32)}
    selected = session.run(None, feeds)[0]
    return order[torch.from_numpy(selected[:, 2])]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float, max_keep: int | None = None) -> torch.Tensor:
    """Greedy NMS on xyxy boxes: indices of kept boxes sorted by score (torchvision, ONNX Runtime on CPU, or torch)."""
    if _tv_nms is not None:
        keep = _tv_nms(boxes, scores, iou_thres)
        return keep if max_keep is None else keep[:max_keep]
    keep = nms_onnxruntime(boxes, scores, iou_thres, max_keep)
    return keep if keep is not None else nms_torch(boxes, scores, iou_thres, max_keep)


def _label_rows(lb: torch.Tensor, nc: int, nm: int) -> torch.Tensor:
    """Turn autolabelling labels (n, 5) [cls, xywh] into prediction rows with objectness and class score 1."""
    v = torch.zeros((lb.shape[0], 5 + nc + nm), device=lb.device, dtype=lb.dtype)
    v[:, :4] = lb[:, 1:5]
    v[:, 4] = 1.0
    v[torch.arange(lb.shape[0], device=lb.device), lb[:, 0].long() + 5] = 1.0
    return v


def non_max_suppression(prediction, conf_thres: float = 0.25, iou_thres: float = 0.45, classes=None,
                        agnostic: bool = False, multi_label: bool = False, labels=(), max_det: int = 300,
                        nm: int = 0) -> list[torch.Tensor]:
    """YOLO NMS on (bs, N, 5+nc+nm) xywh/obj/cls/coef predictions -> per image (n, 6+nm) xyxy, conf, cls, coefs."""
    if not 0 <= conf_thres <= 1:
        raise ValueError(f"non_max_suppression: conf_thres {conf_thres} is not in [0, 1]")
    if not 0 <= iou_thres <= 1:
        raise ValueError(f"non_max_suppression: iou_thres {iou_thres} is not in [0, 1]")
    if isinstance(prediction, (list, tuple)):  # eval-mode model output (inference, raw maps)
        prediction = prediction[0]

    bs = prediction.shape[0]
    nc = prediction.shape[2] - nm - 5
    mi = 5 + nc  # first mask coefficient
    multi_label &= nc > 1
    candidates = prediction[..., 4] > conf_thres
    output = [torch.zeros((0, 6 + nm), device=prediction.device)] * bs
    for xi, x in enumerate(prediction):
        x = x[candidates[xi]]
        if labels and len(labels[xi]):
            x = torch.cat((x, _label_rows(labels[xi].to(x), nc, nm)), 0)
        if not x.shape[0]:
            continue

        # Upstream scales every column after objectness, mask coefficients included; the fixture confirms it.
        x[:, 5:] *= x[:, 4:5]
        box = xywh2xyxy(x[:, :4])
        mask = x[:, mi:]
        if multi_label:
            i, j = (x[:, 5:mi] > conf_thres).nonzero(as_tuple=False).T
            x = torch.cat((box[i], x[i, 5 + j, None], j[:, None].float(), mask[i]), 1)
        else:
            conf, j = x[:, 5:mi].max(1, keepdim=True)
            x = torch.cat((box, conf, j.float(), mask), 1)[conf.view(-1) > conf_thres]
        if classes is not None:
            x = x[(x[:, 5:6] == torch.tensor(classes, device=x.device)).any(1)]
        if not x.shape[0]:
            continue

        x = x[x[:, 4].argsort(descending=True, stable=True)[:MAX_NMS]]
        offsets = x[:, 5:6] * (0 if agnostic else MAX_WH)
        keep = nms(x[:, :4] + offsets, x[:, 4], iou_thres, max_keep=max_det)
        output[xi] = x[keep]
    return output
