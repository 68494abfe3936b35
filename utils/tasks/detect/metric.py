"""Detection scoring: match predictions to labels in original-image pixels, then YOLOv5's P, R, mAP50, mAP50-95."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils import dist
from utils.boxes import scale_boxes, xywh2xyxy, xyxy2xywh
from utils.engine.task import Metric
from utils.log import LOGGER
from utils.metrics import ConfusionMatrix, ap_per_class, match_predictions

IOUV = torch.linspace(0.5, 0.95, 10)  # IoU thresholds of mAP50-95


class DetMetric(Metric):
    """Accumulates (correct, conf, pred_cls, target_cls) per image, as YOLOv5's val.py does."""

    names = ("metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95")
    header = ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")
    post_name = "NMS"

    def __init__(self, names: dict[int, str], save_dir: Path = Path("."), plots: bool = False, training: bool = False,
                 single_cls: bool = False, save_txt: bool = False, save_conf: bool = False,
                 json_out: list | None = None, class_map: list[int] | None = None):
        self.class_names, self.save_dir, self.plots, self.training = names, Path(save_dir), plots, training
        self.single_cls, self.save_txt, self.save_conf = single_cls, save_txt, save_conf
        self.json_out, self.class_map = json_out, class_map
        self.nc = 1 if single_cls else len(names)
        self.confusion = ConfusionMatrix(nc=self.nc)
        self.stats: list[tuple] = []
        self.seen = 0
        self._result: dict[str, Any] | None = None

    def update(self, preds: list[torch.Tensor], batch: dict) -> None:
        """Score each image's detections (x1, y1, x2, y2, conf, cls) against its labels."""
        img, targets, shapes, paths = batch["img"], batch["targets"], batch["shapes"], batch["paths"]
        h, w = img.shape[2:]
        iouv = IOUV.to(img.device)
        tgt = targets.clone()
        tgt[:, 2:6] *= torch.tensor((w, h, w, h), device=tgt.device)
        for si, item in enumerate(preds):
            pred, extra = self._unpack(item)
            sel = tgt[:, 0] == si
            labels = tgt[sel, 1:6]
            nl, npr = labels.shape[0], pred.shape[0]
            shape0, ratio_pad = shapes[si][0], shapes[si][1]
            self.seen += 1
            correct = (torch.zeros(npr, len(iouv), dtype=torch.bool, device=img.device),) * self.n_correct
            if npr == 0:
                if nl:
                    self.stats.append((*correct, pred[:, 4], pred[:, 5], labels[:, 0]))
                    if self.plots:
                        self.confusion.process_batch(None, labels[:, 0])
                continue
            if self.single_cls:
                pred[:, 5] = 0
            predn = pred.clone()
            scale_boxes(img.shape[2:], predn[:, :4], shape0, ratio_pad)
            if nl:
                tbox = xywh2xyxy(labels[:, 1:5])
                scale_boxes(img.shape[2:], tbox, shape0, ratio_pad)
                labelsn = torch.cat((labels[:, 0:1], tbox), 1)
                correct = self._match(predn, labelsn, iouv, extra, batch, si, sel)
                if self.plots:
                    self.confusion.process_batch(predn, labelsn)
            self.stats.append((*correct, pred[:, 4], pred[:, 5], labels[:, 0]))
            if self.save_txt:
                self._save_txt(predn, shape0, Path(paths[si]))
            if self.json_out is not None:
                self._append_json(predn, Path(paths[si]), self._json_fields(extra, img.shape[2:], shape0, ratio_pad))

    n_correct = 1  # how many hit tables (n, 10) lead each stats row: boxes here; masks and boxes in SegMetric

    def _unpack(self, item: Any) -> tuple[torch.Tensor, Any]:
        """One image's post-processed output -> (detections (n, 6+), anything else _match needs)."""
        return item, None

    def _match(self, predn: torch.Tensor, labelsn: torch.Tensor, iouv: torch.Tensor, extra: Any, batch: dict,
               si: int, sel: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Hit tables of one image's predictions against its labels, both in original-image pixels."""
        return (match_predictions(predn, labelsn, iouv),)

    def _save_txt(self, predn: torch.Tensor, shape0: tuple, path: Path) -> None:
        gn = torch.tensor(shape0, device=predn.device, dtype=predn.dtype)[[1, 0, 1, 0]]
        xywhn = xyxy2xywh(predn[:, :4]) / gn  # all rows at once, normalised by the original image size
        cols = [predn[:, 5:6], xywhn] + ([predn[:, 4:5]] if self.save_conf else [])
        (self.save_dir / "labels").mkdir(parents=True, exist_ok=True)
        with open(self.save_dir / "labels" / f"{path.stem}.txt", "a") as f:
            for line in torch.cat(cols, 1).tolist():
                f.write(("%g " * len(line)).rstrip() % tuple(line) + "\n")

    def _json_fields(self, extra: Any, img_shape: tuple, shape0: tuple, ratio_pad: Any) -> list[dict] | None:
        """Per-detection fields a COCO JSON row adds to the box (segmentation adds its mask); none for boxes."""
        return None

    def _append_json(self, predn: torch.Tensor, path: Path, fields: list[dict] | None = None) -> None:
        image_id = int(path.stem) if path.stem.isnumeric() else path.stem
        box = xyxy2xywh(predn[:, :4].clone())
        box[:, :2] -= box[:, 2:] / 2  # COCO boxes are top-left corner + size
        for i, (p, b) in enumerate(zip(predn.tolist(), box.tolist())):
            cls = int(p[5])
            self.json_out.append({"image_id": image_id,
                                  "category_id": self.class_map[cls] if self.class_map else cls,
                                  "bbox": [round(x, 3) for x in b], "score": round(p[4], 5), **(fields[i] if fields
                                                                                                  else {})})

    def reduce(self) -> None:
        """Under DDP, gather every rank's per-image statistics."""
        if dist.world_size() > 1:
            parts = dist.all_gather_objects([[t.cpu() for t in s] for s in self.stats])
            self.stats = [tuple(s) for part in parts for s in part]
            self.seen = sum(dist.all_gather_objects(self.seen))

    def compute(self) -> dict[str, float]:
        """P, R, mAP50, mAP50-95 over all classes (zeros when nothing matched)."""
        if self._result is not None:
            return self._result["figures"]
        stats = [torch.cat(x, 0).cpu().numpy() for x in zip(*self.stats)] if self.stats else []
        nt = np.bincount(stats[3].astype(int), minlength=self.nc) if stats else np.zeros(self.nc, int)
        rows = {int(c): (0.0, 0.0, 0.0, 0.0) for c in np.flatnonzero(nt)}  # labelled classes, zero until matched
        if stats and stats[0].any():
            _, _, p, r, _, ap_all, ap_class = ap_per_class(*stats, plot=self.plots and not self.training,
                                                           save_dir=self.save_dir, names=self.class_names)
            rows.update({int(c): (p[i], r[i], ap_all[i, 0], ap_all[i].mean()) for i, c in enumerate(ap_class)})
        per_class = np.array(list(rows.values())).reshape(-1, 4)
        figures = dict(zip(self.names, per_class.mean(0).tolist() if len(per_class) else [0.0] * 4))
        self.maps = np.full(self.nc, figures[self.names[3]])
        for c, row in rows.items():
            self.maps[c] = row[3]
        self._result = {"nt": nt, "rows": rows, "figures": figures}
        return figures

    def summary(self, verbose: bool = False) -> str:
        """The 'all' row, plus one row per labelled class when verbose or when there are few classes."""
        self.compute()
        res = self._result  # the box figures (a subclass's compute may add others)
        pf = "%22s" + "%11i" * 2 + "%11.3g" * 4
        lines = [self.header, pf % ("all", self.seen, res["nt"].sum(), *res["figures"].values())]
        if res["nt"].sum() == 0:
            LOGGER.warning(f"WARNING ⚠️ no labels found in the {'val' if self.training else 'chosen'} set, "
                           f"cannot compute metrics without labels")
        if (verbose or (self.nc < 50 and not self.training)) and self.nc > 1:
            for c, row in sorted(res["rows"].items()):
                lines.append(pf % (self.class_names.get(c, str(c)), self.seen, res["nt"][c], *row))
        return "\n".join(lines)

    def finalize(self, save_dir: Path, plots: bool) -> None:
        """Confusion matrix plot at the end of a standalone or final validation."""
        if plots and not self.training:
            self.confusion.plot(save_dir=save_dir, names=list(self.class_names.values()))

