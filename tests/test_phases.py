"""Per-phase epoch timing: the clock, its report, and the trainer's records that benchmarks/epoch_profile.py prints."""

from __future__ import annotations

import time

import torch

from utils.engine.phases import PhaseClock, format_epoch, ordered


def test_clock_sums_phases_per_epoch_and_reports_the_rest_as_other():
    clock = PhaseClock(torch.device("cpu"), sync=True)
    assert not clock.sync  # only CUDA needs synchronising
    clock.start_epoch()
    for _ in range(2):
        with clock("forward"):
            time.sleep(0.01)
    clock.add("data", 0.5)
    time.sleep(0.01)
    rec = clock.end_epoch()
    assert 0.02 <= rec["forward"] < 0.5 and rec["data"] == 0.5
    assert rec["total"] >= 0.03 and clock.epochs == [rec]
    names = [n for n, _ in ordered(rec)]
    assert names == ["data", "forward", "other"]  # report order, then what no phase covered
    line = format_epoch({"forward": 3.0, "validation": 1.0, "total": 5.0})
    assert line.startswith("5.0 s:") and "forward 3.0 s (60%)" in line and "other 1.0 s (20%)" in line


def test_trainer_records_every_phase(tmp_path):
    from tests.conftest import write_tiny_shapes
    from utils.engine.config import TrainConfig
    from utils.engine.trainer import Trainer
    from utils.tasks.detect.task import DetectionTask

    data = write_tiny_shapes(tmp_path / "d", n_train=12, n_val=4)
    cfg = TrainConfig(data=str(data), cfg="yolov5n.yaml", imgsz=64, epochs=2, batch_size=4, workers=0,
                      project=str(tmp_path / "runs"), hyp="data/hyps/hyp.shapes.yaml", noplots=False)
    trainer = Trainer(cfg, DetectionTask())
    trainer.fit()
    assert len(trainer.clock.epochs) == 2
    for rec in trainer.clock.epochs:
        for phase in ("data", "forward", "loss", "backward", "optimizer", "ema", "validation", "logging", "checkpoint"):
            assert rec[phase] > 0, phase
        assert sum(s for n, s in ordered(rec) if n != "other") <= rec["total"] + 1e-6
    assert trainer.clock.epochs[0]["plots"] > 0 and "plots" not in trainer.clock.epochs[1]  # mosaics: first batches


def test_epoch_profile_table_has_a_column_per_epoch_and_every_phase():
    from benchmarks.epoch_profile import table

    out = table([{"plots": 1.0, "forward": 2.0, "total": 4.0}, {"forward": 2.0, "validation": 1.0, "total": 3.5}])
    lines = out.splitlines()
    assert "epoch 0" in lines[0] and "epoch 1" in lines[0]
    rows = {ln.split()[0]: ln for ln in lines[1:]}
    assert list(rows) == ["forward", "plots", "validation", "other", "total"]
    assert "25.0%" in rows["plots"] and "0.00 s" in rows["plots"]  # absent in epoch 1: zero, not missing
    assert "0.50 s" in rows["other"]
