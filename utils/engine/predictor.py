"""Inference over files, folders, videos and streams (detect.py); segment/classify predictors subclass it."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.boxes import scale_boxes, xyxy2xywh
from utils.device import select_device, time_sync
from utils.downloads import attempt_download
from utils.export.backend import load_backend, predict_imgsz
from utils.log import LOGGER, colorstr
from utils.paths import increment_path


def add_predict_arguments(p: argparse.ArgumentParser, weights: str, source: str, project: str,
                          imgsz: int = 640, max_det: int = 1000) -> argparse.ArgumentParser:
    """YOLOv5 v7.0's detect.py flags."""
    p.add_argument("--weights", nargs="+", type=str, default=[weights], help="model path(s)")
    p.add_argument("--source", type=str, default=source, help="file/dir/glob/.txt list/video/webcam index/URL")
    p.add_argument("--data", type=str, default="", help="(optional) dataset.yaml for class names")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[imgsz], help="inference size h,w")
    p.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=max_det, help="maximum detections per image")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--view-img", action="store_true", help="show results")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-crop", action="store_true", help="save cropped prediction boxes")
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    p.add_argument("--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3")
    p.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    p.add_argument("--augment", action="store_true", help="augmented inference")
    p.add_argument("--visualize", action="store_true", help="visualize features")
    p.add_argument("--project", default=project, help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--line-thickness", default=3, type=int, help="bounding box thickness (pixels)")
    p.add_argument("--hide-labels", default=False, action="store_true", help="hide labels")
    p.add_argument("--hide-conf", default=False, action="store_true", help="hide confidences")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference (CUDA only)")
    p.add_argument("--vid-stride", type=int, default=1, help="video frame-rate stride")
    return p


class Predictor:
    """Loads a model once, then runs `predict_source` over any source the loaders understand."""

    post_name = "NMS"  # what the post-processing step is called in the speed line
    task = "detect"  # the task of the models it runs

    def __init__(self, opt: argparse.Namespace):
        self.opt = opt
        self.device = select_device(opt.device)
        weights = opt.weights[0] if isinstance(opt.weights, (list, tuple)) else opt.weights
        self.model = load_backend(attempt_download(weights), device=self.device, fuse=True, task=self.task)
        self.half = opt.half and self.device.type == "cuda"
        if self.half:
            self.model.half()
        self.names = self.model.names
        if getattr(opt, "data", ""):
            from utils.data.dataset_config import check_dataset

            self.names = check_dataset(opt.data, autodownload=False)["names"]
        self.stride = max(int(self.model.stride.max()), 32)
        sz = opt.imgsz * 2 if len(opt.imgsz) == 1 else opt.imgsz
        self.imgsz = [max(int(np.ceil(x / self.stride) * self.stride), self.stride) for x in sz]
        self.imgsz, self.auto = predict_imgsz(self.model, self.imgsz)  # a static export: its size, square padded

    def dataset(self):
        """The loader for --source: streams for webcams and URLs, files otherwise."""
        from utils.data.sources import LoadImages, LoadStreams, is_stream_source

        src = str(self.opt.source)
        if is_stream_source(src):
            return LoadStreams(src, img_size=self.imgsz, stride=self.stride, auto=self.auto,
                               vid_stride=self.opt.vid_stride), True
        return LoadImages(src, img_size=self.imgsz, stride=self.stride, auto=self.auto,
                          vid_stride=self.opt.vid_stride), False

    def forward(self, im: torch.Tensor, visualize: Path | bool = False):
        """The model's raw inference output."""
        return self.model(im, augment=self.opt.augment, visualize=visualize)

    def postprocess(self, out) -> list[torch.Tensor]:
        """NMS over the raw output; subclasses change what comes out."""
        from utils.nms import non_max_suppression

        pred = out[0] if isinstance(out, (list, tuple)) else out
        return non_max_suppression(pred, self.opt.conf_thres, self.opt.iou_thres, self.opt.classes,
                                   self.opt.agnostic_nms, max_det=self.opt.max_det)

    def run(self) -> Path:
        """Predict over the whole source, saving annotated media, labels and crops; returns the run folder."""
        opt = self.opt
        save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
        (save_dir / "labels" if opt.save_txt else save_dir).mkdir(parents=True, exist_ok=True)
        dataset, webcam = self.dataset()
        save_img = not opt.nosave and not str(opt.source).endswith(".txt")
        writers: dict[int, tuple[str, cv2.VideoWriter]] = {}
        dt, seen, shape = [0.0, 0.0, 0.0], 0, None
        for path, im, im0s, vid_cap, s in dataset:
            t0 = time_sync(self.device)
            im = torch.from_numpy(np.ascontiguousarray(im)).to(self.device)
            im = (im.half() if self.half else im.float()) / 255
            if im.ndim == 3:
                im = im[None]
            im = im.contiguous(memory_format=torch.channels_last)  # the layout load_model gives the weights
            t1 = time_sync(self.device)
            vis = increment_path(save_dir / Path(path if isinstance(path, str) else "stream").stem, mkdir=True) \
                if opt.visualize else False
            out = self.forward(im, visualize=vis)
            t2 = time_sync(self.device)
            preds = self.postprocess(out)
            t3 = time_sync(self.device)
            shape = tuple(im.shape)
            for i, det in enumerate(preds):
                seen += 1
                if webcam:
                    p, im0, frame, s = Path(path[i]), im0s[i].copy(), dataset.count, s + f"{i}: "
                else:
                    p, im0, frame = Path(path), im0s.copy(), getattr(dataset, "frame", 0)
                stem = p.stem if dataset.mode == "image" else f"{p.stem}_{frame}"
                s += "%gx%g " % im.shape[2:]
                im0 = self.handle(det, im, im0, save_dir, stem, p)
                s += self.describe(det)
                if opt.view_img:
                    self.show(str(p), im0)
                if save_img:
                    self.save(save_dir, p, im0, dataset.mode, vid_cap, writers, i)
            dt = [dt[0] + t1 - t0, dt[1] + t2 - t1, dt[2] + t3 - t2]
            LOGGER.info(f"{s}, {(t2 - t1) * 1e3:.1f}ms")
        for _, w in writers.values():
            w.release()
        if seen:
            t = tuple(x / seen * 1e3 for x in dt)
            LOGGER.info(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms {self.post_name} per image "
                        f"at shape {shape}" % t)
        if opt.save_txt or save_img:
            n = len(list(save_dir.glob("labels/*.txt")))
            extra = f"\n{n} label{'s' * (n != 1)} saved to {save_dir / 'labels'}" if opt.save_txt else ""
            LOGGER.info(f"Results saved to {colorstr('bold', str(save_dir))}{extra}")
        return save_dir

    def describe(self, det: torch.Tensor) -> str:
        """One image's results for the log line: counts per class."""
        counts = Counter(int(c) for c in det[:, 5].tolist())
        return ", ".join(f"{n} {self.names.get(c, c)}{'s' * (n > 1)}" for c, n in sorted(counts.items())) or \
            "(no detections)"

    def handle(self, det: torch.Tensor, im: torch.Tensor, im0: np.ndarray, save_dir: Path, stem: str,
               p: Path) -> np.ndarray:
        """Scale one image's detections to it, write labels and crops, and draw them; returns the drawing."""
        from utils.plots import Annotator, colors, save_one_box

        opt = self.opt
        annotator = Annotator(im0, line_width=opt.line_thickness, example=str(self.names))
        if len(det):
            det[:, :4] = scale_boxes(im.shape[2:], det[:, :4], im0.shape).round()
            gn = torch.tensor(im0.shape)[[1, 0, 1, 0]]
            crop_src = im0.copy() if opt.save_crop else None
            for *xyxy, conf, cls in reversed(det[:, :6].tolist()):
                c = int(cls)
                if opt.save_txt:
                    xywh = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gn).view(-1).tolist()
                    line = (c, *xywh, conf) if opt.save_conf else (c, *xywh)
                    with open(save_dir / "labels" / f"{stem}.txt", "a") as f:
                        f.write(("%g " * len(line)).rstrip() % line + "\n")
                label = None if opt.hide_labels else (self.names.get(c, str(c)) if opt.hide_conf
                                                      else f"{self.names.get(c, str(c))} {conf:.2f}")
                annotator.box_label(xyxy, label, color=colors(c, True))
                if opt.save_crop:
                    save_one_box(xyxy, crop_src, file=save_dir / "crops" / self.names.get(c, str(c)) / f"{stem}.jpg",
                                 BGR=True)
        return annotator.result()

    def show(self, name: str, im0: np.ndarray) -> None:
        """Show a window when a display exists; headless machines just skip it."""
        try:
            cv2.imshow(name, im0)
            cv2.waitKey(1)
        except cv2.error:
            LOGGER.warning("WARNING ⚠️ --view-img needs a display; skipping")
            self.opt.view_img = False

    def save(self, save_dir: Path, p: Path, im0: np.ndarray, mode: str, vid_cap, writers: dict, i: int) -> None:
        """Write an annotated image, or append the frame to its video."""
        if mode == "image":
            cv2.imwrite(str(save_dir / p.name), im0)
            return
        target = str((save_dir / p.name).with_suffix(".mp4"))
        if i not in writers or writers[i][0] != target:
            if i in writers:
                writers[i][1].release()
            fps = (vid_cap.get(cv2.CAP_PROP_FPS) if vid_cap else 0) or 30
            h, w = im0.shape[:2]
            writers[i] = (target, cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h)))
        writers[i][1].write(im0)
