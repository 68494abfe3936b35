"""Standalone validation (val.py, segment/val.py): load weights, build the val loader, run the shared Evaluator."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from utils.device import select_device
from utils.downloads import attempt_download
from utils.engine.evaluator import EvalResult, Evaluator
from utils.engine.task import Task
from utils.export.backend import load_backend, val_imgsz
from utils.log import LOGGER, colorstr
from utils.paths import increment_path


def add_val_arguments(p: argparse.ArgumentParser, data: str, weights: str, project: str) -> argparse.ArgumentParser:
    """YOLOv5 v7.0's val.py flags."""
    p.add_argument("--data", type=str, default=data, help="dataset.yaml path")
    p.add_argument("--weights", nargs="+", type=str, default=[weights], help="model path(s)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="inference size (pixels)")
    p.add_argument("--conf-thres", type=float, default=0.001, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="maximum detections per image")
    p.add_argument("--task", default="val", choices=["train", "val", "test", "speed"], help="split, or speed")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers")
    p.add_argument("--single-cls", action="store_true", help="treat as single-class dataset")
    p.add_argument("--augment", action="store_true", help="augmented inference (TTA)")
    p.add_argument("--verbose", action="store_true", help="report mAP by class")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-hybrid", action="store_true", help="save label+prediction hybrid results to *.txt")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-json", action="store_true", help="save a COCO-JSON results file")
    p.add_argument("--project", default=project, help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference (CUDA only)")
    return p


def validate(opt: argparse.Namespace, task: Task) -> EvalResult:
    """Run one validation as val.py does and return its figures."""
    if opt.conf_thres > 0.001:
        LOGGER.warning(f"WARNING ⚠️ confidence threshold {opt.conf_thres} > 0.001 produces invalid results")
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    (save_dir / "labels" if opt.save_txt or opt.save_hybrid else save_dir).mkdir(parents=True, exist_ok=True)
    device = select_device(opt.device, batch_size=opt.batch_size)
    weights = opt.weights[0] if isinstance(opt.weights, (list, tuple)) else opt.weights
    if isinstance(opt.weights, (list, tuple)) and len(opt.weights) > 1:
        LOGGER.warning("WARNING ⚠️ ensembles are not supported; validating the first of --weights")
    model = load_backend(attempt_download(weights), device=device, fuse=True, task=task.name)
    data = task.check_data(opt.data)
    names = {0: "item"} if opt.single_cls else data["names"]
    from utils.engine.trainer import check_img_size

    gs = max(int(model.stride.max()), 32) if hasattr(model, "stride") else 32
    imgsz, square = val_imgsz(model, check_img_size(opt.imgsz, gs))  # a static export: its own size, square
    speed = opt.task == "speed"
    split = "val" if speed else opt.task
    if not data.get(split):
        raise FileNotFoundError(f"{opt.data}: no '{split}' split defined")
    loader_cfg = argparse.Namespace(imgsz=imgsz, single_cls=opt.single_cls, cache=None, rect=False, workers=opt.workers,
                                    image_weights=False, quad=False, seed=0)
    loader, _ = task.build_dataloader(data[split], loader_cfg, {}, opt.batch_size, gs,
                                      mode="speed" if speed or square else "val")
    post_kw = {"conf_thres": 0.25 if speed else opt.conf_thres, "iou_thres": 0.45 if speed else opt.iou_thres,
               "max_det": opt.max_det, "agnostic": opt.single_cls, "hybrid": opt.save_hybrid}
    json_out = [] if opt.save_json and not speed else None
    class_map = None
    if json_out is not None:
        from utils.coco import coco_class_map

        class_map = coco_class_map(data)  # class index -> the annotation file's category id (COCO's 1..90)
    metric_kw = {"single_cls": opt.single_cls, "save_txt": opt.save_txt or opt.save_hybrid,
                 "save_conf": opt.save_conf, "json_out": json_out,
                 "class_map": class_map}
    ev = Evaluator(task, loader, names, save_dir, plots=not speed, verbose=opt.verbose, half=opt.half,
                   augment=opt.augment, post_kw=post_kw, metric_kw=metric_kw)
    result = ev(model)
    if json_out is not None:
        from utils.coco import evaluate_coco_json

        pred_json = save_dir / f"{Path(weights).stem}_predictions.json"
        pred_json.write_text(json.dumps(json_out))
        LOGGER.info(f"Saved {len(json_out)} predictions to {pred_json}")
        evaluate_coco_json(pred_json, data, result)
    LOGGER.info(f"Results saved to {colorstr('bold', str(save_dir))}")
    return result
