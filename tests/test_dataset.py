"""YoloDataset and create_dataloader: inputs, rect batches, collate, image caches, files vanishing mid-epoch."""

from __future__ import annotations

import os
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from utils.data.loader import (
    CPU_WORKER_NICENESS,
    find_images,
    hwc_bgr_to_chw_rgb,
    seeded_loader,
    stack_for_transfer,
    worker_niceness,
)
from utils.tasks.detect.dataset import YoloDataset, create_dataloader

HYP = dict(hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, degrees=0.0, translate=0.1, scale=0.5, shear=0.0, perspective=0.0,
           flipud=0.0, fliplr=0.5, mosaic=1.0, mixup=0.0, copy_paste=0.0)



def make_data(root: Path, sizes=((40, 80), (80, 40), (60, 60), (30, 90), (90, 30), (50, 70)), split="train") -> Path:
    """Images of the given (h, w) with one box each (class i % 3); returns the images folder."""
    im_dir, lb_dir = root / "images" / split, root / "labels" / split
    im_dir.mkdir(parents=True)
    lb_dir.mkdir(parents=True)
    for i, (h, w) in enumerate(sizes):
        im = np.full((h, w, 3), 114, np.uint8)
        im[h // 4: h // 2, w // 4: w // 2] = (0, 0, 255)
        cv2.imwrite(str(im_dir / f"im{i}.png"), im)
        (lb_dir / f"im{i}.txt").write_text(f"{i % 3} 0.375 0.375 0.25 0.25\n")
    return im_dir


def test_rect_batches_are_stride_multiples_and_fit(tmp_path):
    ds = YoloDataset(make_data(tmp_path), img_size=64, batch_size=2, rect=True, stride=32, pad=0.5)
    assert ds.batch_shapes.shape == (3, 2) and (ds.batch_shapes % 32 == 0).all()
    ar = ds.shapes[:, 1] / ds.shapes[:, 0]
    assert (np.diff(ar) >= 0).all()  # sorted by aspect ratio, labels follow their images
    for k in range(len(ds)):
        item = ds[k]
        img, labels, path = item["img"], item["targets"], item["path"]
        assert tuple(img.shape[1:]) == tuple(ds.batch_shapes[ds.batch[k]])
        assert int(labels[0, 1]) == int(Path(path).stem[2:]) % 3
    assert not ds.mosaic


class _MosaicProbe(torch.utils.data.Dataset):
    """Reports, from inside a DataLoader worker, whether the wrapped dataset draws mosaics."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.ds.mosaic


def test_close_mosaic_reaches_persistent_workers(tmp_path):
    ds = YoloDataset(make_data(tmp_path), img_size=64, batch_size=2, augment=True, hyp=HYP)
    loader = torch.utils.data.DataLoader(_MosaicProbe(ds), batch_size=2, num_workers=1, persistent_workers=True)
    assert [bool(b.all()) for b in loader] == [True, True]
    ds.close_mosaic()
    assert [bool(b.any()) for b in loader] == [False, False]  # the same worker process, which kept its copy
    assert not ds.mosaic


def test_item_format_and_collate(tmp_path):
    ds = YoloDataset(make_data(tmp_path), img_size=64, batch_size=4, augment=True, hyp=HYP)
    random.seed(0)
    batch = [ds[i] for i in range(4)]
    img, labels = batch[0]["img"], batch[0]["targets"]
    assert img.dtype == torch.uint8 and img.shape == (3, 64, 64) and img.is_contiguous()
    assert labels.shape[1] == 6 and (labels[:, 0] == 0).all()
    out = YoloDataset.collate_fn(batch)
    imgs, targets, paths, shps = out["img"], out["targets"], out["paths"], out["shapes"]
    assert imgs.shape == (4, 3, 64, 64) and len(paths) == 4 and len(shps) == 4
    counts = [len(b["targets"]) for b in batch]
    assert targets[:, 0].tolist() == [float(i) for i, n in enumerate(counts) for _ in range(n)]


def test_rgb_channel_order(tmp_path):
    ds = YoloDataset(make_data(tmp_path, sizes=((64, 64),)), img_size=64, batch_size=1)
    img = ds[0]["img"]
    assert img[:, 24, 24].tolist() == [255, 0, 0]  # the BGR red patch comes out as RGB red


def test_chw_rgb_conversion_matches_numpy():
    rng = np.random.default_rng(0)
    im = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for x in (im, im[3:30, 5:40], im[:, ::-1], im[..., :1]):  # contiguous, sliced, negative-stride, one channel
        ref = np.ascontiguousarray(x.transpose((2, 0, 1))[::-1])
        out = hwc_bgr_to_chw_rgb(x)
        assert out.dtype == torch.uint8 and out.is_contiguous() and torch.equal(out, torch.from_numpy(ref))


def test_worker_collate_stacks_into_shared_memory():
    tensors = [torch.full((3, 4, 5), i, dtype=torch.uint8) for i in range(4)]
    assert torch.equal(stack_for_transfer(tensors), torch.stack(tensors))  # in the main process: plain stack
    loader = torch.utils.data.DataLoader(tensors, batch_size=4, num_workers=1, collate_fn=stack_for_transfer)
    out = next(iter(loader))
    assert out.is_shared() and torch.equal(out, torch.stack(tensors))
    floats = [t.float() / 3 for t in tensors]
    out = next(iter(torch.utils.data.DataLoader(floats, batch_size=4, num_workers=1, collate_fn=stack_for_transfer)))
    assert out.dtype == torch.float32 and torch.equal(out, torch.stack(floats))


def test_quad_collate(tmp_path):
    ds = YoloDataset(make_data(tmp_path), img_size=64, batch_size=4)
    batch = [ds[i] for i in range(6)]
    for seed in range(4):  # both branches (tiled and upscaled) get exercised
        random.seed(seed)
        out = YoloDataset.collate_fn4(batch)
        imgs, targets, paths, shapes = out["img"], out["targets"], out["paths"], out["shapes"]
        assert imgs.shape == (3, 3, 128, 128)  # one group of four, plus the last two upscaled one by one
        assert len(paths) == len(shapes) == 3
        assert targets[:, 0].max() == 2 and (targets[:, 2:] <= 1).all() and (targets[:, 2:] >= 0).all()
        assert len(targets) in (3, 6)  # 1 per upscaled image, or 4 from the tile + 2


def test_deleted_file_mid_epoch_is_replaced_not_fatal(tmp_path, log):
    im_dir = make_data(tmp_path)
    for augment in (False, True):
        ds = YoloDataset(im_dir, img_size=64, batch_size=2, augment=augment, hyp=HYP)
        gone = ds.im_files[2]
        if augment:
            os.remove(gone)
        else:
            Path(gone).write_bytes(b"corrupted later")
        random.seed(0)
        paths = [ds[i]["path"] for i in range(len(ds))]
        assert gone not in paths and len(paths) == len(ds)
        assert ds.load_failures >= 1 and gone in ds.failed_files
        assert sum(gone in r.getMessage() and "could not be loaded" in r.getMessage() for r in log.records) >= 1
        log.clear()


def test_all_files_gone_raises_clear_error(tmp_path):
    ds = YoloDataset(make_data(tmp_path), img_size=64, batch_size=2)
    for f in ds.im_files:
        os.remove(f)
    with pytest.raises(RuntimeError, match="failed to load"):
        ds[0]


def test_disk_cache_lives_outside_the_images_folder(tmp_path):
    im_dir = make_data(tmp_path)
    before = sorted(os.listdir(im_dir))
    ds = YoloDataset(im_dir, img_size=64, batch_size=2, cache_images="disk")
    assert sorted(os.listdir(im_dir)) == before
    npys = list((tmp_path / ".cache_npy").glob("*.npy"))
    assert len(npys) == len(ds)
    ref = ds[0]["img"]
    os.remove(ds.im_files[0])  # the cached copy keeps serving the image
    assert torch.equal(ds[0]["img"], ref) and ds.load_failures == 0


def test_ram_cache_and_insufficient_memory(tmp_path, log, monkeypatch):
    im_dir = make_data(tmp_path)
    ds = YoloDataset(im_dir, img_size=64, batch_size=2, cache_images="ram")
    assert ds.cache_mode == "ram" and all(im is not None for im in ds.ims)
    assert max(ds.ims[0].shape[:2]) == 64
    monkeypatch.setattr("utils.tasks.detect.dataset.available_memory", lambda: 1000)
    ds = YoloDataset(im_dir, img_size=64, batch_size=2, cache_images="ram")
    assert ds.cache_mode is None and all(im is None for im in ds.ims)
    assert any("not caching images in RAM" in r.getMessage() for r in log.records)


def test_small_sets_are_cached_without_the_flag(tmp_path, log, monkeypatch):
    from utils.data.loader import LoaderOptions

    # no --cache: "auto", which keeps a small set decoded in RAM and says so in one line
    assert LoaderOptions().cache_for(train=True) == LoaderOptions().cache_for(train=False) == "auto"
    im_dir = make_data(tmp_path)
    ds = YoloDataset(im_dir, img_size=64, batch_size=2, cache_images="auto")
    assert ds.cache_mode == "ram" and all(im is not None for im in ds.ims)
    assert any("caching 6 images in RAM" in r.getMessage() and "--cache off" in r.getMessage() for r in log.records)
    # --cache off (and its spellings) never caches; v7.0's --cache val leaves the training images alone
    for off in ("off", "none", "False"):
        assert LoaderOptions(cache=off).cache_for(train=True) is None
    assert LoaderOptions(cache="val").cache_for(train=True) is None
    assert LoaderOptions(cache="val").cache_for(train=False) == "ram"
    # a set over the budget, in bytes or as a share of free memory, is read from disk as before, silently
    log.clear()
    monkeypatch.setattr("utils.tasks.detect.dataset.AUTO_CACHE_BYTES", 100)
    ds = YoloDataset(im_dir, img_size=64, batch_size=2, cache_images="auto")
    assert ds.cache_mode is None and all(im is None for im in ds.ims)
    assert not any("RAM" in r.getMessage() for r in log.records)
    monkeypatch.setattr("utils.tasks.detect.dataset.AUTO_CACHE_BYTES", 1 << 30)
    monkeypatch.setattr("utils.tasks.detect.dataset.available_memory", lambda: 10_000)
    assert YoloDataset(im_dir, img_size=64, batch_size=2, cache_images="auto").cache_mode is None


def test_txt_list_and_list_of_paths(tmp_path):
    im_dir = make_data(tmp_path)
    names = sorted(os.listdir(im_dir))[:3]
    lst = tmp_path / "train.txt"
    lst.write_text("".join(f"./images/train/{n}\n" for n in names))
    ds = YoloDataset(lst, img_size=64, batch_size=2)
    assert [Path(f).name for f in ds.im_files] == names
    assert (tmp_path / "train.cache").is_file()
    files = find_images([im_dir / names[0], str(im_dir / names[1])])
    assert [Path(f).name for f in files] == names[:2]


def test_single_cls_and_min_items(tmp_path):
    im_dir = make_data(tmp_path)
    (tmp_path / "labels" / "train" / "im0.txt").write_text("")
    ds = YoloDataset(im_dir, img_size=64, batch_size=2, single_cls=True, min_items=1)
    assert len(ds) == 5 and all((lb[:, 0] == 0).all() for lb in ds.labels)
    assert len(ds.label_files) == len(ds.im_files) == len(ds.shapes) == len(ds.segments)


def test_create_dataloader_is_deterministic(tmp_path):
    im_dir = make_data(tmp_path)

    def order(seed):
        loader, ds = create_dataloader(str(im_dir), 64, 2, 32, augment=True, hyp=HYP, workers=0, shuffle=True,
                                       seed=seed)
        return [p for batch in loader for p in batch["paths"]], loader, ds

    a, loader, ds = order(0)
    b, _, _ = order(0)
    assert a == b and sorted(a) == sorted(ds.im_files)
    assert order(1)[0] != a  # the seed matters
    assert loader.num_workers == 0 and loader.batch_size == 2
    batch = next(iter(loader))
    imgs, targets = batch["img"], batch["targets"]
    assert imgs.shape == (2, 3, 64, 64) and targets.shape[1] == 6


def test_create_dataloader_workers_and_distributed(tmp_path):
    import torch.distributed as dist
    from torch.utils.data.distributed import DistributedSampler

    im_dir = make_data(tmp_path)
    loader, _ = create_dataloader(str(im_dir), 64, 4, 32, workers=1, rect=True, shuffle=True, quad=True)
    assert loader.num_workers == 1 and loader.persistent_workers
    imgs = next(iter(loader))["img"]
    assert imgs.shape[0] == 1 and imgs.shape[2] % 32 == 0  # quad: 4 images -> 1 (tiled or upscaled)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        loader, _ = create_dataloader(str(im_dir), 64, 2, 32, rank=0, workers=0, shuffle=True)
        assert isinstance(loader.sampler, DistributedSampler)
        assert len(list(loader)) == 3
    finally:
        dist.destroy_process_group()


def test_loader_options_from_flags_and_data_yaml_dirs(tmp_path):
    from utils.data.loader import LoaderOptions
    from utils.engine.config import TrainConfig
    from utils.tasks import registry
    from utils.tasks.detect.task import DetectionTask
    from utils.tasks.segment.config import SegmentConfig

    cfg = SegmentConfig(imgsz=64, cache="ram", workers=0, seed=3, mask_ratio=2, no_overlap=True)
    opts = LoaderOptions.from_config(cfg, {"images_dir": "leftImg8bit", "labels_dir": "boxes",
                                           "semantic": {"names": {0: "road"}}})
    assert (opts.imgsz, opts.cache, opts.workers, opts.seed) == (64, "ram", 0, 3)
    assert (opts.images_dir, opts.labels_dir) == ("leftImg8bit", "boxes")
    assert not hasattr(opts, "mask_ratio") and not hasattr(opts, "semantic")  # a task's own options stay with it
    assert LoaderOptions.from_config(TrainConfig()).cache is None and LoaderOptions().images_dir == "images"
    # a set whose image and label trees have other names, through a task's build_dataloader
    root = tmp_path / "city"
    make_data(root)
    (root / "images").rename(root / "leftImg8bit")
    (root / "labels").rename(root / "boxes")
    loader, ds = DetectionTask().build_dataloader(str(root / "leftImg8bit" / "train"), opts, HYP, 2, 32, "train")
    assert ds.label_files[0].startswith(str(root / "boxes")) and ds.counts["found"] == 6
    assert (root / "boxes" / "train.cache").is_file() and ds.cache_mode == "ram"
    batch = next(iter(loader))
    assert set(batch) == {"img", "targets", "paths", "shapes"} and batch["img"].shape == (2, 3, 64, 64)
    seg = registry.entry("segment").build(cfg)  # the task, built once from the flags
    _, seg_ds = seg.build_dataloader(str(root / "leftImg8bit" / "train"), opts, HYP, 2, 32, "val")
    assert (seg.mask_ratio, seg.overlap) == (2, False)  # the flags reach the task
    assert (seg_ds.downsample_ratio, seg_ds.overlap) == (2, False)  # and its dataset


class _Niceness(torch.utils.data.Dataset):
    """Each sample is the niceness of the process that loaded it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor(os.nice(0))


def test_workers_yield_to_cpu_training():
    # without CUDA the workers share the cores with the training step and must not preempt it
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: workers keep their priority")
    loader = seeded_loader(_Niceness(), batch_size=2, workers=1, shuffle=False, rank=-1, seed=0,
                           collate_fn=torch.stack, persistent=False)
    if loader.num_workers == 0:
        pytest.skip("one CPU: no worker processes")
    seen = {int(v) for batch in loader for v in batch}
    assert seen == {min(os.nice(0) + CPU_WORKER_NICENESS, 19)}


def test_workers_keep_priority_with_cuda(monkeypatch):
    # on a GPU machine the training process mostly waits for the GPU; workers that yielded would starve it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert worker_niceness() == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert worker_niceness() == CPU_WORKER_NICENESS > 0
