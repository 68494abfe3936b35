"""The detection dataset (images + YOLO box or polygon labels, augmented as YOLOv5 does) and its DataLoader."""

from __future__ import annotations

import hashlib
import os
import random
from multiprocessing.pool import ThreadPool
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from utils.data.augment import (
    augment_hsv,
    flip_lr,
    flip_ud,
    letterbox_sample,
    load_mosaic,
    mixup,
    normalize_boxes,
    place_labels,
    random_perspective,
    random_scale_crop,
)
from utils.data.dataset_config import DatasetError
from utils.data.imageio import imread
from utils.data.labels import NUM_THREADS, img2label_paths, labels_dir_for, scan_labels
from utils.data.loader import (
    AUTO_CACHE_BYTES,
    AUTO_CACHE_SHARE,
    available_memory,
    find_images,
    hwc_bgr_to_chw_rgb,
    seeded_loader,
    stack_for_transfer,
)
from utils.data.sample import IGNORE_INDEX, Sample, new_sample
from utils.log import LOGGER
from utils.paths import DATASETS_DIR

MAX_LOAD_RETRIES = 10
CACHE_KEYS = ("hash", "results", "msgs", "version")
# Augmentation values used when a key is missing from the given hyp (scratch-low values).
# scale_crop: probability of the random scale + crop recipe (random_scale_crop) for a non-mosaic sample; scale_min,
# scale_max: its scale range; crop_h, crop_w: its crop as fractions of the image size.
DEFAULT_AUG = dict(hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, degrees=0.0, translate=0.1, scale=0.5, shear=0.0,
                   perspective=0.0, flipud=0.0, fliplr=0.5, mosaic=1.0, mixup=0.0, copy_paste=0.0, scale_crop=0.0,
                   scale_min=0.5, scale_max=2.0, crop_h=1.0, crop_w=1.0)


class SampleLoadError(RuntimeError):
    """A file that passed the scan can't be used now (deleted or damaged since, or a bad mask); `file` names it,
    `image` is the image whose sample it belongs to."""

    def __init__(self, file: str, reason: str, image: str | None = None):
        super().__init__(reason)
        self.file, self.image = file, image or file


def _cache_path(path, images_dir: str = "images", labels_dir: str = "labels") -> Path:
    """Where the label scan cache lives: next to a .txt list, or as `<labels dir>.cache`."""
    p = Path(path[0] if isinstance(path, (list, tuple)) else path)
    if p.is_file() and p.suffix.lower() == ".txt":
        return p.with_suffix(".cache")
    return labels_dir_for(p if p.is_dir() else p.parent, images_dir, labels_dir).with_suffix(".cache")


def _npy_dir(im_file: str, images_dir: str = "images") -> Path:
    """Disk-cache folder for an image: `<dataset root>/.cache_npy` (root = the folder holding `images/`),
    else a per-folder directory under DATASETS_DIR; never the folder of the images themselves."""
    head, sep, _ = im_file.rpartition(f"{os.sep}{images_dir}{os.sep}")
    if sep and os.access(head, os.W_OK):
        return Path(head) / ".cache_npy"
    key = hashlib.md5((head if sep else os.path.dirname(im_file)).encode()).hexdigest()[:12]
    return DATASETS_DIR / ".cache_npy" / key


