"""Object detection: the base task of the engine (YOLOv5 v7.0 recipe)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from utils.boxes import scale_boxes
from utils.data.loader import LoaderOptions
from utils.engine.task import ImageResult, Task, TrainContext, ValSettings
from utils.log import LOGGER
from utils.tasks.detect.metric import DetMetric
from utils.tasks.registry import Scripts, TaskEntry, register


class DetectionTask(Task):
    """Boxes from a Detect head, trained with YOLOv5's box/obj/cls loss and scored by mAP."""

    name = "detect"
    post_name = "NMS"
    default_project = "runs/train"
    loss_names = ("box_loss", "obj_loss", "cls_loss")
    metric_names = DetMetric.names
    fitness_weights = (0.0, 0.0, 0.1, 0.9)  # P, R, mAP50, mAP50-95
    coco_iou_types = ("bbox",)  # what val.py --save-json has pycocotools score

    def check_data(self, data: str | dict) -> dict:
        from utils.data.dataset_config import check_dataset

        return check_dataset(data)

    def build_model(self, cfg: str | dict, nc: int, hyp: dict | None = None) -> nn.Module:
        from models.build import build_model
        from models.yolo import load_yaml_cfg

        anchors = (hyp or {}).get("anchors")
        if anchors:  # hyp 'anchors: N' asks for N placeholder anchors per level, fitted later by AutoAnchor
            cfg = {**load_yaml_cfg(cfg), "anchors": round(anchors)}
        return build_model(cfg, ch=3, nc=nc)

    def scale_hyp(self, hyp: dict, model: nn.Module, nc: int, imgsz: int) -> dict:
        """YOLOv5's gains are tuned for 3 levels, 80 classes and 640 px; rescale them to this model and data."""
        nl = model.model[-1].nl
        hyp = dict(hyp)
        hyp["box"] *= 3 / nl
        hyp["cls"] *= nc / 80 * 3 / nl
        hyp["obj"] *= (imgsz / 640) ** 2 * 3 / nl
        return hyp

    def build_dataloader(self, path: Any, opts: LoaderOptions, hyp: dict, batch_size: int, stride: int, mode: str,
                         rank: int = -1, nc: int | None = None):
        from utils.tasks.detect.dataset import create_dataloader

        train, speed = mode == "train", mode == "speed"  # 'speed' times square batches, as upstream
        return create_dataloader(
            path, opts.imgsz, batch_size, stride, single_cls=opts.single_cls, hyp=hyp, augment=train,
            cache=opts.cache_for(train) if train or opts.cache != "disk" else None, pad=0.0 if train or speed else 0.5,
            rect=opts.rect if train else not speed, rank=rank if train else -1,
            workers=opts.workers if train else opts.workers * 2, image_weights=opts.image_weights and train,
            quad=opts.quad and train, prefix="train: " if train else "val: ", shuffle=train, seed=opts.seed,
            nc=None if opts.single_cls else nc, images_dir=opts.images_dir, labels_dir=opts.labels_dir,
            **self.dataset_options(opts))

    def dataset_options(self, opts: LoaderOptions) -> dict:
        """Extra create_dataloader arguments (a dataset subclass and its options) for tasks built on detection."""
        return {}

    def preprocess(self, batch: dict, device: torch.device, half: bool = False) -> dict:
        targets = batch["targets"]
        img = batch["img"].to(device, non_blocking=True)
        img = (img.half() if half else img.float()) / 255
        return {"img": img, "targets": targets.to(device, non_blocking=True), "paths": batch["paths"],
                "shapes": batch["shapes"], "n_instances": int(targets.shape[0])}

    def instances(self, batch: dict) -> int:
        return batch["n_instances"]

    def criterion(self, model: nn.Module, hyp: dict):
        from utils.tasks.detect.loss import DetectionLoss

        loss = DetectionLoss(model.model[-1], hyp)
        return lambda preds, batch: loss(preds, batch["targets"])

    def split_eval_output(self, out: Any):
        return (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, None)

    def postprocess(self, preds: torch.Tensor, batch: dict | None = None, conf_thres: float = 0.001,
                    iou_thres: float = 0.6, max_det: int = 300, multi_label: bool = True, agnostic: bool = False,
                    hybrid: bool = False, classes: list[int] | None = None, nm: int = 0) -> list:
        """NMS: per image (n, 6 + nm) [x1, y1, x2, y2, conf, cls, mask coefficients] in input pixels."""
        from utils.nms import non_max_suppression

        labels = ()
        if hybrid and batch is not None:  # --save-hybrid: labels join the predictions (autolabelling)
            t = batch["targets"].clone()
            h, w = batch["img"].shape[2:]
            t[:, 2:6] *= torch.tensor((w, h, w, h), device=t.device)
            labels = [t[t[:, 0] == i, 1:6] for i in range(batch["img"].shape[0])]
        # float32: under AMP or .half() boxes arrive in fp16, whose box areas overflow beyond 256 px sides
        return non_max_suppression(preds.float(), conf_thres, iou_thres, classes=classes, labels=labels,
                                   multi_label=multi_label, agnostic=agnostic, max_det=max_det, nm=nm)

    def val_post_kw(self, data: dict, training: bool) -> dict:
        # The final pass after training uses upstream's 0.65 IoU on COCO; everything else 0.6.
        is_coco = str(data.get("val", "")).endswith("val2017.txt")
        return {"conf_thres": 0.001, "iou_thres": 0.65 if (is_coco and not training) else 0.6, "max_det": 300}

    # ------------------------------------------------------------------------------------------ validation
    @classmethod
    def add_val_arguments(cls, p: argparse.ArgumentParser) -> None:
        """val.py's detection flags (YOLOv5 v7.0 names and defaults)."""
        p.add_argument("--conf-thres", type=float, default=0.001, help="confidence threshold")
        p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold")
        p.add_argument("--max-det", type=int, default=300, help="maximum detections per image")
        p.add_argument("--task", default="val", choices=["train", "val", "test", "speed"], help="split, or speed")
        p.add_argument("--single-cls", action="store_true", help="treat as single-class dataset")
        p.add_argument("--augment", action="store_true", help="augmented inference (TTA)")
        p.add_argument("--verbose", action="store_true", help="report mAP by class")
        p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
        p.add_argument("--save-hybrid", action="store_true", help="save label+prediction hybrid results to *.txt")
        p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
        p.add_argument("--save-json", action="store_true", help="save a COCO-JSON results file")

    def val_settings(self, opt: argparse.Namespace, data: dict, save_dir: Path) -> ValSettings:
        """NMS thresholds and what to save; --task speed times square batches at upstream's predict thresholds."""
        if opt.conf_thres > 0.001:
            LOGGER.warning(f"WARNING ⚠️ confidence threshold {opt.conf_thres} > 0.001 produces invalid results")
        speed = opt.task == "speed"
        save_txt = opt.save_txt or opt.save_hybrid
        if save_txt:
            (save_dir / "labels").mkdir(parents=True, exist_ok=True)
        json_out = [] if opt.save_json and not speed else None
        class_map = None
        if json_out is not None:
            from utils.coco import coco_class_map

            class_map = coco_class_map(data)  # class index -> the annotation file's category id (COCO's 1..90)
        post = {"conf_thres": 0.25 if speed else opt.conf_thres, "iou_thres": 0.45 if speed else opt.iou_thres,
                "max_det": opt.max_det, "agnostic": opt.single_cls, "hybrid": opt.save_hybrid}
        metric = {"save_txt": save_txt, "save_conf": opt.save_conf, "json_out": json_out, "class_map": class_map}
        return ValSettings(split="val" if speed else opt.task, loader_mode="speed" if speed else "val", post=post,
                           metric=metric, single_cls=opt.single_cls, augment=opt.augment, verbose=opt.verbose,
                           plots=not speed)

    def after_val(self, result: Any, settings: ValSettings, data: dict, save_dir: Path, weights: str) -> None:
        """--save-json: write the predictions as COCO JSON and let pycocotools score them."""
        json_out = settings.metric.get("json_out")
        if json_out is None:
            return
        from utils.coco import evaluate_coco_json

        pred_json = save_dir / f"{Path(weights).stem}_predictions.json"
        pred_json.write_text(json.dumps(json_out))
        LOGGER.info(f"Saved {len(json_out)} predictions to {pred_json}")
        evaluate_coco_json(pred_json, data, result, self.coco_iou_types)

    # ------------------------------------------------------------------------------------------ prediction
    def data_names(self, data: str) -> dict[int, str]:
        from utils.data.dataset_config import check_dataset

        return check_dataset(data, autodownload=False)["names"]  # names only: never download a set for them

    @classmethod
    def add_predict_arguments(cls, p: argparse.ArgumentParser) -> None:
        from utils.tasks.detect.predictor import add_detection_predict_arguments

        add_detection_predict_arguments(p)

    def predict_settings(self, opt: argparse.Namespace) -> dict:
        """detect.py's NMS: one label per box (upstream's predict setting), optional class filter."""
        return {"conf_thres": opt.conf_thres, "iou_thres": opt.iou_thres, "max_det": opt.max_det,
                "classes": opt.classes, "agnostic": opt.agnostic_nms, "multi_label": False}

    def to_original(self, det: torch.Tensor, input_hw: tuple[int, int], shape0: tuple[int, int],
                    content_hw: tuple[int, int] | None = None) -> ImageResult:
        """Boxes (n, 6) scaled from the letterboxed input to the original image."""
        return ImageResult(boxes=self.boxes_to_original(det, content_hw or input_hw, shape0))

    @staticmethod
    def boxes_to_original(det: torch.Tensor, content_hw: tuple[int, int], shape0: tuple[int, int]) -> torch.Tensor:
        """The (n, 6) rows with their boxes mapped through the letterbox onto the original image (a copy)."""
        det = det[:, :6].clone()
        scale_boxes(tuple(content_hw), det[:, :4], shape0)
        return det

    def renderer(self, opt: argparse.Namespace, names: dict[int, str], save_dir: Path, model: Any) -> Any:
        from utils.tasks.detect.predictor import DetectRenderer

        return DetectRenderer(opt, names, save_dir)

    def new_metric(self, names: dict[int, str], save_dir: Path, plots: bool = False, **opts: Any) -> DetMetric:
        return DetMetric(names, save_dir, plots=plots, **opts)

    def fitness(self, figures: dict[str, float]) -> float:
        # weights for the leading figures (box P, R, mAP50, mAP50-95, and a subclass's own after them)
        return float(sum(w * figures.get(n, 0.0) for n, w in zip(self.metric_names, self.fitness_weights)))

    # ------------------------------------------------------------------------------------------ hooks
    def on_train_start(self, ctx: TrainContext) -> None:
        labels = np.concatenate(ctx.dataset.labels, 0) if len(ctx.dataset.labels) else np.zeros((0, 5))
        if ctx.main and not ctx.cfg.noplots:
            try:
                from utils.plots import plot_labels

                plot_labels(labels, list(ctx.names.values()), ctx.save_dir)
            except Exception as e:  # noqa: BLE001 - plots are a courtesy, never a reason to stop training
                LOGGER.warning(f"WARNING ⚠️ label plots failed: {e}")
        if ctx.main and not ctx.cfg.noautoanchor:
            from utils.tasks.detect.autoanchor import check_anchors

            check_anchors(ctx.dataset, model=ctx.model, thr=ctx.hyp["anchor_t"], imgsz=ctx.imgsz)
        ctx.model.half().float()  # round anchors to fp16 precision, as they will be stored

    def on_epoch_start(self, ctx: TrainContext, epoch: int) -> None:
        close = ctx.cfg.close_mosaic
        if close > 0 and epoch >= ctx.cfg.epochs - close and ctx.dataset.mosaic:
            ctx.dataset.close_mosaic()  # a resumed run closes it again at its first epoch past the mark
            LOGGER.info(f"Closing dataloader mosaic: the last {min(close, ctx.cfg.epochs)} epochs train on single "
                        "images")
        if ctx.cfg.image_weights:
            self._resample_by_class_weights(ctx)

    @staticmethod
    def _resample_by_class_weights(ctx: TrainContext) -> None:
        """--image-weights: draw this epoch's images with weights that favour classes of low validation mAP."""
        ds, nc = ctx.dataset, ctx.nc
        maps = np.zeros(nc) if ctx.maps is None else ctx.maps
        labels = [lb[:, 0].astype(int) for lb in ds.labels]
        counts = np.bincount(np.concatenate(labels), minlength=nc).astype(float) if labels else np.ones(nc)
        cw = (1.0 / np.maximum(counts, 1)) * (1 - maps) ** 2 / nc
        iw = np.array([cw[lb].sum() if len(lb) else cw.min() for lb in labels])
        ds.indices = np.random.choice(len(ds.labels), size=len(ds.labels), p=iw / iw.sum())

    def plot_train_batch(self, batch: dict, fname: Path, names: dict[int, str] | None = None) -> None:
        from utils.plots import plot_images

        plot_images(batch["img"], batch["targets"], batch["paths"], fname, names=names)

    def plot_val_batch(self, batch: dict, preds: list, save_dir: Path, index: int,
                       names: dict[int, str] | None = None) -> None:
        from utils.plots import plot_images

        plot_images(batch["img"], batch["targets"], batch["paths"], save_dir / f"val_batch{index}_labels.jpg",
                    names=names)
        out = [torch.cat((torch.full((len(p), 1), i, device=p.device), p[:, 5:6], p[:, :4], p[:, 4:5]), 1)
               for i, p in enumerate(preds)]
        rows = torch.cat(out, 0) if out else torch.zeros((0, 7))
        if len(rows):  # predictions are xyxy pixels; plot_images takes xywh
            from utils.boxes import xyxy2xywh

            rows[:, 2:6] = xyxy2xywh(rows[:, 2:6])
        plot_images(batch["img"], rows[:, :7], batch["paths"], save_dir / f"val_batch{index}_pred.jpg", names=names)


register(TaskEntry(name="detect", task=DetectionTask, scripts=Scripts("train.py", "val.py", "detect.py"),
                   upstream_meta={"eval_tail": 1}, upstream_outputs=1))
