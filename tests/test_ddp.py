"""Multi-process training under torchrun on CPU (gloo): the DDP path of the shared engine."""

from __future__ import annotations

import csv
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_tiny_shapes

ROOT = Path(__file__).resolve().parents[1]
NOAUG = ("lr0: 0.01\nlrf: 0.01\nmomentum: 0.937\nweight_decay: 0.0005\nwarmup_epochs: 3.0\nwarmup_momentum: 0.8\n"
         "warmup_bias_lr: 0.1\nbox: 0.05\ncls: 0.5\ncls_pw: 1.0\nobj: 1.0\nobj_pw: 1.0\niou_t: 0.2\nanchor_t: 4.0\n"
         "fl_gamma: 0.0\nhsv_h: 0.0\nhsv_s: 0.0\nhsv_v: 0.0\ndegrees: 0.0\ntranslate: 0.0\nscale: 0.0\nshear: 0.0\n"
         "perspective: 0.0\nflipud: 0.0\nfliplr: 0.0\nmosaic: 0.0\nmixup: 0.0\ncopy_paste: 0.0\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_single_and_two_ranks(args: list[str], tmp_path: Path) -> None:
    """The same training command in one process (project single/) and under torchrun with 2 ranks (ddp/)."""
    env_kw = {"capture_output": True, "text": True, "timeout": 600, "cwd": str(ROOT)}
    single = subprocess.run([sys.executable, *args, "--project", str(tmp_path / "single")], **env_kw)
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args,
                          "--project", str(tmp_path / "ddp")], **env_kw)
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]


def epoch_losses(run: Path) -> list[float]:
    with open(run / "results.csv") as f:
        row = next(csv.DictReader(f))
    return [float(row[k]) for k in row if k.strip().startswith("train/")]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_like_one_process(tmp_path):
    data = write_tiny_shapes(tmp_path / "data", n_val=4, seed=2, imgsz_range=(64, 64))
    hyp = tmp_path / "noaug.yaml"
    hyp.write_text(NOAUG)  # no random augmentation and no shuffling (--rect): both runs see the same images
    args = [str(ROOT / "train.py"), "--data", str(data), "--hyp", str(hyp), "--cfg", "yolov5n.yaml", "--img", "64",
            "--batch-size", "8", "--epochs", "1", "--workers", "0", "--rect", "--noplots", "--noautoanchor",
            "--device", "cpu"]
    run_single_and_two_ranks(args, tmp_path)
    runs = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert runs == ["exp"], runs  # rank 0 alone creates the run folder and writes into it
    assert (tmp_path / "ddp/exp/weights/best.pt").exists()
    # Rank 0 logs the mean over its half of each global batch; the halves are alike, so the epoch means agree
    # with the single process's to within the spread between images (not exactly: each half has its own images).
    for a, b in zip(epoch_losses(tmp_path / "ddp/exp"), epoch_losses(tmp_path / "single/exp")):
        assert a == pytest.approx(b, rel=0.1)  # measured: within 4%


@pytest.mark.slow
def test_failure_on_one_rank_ends_the_whole_job(tmp_path):
    """A rank that crashes mid-epoch must not leave the other blocked in an all-reduce: torchrun ends the job."""
    import time

    data = write_tiny_shapes(tmp_path / "data", n_val=4, seed=2, imgsz_range=(64, 64))
    entry = tmp_path / "crash_rank1.py"
    entry.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import train\n"
        "from utils.engine import trainer\n"
        "forward = trainer.Trainer._forward\n"
        "def crash(self, img):\n"
        "    if os.environ['RANK'] == '1':\n"
        "        raise RuntimeError('injected failure on rank 1')\n"
        "    return forward(self, img)\n"
        "trainer.Trainer._forward = crash\n"
        "train.run_main(train.main, train.parse_opt())\n")
    t = time.time()
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(entry),
                          "--data", str(data), "--cfg", "yolov5n.yaml", "--img", "64", "--batch-size", "8",
                          "--epochs", "1", "--workers", "0", "--noplots", "--noautoanchor", "--device", "cpu",
                          "--project", str(tmp_path / "runs")],
                         capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "injected failure on rank 1" in out
    assert time.time() - t < 240, "the surviving rank hung instead of being stopped"
    assert not (tmp_path / "runs/exp/weights/last.pt").exists()  # nothing half-trained is passed off as a result


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_segmentation_like_one_process(tmp_path):
    """segment/train.py on the same engine path: masks are sharded with their images, rank 0 validates."""
    write_tiny_shapes(tmp_path / "data", n_val=4, seed=2, imgsz_range=(64, 64))
    data = tmp_path / "seg.yaml"
    data.write_text(f"path: {tmp_path / 'data' / 'seg'}\ntrain: images/train\nval: images/val\n"
                    "names: {0: rectangle, 1: ellipse, 2: triangle, 3: star}\n")
    hyp = tmp_path / "noaug.yaml"
    hyp.write_text(NOAUG)
    args = [str(ROOT / "segment" / "train.py"), "--data", str(data), "--hyp", str(hyp), "--cfg", "yolov5n-seg.yaml",
            "--img", "64", "--batch-size", "8", "--epochs", "1", "--workers", "0", "--rect", "--noplots",
            "--noautoanchor", "--device", "cpu"]
    run_single_and_two_ranks(args, tmp_path)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["exp"]
    assert (tmp_path / "ddp/exp/weights/best.pt").exists()
    assert "train/seg_loss" in (tmp_path / "ddp/exp/results.csv").read_text()
    for a, b in zip(epoch_losses(tmp_path / "ddp/exp"), epoch_losses(tmp_path / "single/exp")):
        assert a == pytest.approx(b, rel=0.15)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_detection_plus_semantic(tmp_path):
    """train.py with a -city model on box + mask data: the confusion matrix and the joint loss under DDP."""
    write_tiny_shapes(tmp_path / "data", n_val=4, seed=2, imgsz_range=(64, 64))
    data = tmp_path / "sem.yaml"
    data.write_text(f"path: {tmp_path / 'data' / 'semantic'}\ntrain: images/train\nval: images/val\n"
                    "names: {0: rectangle, 1: ellipse, 2: triangle, 3: star}\n"
                    "semantic:\n  names: {0: background, 1: rectangle, 2: ellipse, 3: triangle, 4: star}\n")
    hyp = tmp_path / "noaug.yaml"
    hyp.write_text(NOAUG)
    args = [str(ROOT / "train.py"), "--data", str(data), "--hyp", str(hyp), "--cfg", "yolov5n-city.yaml",
            "--img", "64", "--batch-size", "8", "--epochs", "1", "--workers", "0", "--rect", "--noplots",
            "--noautoanchor", "--device", "cpu"]
    run_single_and_two_ranks(args, tmp_path)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["exp"]
    text = (tmp_path / "ddp/exp/results.csv").read_text()
    assert "train/seg_loss" in text and "metrics/mIoU" in text
    for a, b in zip(epoch_losses(tmp_path / "ddp/exp"), epoch_losses(tmp_path / "single/exp")):
        assert a == pytest.approx(b, rel=0.15)