class YoloDataset(Dataset):
    """Images with YOLO box (or polygon) labels; mosaic/mixup/perspective/HSV/flip augmentation when `augment`.

    Items are dicts: img (uint8 CHW RGB tensor), targets ((n, 6) [0, cls, x, y, w, h] normalised), path and shapes
    (letterbox info, None when augmented); collate_fn batches them into img, targets, paths, shapes. `get_sample`
    exposes the augmented Sample (utils/data/sample.py), with aligned pixel polygons, for datasets that need masks.
    images_dir / labels_dir: the path components that pair an image with its label file (data YAML keys).
    """

    mosaic_shuffle = True  # upstream's segmentation loader keeps the mosaic tiles in draw order
    image_interp = cv2.INTER_LINEAR  # resampling of training images (nearest keeps pixel values, for tests)
    mask_fill = IGNORE_INDEX  # what geometric ops put in a mask where no source pixel lands
    cache_bytes_factor = 1.0  # RAM a cached sample takes relative to its resized image
    supports_quad = True  # collate_fn4 tiles images; datasets with masks can't follow it

    def __init__(self, path, img_size: int = 640, batch_size: int = 16, augment: bool = False, hyp: dict | None = None,
                 rect: bool = False, image_weights: bool = False, cache_images: str | None = None,
                 single_cls: bool = False, stride: int = 32, pad: float = 0.0, min_items: int = 0, prefix: str = "",
                 nc: int | None = None, images_dir: str = "images", labels_dir: str = "labels"):
        self.img_size, self.augment, self.image_weights = img_size, augment, image_weights
        self.hyp = {**DEFAULT_AUG, **(hyp or {})}
        self.rect = False if image_weights else rect
        # a rectangular batch shape and a square mosaic don't mix; the switch lives in shared memory so that
        # close_mosaic() reaches persistent DataLoader workers, which hold their own copy of the dataset
        self._mosaic_switch = torch.tensor(augment and not self.rect).share_memory_()
        self.mosaic_border = [-img_size // 2, -img_size // 2]
        self.scale_crop = augment and not self.rect and self.hyp["scale_crop"] > 0
        self.crop_shape = self._crop_shape()
        self.stride, self.path, self.prefix = stride, path, prefix
        self.images_dir, self.labels_dir = images_dir, labels_dir
        self.failed_files: set[str] = set()
        self.load_failures = 0

        im_files = find_images(path, prefix)
        cache = scan_labels(im_files, img2label_paths(im_files, images_dir, labels_dir),
                            _cache_path(path, images_dir, labels_dir), prefix, nc,
                            warn_missing_dirs=not self.labels_optional())
        nf, nm, ne, ncorrupt, _ = cache["results"]
        self.counts = dict(found=nf, missing=nm, empty=ne, corrupt=ncorrupt)
        self.im_files = [f for f in im_files if f in cache]  # corrupt images are left out of everything
        if not self.im_files:
            raise DatasetError(f"{prefix}No usable images in {path}: all {len(im_files)} are corrupt "
                             "(see the warnings above)")
        self.labels = [cache[f][0] for f in self.im_files]
        self.shapes = np.array([cache[f][1] for f in self.im_files], dtype=np.float64).reshape(-1, 2)  # (w, h)
        self.segments = [list(cache[f][2]) for f in self.im_files]
        if augment and nf == 0 and not self.labels_optional():
            LOGGER.warning(f"{prefix}WARNING ⚠️ no label files found for {path}: every image is a background")

        if min_items:
            keep = [i for i, lb in enumerate(self.labels) if len(lb) >= min_items]
            LOGGER.info(f"{prefix}{len(self.labels) - len(keep)}/{len(self.labels)} images filtered "
                        f"(fewer than {min_items} labels)")
            self._reorder(np.array(keep, dtype=int))
        if single_cls:
            for lb in self.labels:
                lb[:, 0] = 0
        self.label_files = img2label_paths(self.im_files, images_dir, labels_dir)

        n = len(self.im_files)
        self.batch = np.floor(np.arange(n) / batch_size).astype(int)
        self.n, self.indices = n, list(range(n))
        self.batch_shapes = None
        if self.rect:
            self._make_rect_batches(batch_size, stride, pad)

        self.ims: list = [None] * n
        self.im_hw0: list = [None] * n
        self.im_hw: list = [None] * n
        self.npy_files = [_npy_dir(f, images_dir) / f"{Path(f).stem}_{hashlib.md5(f.encode()).hexdigest()[:10]}.npy"
                          for f in self.im_files]
        self.prepare()
        self.cache_mode = cache_images if cache_images in ("ram", "disk", "auto") else None
        if self.cache_mode == "auto":
            self.cache_mode = "ram" if self.small_enough_to_cache(prefix) else None
        elif self.cache_mode == "ram" and not self.check_cache_ram(prefix=prefix):
            self.cache_mode = None
        if self.cache_mode:
            self._cache_images()

    @property
    def mosaic(self) -> bool:
        """Whether augmented samples are drawn as 4-image mosaics (with the hyp's probability)."""
        return bool(self._mosaic_switch)

    @mosaic.setter
    def mosaic(self, on: bool) -> None:
        self._mosaic_switch.fill_(bool(on))

    def close_mosaic(self) -> None:
        """Single letterboxed images (still affine- and colour-augmented) from the next sample on, in every worker."""
        self.mosaic = False

    # --- hooks for datasets with more label kinds ----------------------------------------------------------------
    def labels_optional(self) -> bool:
        """Whether a missing label file means 'no box annotation' rather than 'no objects' (sets with masks)."""
        return False

    def prepare(self) -> None:
        """Called once the image list and its order are final, before images are cached."""

    def labelled(self, i: int) -> tuple[bool, bool]:
        """(has box labels, has a semantic mask) of image i."""
        return True, False

    def mosaic_pool(self, i: int) -> list[int]:
        """Indices to draw mosaic and mixup partners of image i from."""
        return self.indices

    def load_semantic(self, i: int, hw0: tuple[int, int], hw: tuple[int, int]) -> np.ndarray | None:
        """Image i's per-pixel class mask at size hw (its image is hw0 on disk); None for sets without masks."""
        return None

    def _crop_shape(self) -> tuple[int, int]:
        """random_scale_crop's output (h, w); other samples are img_size squares, so a non-square crop needs
        scale_crop 1."""
        hyp, s = self.hyp, self.img_size
        shape = (int(round(hyp["crop_h"] * s)), int(round(hyp["crop_w"] * s)))
        if self.scale_crop and shape != (s, s) and (hyp["scale_crop"] < 1 or hyp["mosaic"] > 0):
            raise ValueError(f"hyp crop_h={hyp['crop_h']} crop_w={hyp['crop_w']} makes {shape[0]}x{shape[1]} crops, "
                             f"but with scale_crop={hyp['scale_crop']} and mosaic={hyp['mosaic']} other samples are "
                             f"{s}x{s}: use crop_h = crop_w = 1.0, or scale_crop 1.0 with mosaic 0.0")
        return shape

    # --- bookkeeping -------------------------------------------------------------------------------------------
    def _reorder(self, idx: np.ndarray) -> None:
        self.im_files = [self.im_files[i] for i in idx]
        self.labels = [self.labels[i] for i in idx]
        self.segments = [self.segments[i] for i in idx]
        self.shapes = self.shapes[idx]

    def _make_rect_batches(self, batch_size: int, stride: int, pad: float) -> None:
        """Sort by aspect ratio and give each batch the smallest stride-multiple shape that fits its images."""
        ar = self.shapes[:, 1] / self.shapes[:, 0]  # h / w
        order = ar.argsort()
        self._reorder(order)
        self.label_files = img2label_paths(self.im_files, self.images_dir, self.labels_dir)
        ar = ar[order]
        nb = int(self.batch[-1]) + 1
        shapes = [[1.0, 1.0]] * nb
        for i in range(nb):
            ari = ar[self.batch == i]
            if ari.max() < 1:
                shapes[i] = [ari.max(), 1.0]
            elif ari.min() > 1:
                shapes[i] = [1.0, 1.0 / ari.min()]
        self.batch_shapes = (np.ceil(np.array(shapes) * self.img_size / stride + pad).astype(int) * stride)  # (h, w)

    def ram_cache_bytes(self) -> float:
        """The RAM that caching all resized images needs, estimated from a sample of 30."""
        k = min(self.n, 30)
        b = 0
        for i in random.Random(0).sample(range(self.n), k=k):  # its own generator: the global one drives augmentation
            im = imread(self.im_files[i])
            if im is None:
                continue
            r = self.img_size / max(im.shape[:2])
            b += im.nbytes * r**2
        return b * self.n / max(k, 1) * self.cache_bytes_factor

    def small_enough_to_cache(self, prefix: str = "") -> bool:
        """Whether a set cached without --cache fits the automatic cache's budget (and saying so when it does)."""
        need, avail = self.ram_cache_bytes(), available_memory()
        ok = need <= AUTO_CACHE_BYTES and (avail is None or need <= AUTO_CACHE_SHARE * avail)
        if ok:
            LOGGER.info(f"{prefix}caching {self.n} images in RAM ({need / 2**20:.0f} MB, a small set; --cache off "
                        f"to not)")
        return ok

    def check_cache_ram(self, safety_margin: float = 0.1, prefix: str = "") -> bool:
        """Estimate the RAM that caching all resized images needs and compare to what's free."""
        need = self.ram_cache_bytes()
        avail = available_memory()
        ok = avail is None or need * (1 + safety_margin) < avail
        if not ok:
            LOGGER.warning(f"{prefix}WARNING ⚠️ not caching images in RAM: {need / 2**30:.1f} GB needed with "
                           f"{int(safety_margin * 100)}% margin, {avail / 2**30:.1f} GB available")
        return ok

    def _cache_images(self) -> None:
        from tqdm import tqdm

        fn = self._cache_to_disk if self.cache_mode == "disk" else self._cache_in_ram
        gb = 0.0
        with ThreadPool(NUM_THREADS) as pool:
            pbar = tqdm(enumerate(pool.imap(self._try(fn), range(self.n))), total=self.n,
                        bar_format="{l_bar}{bar:10}{r_bar}", disable=self.n < 2)
            for i, x in pbar:
                if self.cache_mode == "disk":
                    gb += self.npy_files[i].stat().st_size if x and self.npy_files[i].exists() else 0
                elif x is not None:
                    gb += x
                pbar.desc = f"{self.prefix}Caching images ({gb / 2**30:.1f}GB {self.cache_mode})"
            pbar.close()

    def _try(self, fn):
        def wrapped(i):
            try:
                return fn(i)
            except (SampleLoadError, OSError) as e:
                self._note_failure(e, getattr(e, "file", self.im_files[i]))
                return None
        return wrapped

    def _cache_in_ram(self, i: int) -> int:
        """Keep image i resized in RAM; returns the bytes it takes."""
        self.ims[i], self.im_hw0[i], self.im_hw[i] = self.load_image(i)
        return self.ims[i].nbytes

    def _cache_to_disk(self, i: int) -> bool:
        f = self.npy_files[i]
        if not f.exists():
            im = imread(self.im_files[i])
            if im is None:
                raise SampleLoadError(self.im_files[i], "file missing or unreadable")
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_name(f.name + f".tmp{os.getpid()}.npy")
            np.save(tmp, im, allow_pickle=False)
            os.replace(tmp, f)
        return True

    def _note_failure(self, e: Exception, file: str) -> None:
        self.load_failures += 1
        if file not in self.failed_files:
            self.failed_files.add(file)
            LOGGER.warning(f"{self.prefix}WARNING ⚠️ {file}: could not be loaded ({e}); using another image instead")

    # --- loading -----------------------------------------------------------------------------------------------
    def load_image(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """Image i resized so its long side is img_size: (im BGR, (h0, w0), (h, w)). Raises SampleLoadError."""
        if self.ims[i] is not None:
            return self.ims[i], self.im_hw0[i], self.im_hw[i]
        f, npy = self.im_files[i], self.npy_files[i]
        im = None
        if self.cache_mode == "disk" and npy.exists():
            try:
                if not os.path.exists(f) or npy.stat().st_mtime >= os.stat(f).st_mtime:  # stale copies are re-read
                    im = np.load(npy, allow_pickle=False)
            except (OSError, ValueError):
                im = None
        if im is None:
            im = imread(f)
            if im is None:
                raise SampleLoadError(f, "file unreadable" if os.path.exists(f) else "file no longer exists")
        h0, w0 = im.shape[:2]
        r = self.img_size / max(h0, w0)
        if r != 1:
            # INTER_AREA keeps downscaled validation images faithful; training tolerates the faster LINEAR.
            interp = self.image_interp if (self.augment or r > 1) else cv2.INTER_AREA
            im = cv2.resize(im, (int(w0 * r), int(h0 * r)), interpolation=interp)
        return im, (h0, w0), im.shape[:2]

    def load_sample(self, i: int) -> Sample:
        """Image i resized as load_image does, with its mask and its labels in its pixels."""
        img, hw0, (h, w) = self.load_image(i)
        has_boxes, has_semantic = self.labelled(i)
        return new_sample(img, semantic=self.load_semantic(i, hw0, (h, w)), has_boxes=has_boxes,
                          has_semantic=has_semantic, **place_labels(self.labels[i], self.segments[i], w, h))

    def load_letterboxed(self, i: int) -> Sample:
        """Image i letterboxed to its batch shape (img_size, or its rect batch's shape), with mask and labels."""
        img, (h0, w0), (h, w) = self.load_image(i)
        has_boxes, has_semantic = self.labelled(i)
        sample = new_sample(img, semantic=self.load_semantic(i, (h0, w0), (h, w)), has_boxes=has_boxes,
                            has_semantic=has_semantic)
        shape = self.batch_shapes[self.batch[i]] if self.rect else self.img_size
        sample, ratio, pad = letterbox_sample(sample, shape, auto=False, scaleup=self.augment,
                                              interp=self.image_interp, mask_fill=self.mask_fill)
        # labels placed from their stored normalised form in one step, as YOLOv5 does (the same float rounding)
        sample.update(place_labels(self.labels[i], self.segments[i], ratio[0] * w, ratio[1] * h, pad[0], pad[1]))
        sample["shapes"] = (h0, w0), ((h / h0, w / w0), pad)
        return sample

    def get_sample(self, index: int) -> Sample:
        """The augmented sample of image `index`: boxes normalised xywh, polygons in pixels."""
        hyp = self.hyp
        if self.mosaic and random.random() < hyp["mosaic"]:
            sample = load_mosaic(self, index, shuffle=self.mosaic_shuffle)
            if random.random() < hyp["mixup"]:
                other = load_mosaic(self, random.choice(self.mosaic_pool(index)), shuffle=self.mosaic_shuffle)
                sample = mixup(sample, other, mask_fill=self.mask_fill)
        elif self.scale_crop and random.random() < hyp["scale_crop"]:
            sample = random_scale_crop(self.load_sample(index), scale=(hyp["scale_min"], hyp["scale_max"]),
                                       crop=self.crop_shape, interp=self.image_interp, mask_fill=self.mask_fill)
        else:
            sample = self.load_letterboxed(index)
            if self.augment:
                sample = random_perspective(sample, degrees=hyp["degrees"], translate=hyp["translate"],
                                            scale=hyp["scale"], shear=hyp["shear"], perspective=hyp["perspective"],
                                            interp=self.image_interp, mask_fill=self.mask_fill)
        sample = normalize_boxes(sample)
        if self.augment:
            sample = augment_hsv(sample, hgain=hyp["hsv_h"], sgain=hyp["hsv_s"], vgain=hyp["hsv_v"])
            if random.random() < hyp["flipud"]:
                sample = flip_ud(sample)
            if random.random() < hyp["fliplr"]:
                sample = flip_lr(sample)
        return sample

    def get_sample_safe(self, index: int) -> tuple[int, Sample]:
        """get_sample, substituting a random other image when a file fails to load; returns (index used, sample)."""
        for _ in range(MAX_LOAD_RETRIES):
            try:
                return index, self.get_sample(index)
            except SampleLoadError as e:
                self._note_failure(e, e.file)
                self.failed_files.add(e.image)
                good = [i for i in self.indices if self.im_files[i] not in self.failed_files] or self.indices
                index = random.choice(good)
        raise RuntimeError(f"{self.prefix}{MAX_LOAD_RETRIES} images in a row failed to load; last: "
                           f"{self.im_files[index]}. Is the dataset folder still there?")

    def __len__(self) -> int:
        return len(self.im_files)

    def __getitem__(self, index: int) -> dict:
        index, sample = self.get_sample_safe(self.indices[index])
        return self.item(index, sample)

    def item(self, index: int, sample: Sample) -> dict:
        """What the DataLoader gets for one sample: tensors for the batch, the path and letterbox shapes."""
        return {"img": hwc_bgr_to_chw_rgb(sample["img"]), "targets": targets_tensor(sample["cls"], sample["boxes"]),
                "path": self.im_files[index], "shapes": sample.get("shapes")}

    @staticmethod
    def collate_fn(batch: list[dict]) -> dict:
        """Stack images; targets get their image index in column 0."""
        targets = [b["targets"] for b in batch]
        for i, t in enumerate(targets):
            t[:, 0] = i
        return {"img": stack_for_transfer([b["img"] for b in batch]), "targets": torch.cat(targets, 0),
                "paths": tuple(b["path"] for b in batch), "shapes": tuple(b["shapes"] for b in batch)}

    @staticmethod
    def collate_fn4(batch: list[dict]) -> dict:
        """Quad collate: every 4 images become one of twice the size (a 2x2 tile, or the first image upscaled);
        a last group of fewer than 4 images is upscaled image by image."""
        im = [b["img"] for b in batch]
        label = [b["targets"] for b in batch]
        ims, labels, paths, shps = [], [], [], []
        dy = torch.tensor([[0.0, 0, 0, 1, 0, 0]])
        dx = torch.tensor([[0.0, 0, 1, 0, 0, 0]])
        half = torch.tensor([[1.0, 1, 0.5, 0.5, 0.5, 0.5]])

        def upscaled(k):
            big = F.interpolate(im[k].unsqueeze(0).float(), scale_factor=2.0, mode="bilinear", align_corners=False)
            ims.append(big[0].round().clamp(0, 255).to(im[k].dtype))
            labels.append(label[k].clone())
            paths.append(batch[k]["path"])
            shps.append(batch[k]["shapes"])

        for j in range(0, len(im), 4):
            if j + 4 > len(im):
                for k in range(j, len(im)):
                    upscaled(k)
            elif random.random() < 0.5:
                upscaled(j)
            else:  # j top-left, j+1 below it, j+2 top-right, j+3 bottom-right
                ims.append(torch.cat((torch.cat((im[j], im[j + 1]), 1), torch.cat((im[j + 2], im[j + 3]), 1)), 2))
                lb = torch.cat((label[j], label[j + 1] + dy, label[j + 2] + dx, label[j + 3] + dy + dx), 0)
                labels.append(lb * half)
                paths.append(batch[j]["path"])
                shps.append(batch[j]["shapes"])
        for i, lb in enumerate(labels):
            lb[:, 0] = i
        return {"img": stack_for_transfer(ims), "targets": torch.cat(labels, 0), "paths": tuple(paths),
                "shapes": tuple(shps)}


def targets_tensor(cls: np.ndarray, boxes: np.ndarray) -> torch.Tensor:
    """(n, 6) float32 [image index (0 until collated), cls, box] from a sample's classes and boxes."""
    out = torch.zeros((len(cls), 6))
    if len(cls):
        out[:, 1] = torch.from_numpy(np.ascontiguousarray(cls, dtype=np.float32))
        out[:, 2:] = torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32))
    return out


