"""The classification dataset: an ImageFolder tree (root/{train,val,test}/{class}/image) and its DataLoader.

Class indices come from the sorted class folders of root/train when it exists (else of the split itself), so a val
split that lacks a class keeps the training indices; images in a folder that is not a class are skipped with a warning.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from utils.data.formats import is_image_file
from utils.data.imageio import imread
from utils.data.loader import hwc_bgr_to_chw_rgb, seeded_loader, stack_for_transfer
from utils.log import LOGGER
from utils.tasks.classify.transforms import center_crop, train_transform

MAX_LOAD_RETRIES = 10


def class_folders(split: str | Path) -> list[str]:
    """Sorted class-folder names of a split (hidden folders ignored)."""
    split = Path(split)
    if not split.is_dir():
        raise FileNotFoundError(f"{split} is not a folder of class folders")
    return sorted(d.name for d in split.iterdir() if d.is_dir() and not d.name.startswith("."))


def class_names_for(split: str | Path) -> list[str]:
    """The class list that indexes `split`: that of the sibling train/ folder when there is one."""
    train = Path(split).parent / "train"
    return class_folders(train if train.is_dir() else split)


def scan_image_folder(split: str | Path, classes: list[str]) -> list[tuple[str, int]]:
    """(file, class index) for every image under split/{class}/ (recursive, sorted as torchvision's ImageFolder)."""
    split, samples = Path(split), []
    index = {c: i for i, c in enumerate(classes)}
    for c in class_folders(split):
        if c not in index:
            LOGGER.warning(f"WARNING ⚠️ {split / c}: not a class of this dataset ({', '.join(classes)}), skipped")
            continue
        for root, _, files in sorted(os.walk(split / c, followlinks=True)):
            samples += [(os.path.join(root, f), index[c]) for f in sorted(files) if is_image_file(f)]
    return samples


def read_bgr(file: str) -> np.ndarray | None:
    """cv2.imread as upstream reads (EXIF orientation applied by OpenCV); our reader for paths it cannot open."""
    im = cv2.imread(file)
    return im if im is not None else imread(file)


class ClassifyDataset(Dataset):
    """(CHW RGB uint8 tensor, class index) pairs; augmented crops when training, upstream's centre crop otherwise."""

    def __init__(self, root: str | Path, imgsz: int = 224, augment: bool = False, hyp: dict | None = None,
                 cache: str | None = None, prefix: str = ""):
        self.root, self.imgsz, self.augment, self.hyp = Path(root), int(imgsz), augment, dict(hyp or {})
        self.classes = class_names_for(self.root)
        self.samples = scan_image_folder(self.root, self.classes)
        if not self.samples:
            raise FileNotFoundError(f"{prefix}no images found in {self.root}/<class>/ for classes {self.classes}")
        self.labels = np.array([j for _, j in self.samples], dtype=np.int64)
        self.cache_ram = cache in ("ram", True)
        self.ims: list[np.ndarray | None] = [None] * len(self.samples)
        self.bad = 0  # images that failed to load mid-training (replaced by another)
        counts = np.bincount(self.labels, minlength=len(self.classes))
        LOGGER.info(f"{prefix}{self.root}: {len(self.samples)} images in {len(self.classes)} classes "
                    f"({', '.join(f'{c} {n}' for c, n in zip(self.classes, counts))})")

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, i: int) -> np.ndarray:
        im = self.ims[i]
        if im is None:
            im = read_bgr(self.samples[i][0])
            if im is None:
                raise OSError(f"cannot read {self.samples[i][0]}")
            if self.cache_ram:
                self.ims[i] = im
        return im

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        for _ in range(MAX_LOAD_RETRIES):
            try:
                im = self._load(i)
                break
            except OSError as e:  # a file removed or damaged since the scan: keep training on another one
                self.bad += 1
                LOGGER.warning(f"WARNING ⚠️ {e}; using another image")
                i = int(np.random.randint(len(self.samples)))
        else:
            raise OSError(f"{MAX_LOAD_RETRIES} images in a row could not be read under {self.root}")
        im = train_transform(im, self.imgsz, self.hyp) if self.augment else center_crop(im, self.imgsz)
        return hwc_bgr_to_chw_rgb(np.ascontiguousarray(im)), int(self.samples[i][1])

    @staticmethod
    def collate_fn(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images B,3,H,W, labels B)."""
        ims, labels = zip(*batch)
        return stack_for_transfer(ims), torch.tensor(labels, dtype=torch.int64)


def create_classify_dataloader(path: str | Path, imgsz: int, batch_size: int, augment: bool = False,
                               hyp: dict | None = None, cache: str | None = None, rank: int = -1, workers: int = 8,
                               shuffle: bool = False, seed: int = 0,
                               prefix: str = "") -> tuple[DataLoader, ClassifyDataset]:
    """A seeded DataLoader over a ClassifyDataset (DistributedSampler when rank != -1)."""
    if path is None:  # check_classify_data leaves train None for a root without train/ (enough for val.py)
        raise FileNotFoundError(f"{prefix}the dataset has no train/ folder of class folders")
    dataset = ClassifyDataset(path, imgsz, augment=augment, hyp=hyp, cache=cache, prefix=prefix)
    return seeded_loader(dataset, batch_size, workers, shuffle, rank, seed, ClassifyDataset.collate_fn), dataset


BUILTIN = {"shapes-cls": {"hyp": "hyp.shapes-cls.yaml"}}  # generated sets --data can name, and their advice
# v7.0's classify/train.py fetches any other bare name as <name>.zip from this release (imagenette160, mnist, cifar10,
# ...); the archive holds <name>/train/<class>/... and <name>/val/<class>/...
NAMED_SETS_URL = "https://github.com/ultralytics/yolov5/releases/download/v1.0/{name}.zip"
NAMED_SETS = ("imagenette", "imagenette160", "imagenette320", "imagewoof", "imagewoof160", "imagewoof320", "mnist",
              "mnist160", "fashion-mnist", "cifar10", "cifar100")


def _fetch_named_set(name: str) -> Path:
    """Download and unpack the archive v7.0 names for a bare dataset name into DOWNLOADS_DIR; returns its folder."""
    from utils.data.fetch import fetch, parse_download
    from utils.paths import DOWNLOADS_DIR

    root = DOWNLOADS_DIR / name
    url = NAMED_SETS_URL.format(name=name)
    fetch(parse_download(url, root, name, str(root)), root, {}, name, [str(root)])
    return root


def check_classify_data(data: str | Path, autodownload: bool = True) -> dict:
    """An ImageFolder root (a path, a name under DATASETS_DIR or DOWNLOADS_DIR, 'shapes-cls', or a name v7.0
    downloads such as imagenette160) -> {path, train, val, names, nc}.

    val is root/test when it exists, else root/val, as upstream; names are the sorted class folders of train/ (of the
    evaluation split when the root has no train/, e.g. a validation-only copy).
    """
    from utils.data.dataset_config import DatasetError
    from utils.paths import DATASETS_DIR, DOWNLOADS_DIR

    if isinstance(data, dict):
        return data
    name = str(data)
    root = next((p for p in (Path(name), DATASETS_DIR / name, DOWNLOADS_DIR / name) if p.is_dir()), None)
    if root is None and name == "imagenet":
        raise DatasetError(f"imagenet: {DOWNLOADS_DIR / name} not found; ImageNet is not downloaded automatically "
                           f"(image-net.org needs an account): see data/ImageNet.yaml for the folder layout")
    if root is None and name in NAMED_SETS and autodownload:
        root = _fetch_named_set(name)
    if name in BUILTIN:
        from utils.tasks.classify import synthetic as synthetic_cls

        root = DATASETS_DIR / name
        ours = not root.exists() or (root / synthetic_cls.MARKER).is_file()  # never replace a user's own folder
        if ours and not synthetic_cls.shapes_cls_up_to_date(root):
            LOGGER.info(f"{name}: generating the synthetic classification set in {root} ...")
            synthetic_cls.generate_shapes_cls(root)
    if root is None:
        raise DatasetError(f"{name}: dataset folder not found (give a folder with train/ and val/ or test/ class "
                           f"folders, a name under {DATASETS_DIR} or {DOWNLOADS_DIR}, 'shapes-cls', or a name to "
                           f"download such as {', '.join(NAMED_SETS[:3])})")
    root = root.resolve()
    train, val = root / "train", next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if val is None:
        raise DatasetError(f"{root}: no val/ or test/ folder of class folders")
    names = class_folders(train if train.is_dir() else val)
    if not names:
        raise DatasetError(f"{root}: no class folders in {train if train.is_dir() else val}")
    return {"path": str(root), "train": str(train) if train.is_dir() else None, "val": str(val),
            "names": dict(enumerate(names)), "nc": len(names)}
