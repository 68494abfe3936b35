"""Inference sources for detect/predict: image and video files (LoadImages) and live streams (LoadStreams)."""

from __future__ import annotations

import glob
import math
import os
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import cv2
import numpy as np

from utils.data.formats import IMG_FORMATS, VID_FORMATS, is_image_file, is_video_file
from utils.data.imageio import imread, letterbox
from utils.downloads import safe_download
from utils.errors import UserError
from utils.log import LOGGER

STREAM_SCHEMES = ("rtsp", "rtmp", "http", "https")
STREAM_OPEN_TIMEOUT_MS = 10_000


class StreamError(UserError, ValueError):
    """A live stream (webcam index or URL) could not be opened."""


def _is_stream_url(s: str) -> bool:
    """A URL with a streaming scheme that does not name an image or video file."""
    s = s.strip()
    if s.isnumeric():
        return True
    parsed = urlparse(s)
    return parsed.scheme.lower() in STREAM_SCHEMES and bool(parsed.netloc) and not (
        is_image_file(parsed.path) or is_video_file(parsed.path))


def is_media_url(s: str) -> bool:
    """An http(s) URL whose path names an image or video file (fetched to a local file, as upstream's detect.py)."""
    parsed = urlparse(str(s).strip())
    return parsed.scheme.lower() in ("http", "https") and bool(parsed.netloc) and (
        is_image_file(parsed.path) or is_video_file(parsed.path))


def fetch_media(url: str, folder: Path) -> str:
    """Download an image/video URL into folder (keeping its file name); one-line FileNotFoundError when offline."""
    name = Path(unquote(urlparse(url.strip()).path)).name
    try:
        return str(safe_download(url.strip(), Path(folder) / name, min_bytes=1, timeout=30))
    except (OSError, ValueError) as e:  # URLError, HTTPError, timeouts and cut transfers are all OSErrors here
        reason = getattr(e, "reason", e)
        raise FileNotFoundError(f"{url}: could not download ({reason}); offline? download it and pass the file "
                                f"path") from None


def _list_lines(file: str | Path) -> list[str]:
    """Non-empty, non-comment lines of a text list."""
    lines = Path(file).read_text(encoding="utf-8", errors="replace").splitlines()
    return [x.strip() for x in lines if x.strip() and not x.strip().startswith("#")]


def is_stream_source(source) -> bool:
    """True for a webcam index, a stream URL (rtsp/rtmp/http(s), not a media file) or a .streams/.txt URL list."""
    if isinstance(source, (list, tuple)):
        return False
    s = str(source).strip()
    if _is_stream_url(s):
        return True
    if s.lower().endswith(".streams"):
        return True
    if s.lower().endswith(".txt") and os.path.isfile(s):
        try:  # a .txt of image paths goes to LoadImages; only a list of streams is a stream source
            lines = _list_lines(s)
        except OSError:
            return False
        return bool(lines) and all(_is_stream_url(x) for x in lines)
    return False


def to_model_input(im0: np.ndarray, img_size, stride: int, auto: bool, transforms) -> np.ndarray:
    """One BGR image -> letterboxed CHW RGB contiguous uint8 (or whatever the task's `transforms` makes of it): the
    preprocessing of the predict scripts and the hub alike."""
    if transforms is not None:
        return transforms(im0)
    im = letterbox(im0, img_size, stride=stride, auto=auto)[0]
    return np.ascontiguousarray(im.transpose((2, 0, 1))[::-1])


def _expand(p: str, base: Path | None = None, downloads: Path | None = None) -> list[str]:
    """One source entry -> absolute file paths (glob, directory, file, media URL fetched into `downloads`);
    FileNotFoundError when it doesn't exist."""
    if downloads is not None and is_media_url(p):
        return [fetch_media(p, downloads / str(len(list(downloads.iterdir()))))]  # a folder each: names may repeat
    p = os.path.expanduser(str(p))
    if base is not None and not os.path.isabs(p) and not os.path.exists(p) and (base / p).exists():
        p = str(base / p)  # entries of a .txt list may be relative to the list's folder
    if "*" in p:
        return sorted(glob.glob(os.path.abspath(p), recursive=True))
    if os.path.isdir(p):
        return sorted(glob.glob(os.path.join(os.path.abspath(p), "*.*")))
    if os.path.isfile(p):
        return [os.path.abspath(p)]
    raise FileNotFoundError(f"{p} does not exist")


