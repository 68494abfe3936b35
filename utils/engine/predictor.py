"""One inference loop for every task's predict script (detect.py, segment/predict.py, classify/predict.py).

The Predictor owns what is common: loading the weights, the sources (files, folders, videos, streams), batching,
timing and the speed line, showing, saving images and writing videos. The task answers what differs: its flags, the
frame preprocessing, post-processing (the same `postprocess` validation uses) and a Renderer that describes, draws
and writes one image's results.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from utils.checkpoint import first_weights, local_weights
from utils.device import keep_freed_memory, select_device, time_sync
from utils.downloads import attempt_download
from utils.engine.task import ImageResult, Task, add_task_arguments, check_model_task
from utils.engine.validate import tta_allowed
from utils.errors import ConfigError
from utils.export.backend import backend_kind, input_memory_format, load_backend, predict_imgsz
from utils.export.fastest import fastest_cpu_model
from utils.log import LOGGER, colorstr
from utils.paths import increment_path


class Renderer(Protocol):
    """A task's handling of one image's results (see utils/tasks/<task>/predictor.py)."""

    def describe(self, result: ImageResult) -> str:
        """The log text for one image, e.g. '2 persons, 1 tie'."""

    def render(self, result: ImageResult, im0: np.ndarray, stem: str) -> np.ndarray:
        """Write one image's results (already in its pixels: Task.to_original) as text/crops; return the drawing."""

    def close(self) -> None:
        """Work once every image is done (e.g. join the saved frames into a video)."""