def create_dataloader(path, imgsz: int, batch_size: int, stride: int, single_cls: bool = False, hyp: dict | None = None,
                      augment: bool = False, cache=None, pad: float = 0.0, rect: bool = False, rank: int = -1,
                      workers: int = 8, image_weights: bool = False, quad: bool = False, prefix: str = "",
                      shuffle: bool = False, seed: int = 0, min_items: int = 0,
                      nc: int | None = None, images_dir: str = "images", labels_dir: str = "labels",
                      dataset_cls: type = YoloDataset,
                      dataset_kw: dict | None = None) -> tuple[DataLoader, YoloDataset]:
    """A DataLoader over a YoloDataset or subclass (DistributedSampler when rank != -1, seeded, persistent workers)."""
    if rect and shuffle:
        LOGGER.warning("WARNING ⚠️ --rect is incompatible with DataLoader shuffle, setting shuffle=False")
        shuffle = False
    if quad and not dataset_cls.supports_quad:
        LOGGER.warning(f"WARNING ⚠️ --quad is not supported by {dataset_cls.__name__} (its masks can't be tiled), "
                       "ignoring it")
        quad = False
    dataset = dataset_cls(path, imgsz, batch_size, augment=augment, hyp=hyp, rect=rect, image_weights=image_weights,
                          cache_images=cache if cache in ("ram", "disk", "auto") else "ram" if cache is True else None,
                          single_cls=single_cls, stride=int(stride), pad=pad, min_items=min_items, prefix=prefix,
                          nc=nc, images_dir=images_dir, labels_dir=labels_dir, **(dataset_kw or {}))
    # image weights resample dataset.indices each epoch: workers must be re-created to see it
    loader = seeded_loader(dataset, batch_size, workers, shuffle, rank, seed,
                           dataset_cls.collate_fn4 if quad else dataset_cls.collate_fn, persistent=not image_weights)
    loader.quad = quad  # whether batches really are 2x2 tiles: the Trainer scales the loss by 4 only then
    return loader, dataset