class LoadImages:
    """Iterate images then videos: yields (path, im CHW RGB uint8, im0 BGR, vid_cap or None, s)."""

    def __init__(self, path, img_size=640, stride: int = 32, auto: bool = True, transforms=None, vid_stride: int = 1):
        """Collect files from a file, directory, glob, .txt list of paths, or a list of any of these."""
        if isinstance(path, (str, Path)) and str(path).lower().endswith(".txt") and os.path.isfile(path):
            txt = Path(path)
            entries, base = _list_lines(txt), txt.parent
            if not entries:
                raise FileNotFoundError(f"{path}: the list is empty")
        else:
            entries = sorted(map(str, path)) if isinstance(path, (list, tuple)) else [str(path)]
            base = None
        # URLs of media files are fetched to a temporary folder that lives (and is removed) with this loader
        self._downloads = tempfile.TemporaryDirectory(prefix="yolov5-source-") if any(
            is_media_url(e) for e in entries) else None
        where = Path(self._downloads.name) if self._downloads else None
        files = [f for e in entries for f in _expand(e, base, where)]
        images = [f for f in files if is_image_file(f)]
        videos = [f for f in files if is_video_file(f)]
        if not images and not videos:
            raise FileNotFoundError(f"No images or videos found in {path}. Supported formats are images: "
                                    f"{', '.join(IMG_FORMATS)}; videos: {', '.join(VID_FORMATS)}")
        self.img_size = img_size
        self.stride = stride
        self.auto = auto
        self.transforms = transforms
        self.vid_stride = max(int(vid_stride), 1)
        self.files = images + videos
        self.nf = len(self.files)
        self.video_flag = [False] * len(images) + [True] * len(videos)
        self.mode = "image"
        self.cap = None
        self.frame = 0
        self.frames = 0
        self.skipped = 0  # unreadable images and videos, reported as warnings
        self.count = 0

    def __len__(self) -> int:
        """Number of files (a video counts once)."""
        return self.nf

    def __iter__(self):
        """Restart from the first file."""
        self._release()
        self.count = 0
        self.skipped = 0
        return self

    def _release(self) -> None:
        if self.cap is not None:
            self.cap.release()
        self.cap = None

    def _open_video(self, path: str) -> bool:
        self.cap = cv2.VideoCapture(path)
        if not self.cap.isOpened():
            self._release()
            return False
        self.frame = 0
        total = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frames = math.ceil(total / self.vid_stride) if total > 0 else 0
        return True

    def _next_frame(self, path: str):
        if self.frame > 0:  # skip vid_stride - 1 frames between the ones we return: 0, s, 2s, ...
            for _ in range(self.vid_stride - 1):
                if not self.cap.grab():
                    return None
        ok, im0 = self.cap.read()
        return im0 if ok and im0 is not None else None

    def __next__(self):
        """Next (path, im, im0, vid_cap, s); unreadable files are skipped with a warning."""
        while self.count < self.nf:
            path = self.files[self.count]
            if not self.video_flag[self.count]:
                self.mode = "image"
                self.count += 1
                im0 = imread(path)
                if im0 is None:
                    self.skipped += 1
                    LOGGER.warning(f"WARNING ⚠️ image {self.count}/{self.nf} {path}: cannot read or decode, skipped")
                    continue
                s = f"image {self.count}/{self.nf} {path}: "
                im = to_model_input(im0, self.img_size, self.stride, self.auto, self.transforms)
                return path, im, im0, None, s

            self.mode = "video"
            if self.cap is None and not self._open_video(path):
                self.count += 1
                self.skipped += 1
                LOGGER.warning(f"WARNING ⚠️ video {self.count}/{self.nf} {path}: cannot open, skipped")
                continue
            im0 = self._next_frame(path)
            if im0 is None:  # end of the video, possibly before the frame count its header claimed
                if self.frames and self.frame < self.frames:
                    LOGGER.info(f"video {self.count + 1}/{self.nf} {path}: ended at frame {self.frame}, "
                                f"header announced {self.frames}")
                self._release()
                self.count += 1
                continue
            self.frame += 1
            total = self.frames if self.frames >= self.frame else "?"
            s = f"video {self.count + 1}/{self.nf} (frame {self.frame}/{total}) {path}: "
            im = to_model_input(im0, self.img_size, self.stride, self.auto, self.transforms)
            return path, im, im0, self.cap, s
        self._release()
        if self.skipped and self.count == self.nf:
            LOGGER.warning(f"WARNING ⚠️ {self.skipped} of {self.nf} files could not be read and were skipped")
            self.count += 1  # report once, even if __next__ is called again
        raise StopIteration