def add_predict_arguments(p: argparse.ArgumentParser, task: Task | type | list, weights: str, source: str, project: str,
                          imgsz: int = 640) -> argparse.ArgumentParser:
    """The flags every predict script takes (YOLOv5 v7.0 names), then the task's own."""
    p.add_argument("--weights", nargs="+", type=str, default=[weights], help="model path(s)")
    p.add_argument("--source", type=str, default=source, help="file/dir/glob/.txt list/video/webcam index/URL")
    p.add_argument("--data", type=str, default="", help="(optional) dataset for class names")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[imgsz], help="inference size h,w")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--view-img", action="store_true", help="show results")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    p.add_argument("--augment", action="store_true", help="augmented inference")
    p.add_argument("--visualize", action="store_true", help="visualize features")
    p.add_argument("--project", default=project, help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference (CUDA only)")
    p.add_argument("--vid-stride", type=int, default=1, help="video frame-rate stride")
    add_task_arguments(p, task, "add_predict_arguments")
    return p


class Predictor:
    """Loads a model once for a task, then `run()` predicts over --source and returns the run folder."""

    def __init__(self, opt: argparse.Namespace, task: Task):
        if any(x < 1 for x in opt.imgsz) or len(opt.imgsz) > 2:
            raise ConfigError(f"--imgsz takes one or two positive sizes (h w), got {opt.imgsz}")
        if opt.vid_stride < 1:
            raise ConfigError(f"--vid-stride must be at least 1, got {opt.vid_stride}")
        self.opt, self.task = opt, task
        self.device = select_device(opt.device)
        keep_freed_memory(self.device)  # on a CPU, large images reuse their activation memory instead of faulting it in
        weights = first_weights(opt.weights)
        self.model = load_backend(local_weights(opt.weights), device=self.device, fuse=True)
        check_model_task(self.model, task, weights)
        self.half = opt.half and self.device.type == "cuda"
        if self.half:
            self.model.half()
        self.names = task.data_names(opt.data) if opt.data else self.model.names
        self.stride = max(int(self.model.stride.max()), 32)
        sz = opt.imgsz * 2 if len(opt.imgsz) == 1 else opt.imgsz
        self.imgsz = [max(int(np.ceil(x / self.stride) * self.stride), self.stride) for x in sz]
        self.imgsz, self.auto = predict_imgsz(self.model, self.imgsz)  # a static export: its size, square padded
        self.augment = tta_allowed(task, opt.augment)
        several = isinstance(opt.weights, (list, tuple)) and len(opt.weights) > 1  # an ensemble stays in PyTorch
        if self.device.type == "cpu" and backend_kind(weights) == "pytorch" and not (self.augment or opt.visualize
                                                                                     or several):
            # the same fp32 model through whichever installed runtime runs it fastest here (utils/export/fastest.py)
            self.model = fastest_cpu_model(self.model, Path(attempt_download(weights)), self.imgsz)
        self.memory_format = input_memory_format(self.model)
        self.post_kw = task.predict_settings(opt)

    def dataset(self) -> tuple[Any, bool]:
        """The loader for --source (streams for webcams and URLs, files otherwise) and whether it is a stream."""
        from utils.data.sources import LoadImages, LoadStreams, is_stream_source

        src = str(self.opt.source)
        kw = {"img_size": self.imgsz, "stride": self.stride, "auto": self.auto, "vid_stride": self.opt.vid_stride,
              "transforms": self.task.source_transform(self.imgsz, self.stride)}
        if is_stream_source(src):
            return LoadStreams(src, **kw), True
        return LoadImages(src, **kw), False

    def run(self) -> Path:
        """Predict over the whole source, saving annotated media and the task's text outputs; returns the run folder."""
        opt = self.opt
        save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
        (save_dir / "labels" if opt.save_txt else save_dir).mkdir(parents=True, exist_ok=True)
        renderer = self.task.renderer(opt, self.names, save_dir, self.model)
        dataset, webcam = self.dataset()
        save_img = not opt.nosave and not str(opt.source).endswith(".txt")
        writers: dict[int, tuple[str, cv2.VideoWriter]] = {}
        dt, seen, shape = [0.0, 0.0, 0.0], 0, None
        for path, im, im0s, vid_cap, s in dataset:
            t0 = time_sync(self.device)
            im = torch.from_numpy(np.ascontiguousarray(im)).to(self.device)
            im = self.task.normalize((im.half() if self.half else im.float()) / 255)
            if im.ndim == 3:
                im = im[None]
            im = im.contiguous(memory_format=self.memory_format)
            t1 = time_sync(self.device)
            vis = increment_path(save_dir / Path(path if isinstance(path, str) else "stream").stem, mkdir=True) \
                if opt.visualize else False
            with torch.inference_mode():
                out = self.model(im, augment=self.augment, visualize=vis)
                t2 = time_sync(self.device)
                results = self.task.postprocess(self.task.split_eval_output(out)[0], **self.post_kw)
            t3 = time_sync(self.device)
            shape = tuple(im.shape)
            for i, result in enumerate(results):
                seen += 1
                if webcam:
                    p, im0, frame, s = Path(path[i]), im0s[i].copy(), dataset.count, s + f"{i}: "
                else:
                    p, im0, frame = Path(path), im0s.copy(), dataset.frame
                stem = p.stem if dataset.mode == "image" else f"{p.stem}_{frame}"
                s += "%gx%g " % im.shape[2:]
                result0 = self.task.to_original(result, tuple(im.shape[2:]), im0.shape[:2])
                im0 = renderer.render(result0, im0, stem)
                s += renderer.describe(result0)
                if opt.view_img:
                    self.show(str(p), im0)
                if save_img:
                    self.save(save_dir, p, im0, dataset.mode, vid_cap, writers, i)
            dt = [dt[0] + t1 - t0, dt[1] + t2 - t1, dt[2] + t3 - t2]
            LOGGER.info(f"{s}, {(t2 - t1) * 1e3:.1f}ms")
        for _, w in writers.values():
            w.release()
        renderer.close()
        if seen:
            t = tuple(x / seen * 1e3 for x in dt)
            LOGGER.info(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms {self.task.post_name} per image "
                        f"at shape {shape}" % t)
        if opt.save_txt or save_img:
            n = len(list(save_dir.glob("labels/*.txt")))
            extra = f"\n{n} label{'s' * (n != 1)} saved to {save_dir / 'labels'}" if opt.save_txt else ""
            LOGGER.info(f"Results saved to {colorstr('bold', str(save_dir))}{extra}")
        return save_dir

    def show(self, name: str, im0: np.ndarray) -> None:
        """Show a window when a display exists; headless machines just skip it."""
        try:
            cv2.imshow(name, im0)
            cv2.waitKey(1)
        except cv2.error:
            LOGGER.warning("WARNING ⚠️ --view-img needs a display; skipping")
            self.opt.view_img = False

    @staticmethod
    def save(save_dir: Path, p: Path, im0: np.ndarray, mode: str, vid_cap, writers: dict, i: int) -> None:
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