class LoadStreams:
    """Read webcams/URLs in daemon threads; yields (sources, im (n,3,h,w) uint8 RGB, im0 list BGR, None, '')."""

    def __init__(self, sources="0", img_size=640, stride: int = 32, auto: bool = True, transforms=None,
                 vid_stride: int = 1):
        """Open every stream (a webcam index, a URL, or a .txt/.streams list of them); StreamError if one fails."""
        src = str(sources)
        self.sources = _list_lines(src) if os.path.isfile(src) else [src]
        if not self.sources:
            raise StreamError(f"{src}: no streams listed")
        self.img_size, self.stride, self.transforms = img_size, stride, transforms
        self.vid_stride = max(int(vid_stride), 1)
        n = len(self.sources)
        self.imgs: list[np.ndarray | None] = [None] * n
        self.fps = [30.0] * n
        self.frames = [0] * n
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        for i, s in enumerate(self.sources):
            cap = self._open(s)
            if cap is None:
                self.close()
                raise StreamError(f"stream {i + 1}/{n}: failed to open {s}")
            ok, im = cap.read()
            if not ok or im is None:
                cap.release()
                self.close()
                raise StreamError(f"stream {i + 1}/{n}: opened {s} but could not read a frame")
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.fps[i] = fps if fps and math.isfinite(fps) and fps > 0 else 30.0
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.frames[i] = count if count > 0 else 0  # 0 = endless
            self.imgs[i] = im
            t = threading.Thread(target=self._update, args=(i, cap, s), daemon=True)
            self.threads.append(t)
            LOGGER.info(f"stream {i + 1}/{n}: {s} opened ({w}x{h} at {self.fps[i]:.0f} FPS)")
            t.start()
        shapes = {letterbox(x, img_size, stride=stride, auto=auto)[0].shape for x in self.imgs}
        self.rect = len(shapes) == 1  # a batch needs one shape: fall back to square when streams differ
        self.auto = auto and self.rect
        if not self.rect:
            LOGGER.warning("WARNING ⚠️ streams have different shapes: using square letterbox for the batch")
        self.mode = "stream"
        self.count = -1

    @staticmethod
    def _open(s: str):
        """An opened cv2.VideoCapture, or None."""
        target = int(s) if s.isnumeric() else s
        try:
            if isinstance(target, int):
                cap = cv2.VideoCapture(target)
            else:  # bounded wait: an unreachable host must fail in seconds, not hang the run
                cap = cv2.VideoCapture(target, cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_OPEN_TIMEOUT_MS])
        except cv2.error:
            return None
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _update(self, i: int, cap, source: str) -> None:
        """Keep self.imgs[i] at the newest frame (every vid_stride-th one) until the stream ends."""
        n, retried = 0, False
        while cap.isOpened() and not getattr(self, "_closed", False):
            if not cap.grab():
                if retried:
                    break
                LOGGER.warning(f"WARNING ⚠️ stream {i + 1} {source} unresponsive, reopening once")
                cap.release()
                cap = self._open(source) or cv2.VideoCapture()
                retried = True
                continue
            n += 1
            if n % self.vid_stride == 0:
                ok, im = cap.retrieve()
                if ok and im is not None:
                    with self._lock:
                        self.imgs[i] = im
                    retried = False
            if self.frames[i] and n >= self.frames[i]:
                break
            time.sleep(0.0)  # let the other stream threads and the consumer run
        cap.release()
        LOGGER.info(f"stream {i + 1} {source}: ended")

    def __iter__(self):
        """Iterate until every stream has ended."""
        self.count = -1
        return self

    def __next__(self):
        """Newest frame of every stream, letterboxed and stacked."""
        self.count += 1
        if not any(t.is_alive() for t in self.threads):
            self.close()
            raise StopIteration
        with self._lock:
            im0 = [x.copy() for x in self.imgs]
        if self.transforms is not None:
            im = np.stack([self.transforms(x) for x in im0])
        else:
            im = np.stack([letterbox(x, self.img_size, stride=self.stride, auto=self.auto)[0] for x in im0])
            im = np.ascontiguousarray(im[..., ::-1].transpose((0, 3, 1, 2)))
        return self.sources, im, im0, None, ""

    def __len__(self) -> int:
        """Number of streams (the frame count is open-ended)."""
        return len(self.sources)

    def close(self) -> None:
        """Ask the reader threads to stop."""
        self._closed = True
