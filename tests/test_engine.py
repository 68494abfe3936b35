"""The shared engine end to end: train -> checkpoints -> val -> detect, resume, and failure handling, on tiny data."""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT

from utils.engine.config import TrainConfig, add_arguments, from_namespace
from utils.engine.results import ResultsLog
from utils.engine.trainer import EarlyStopping, NonFiniteLoss, Trainer
from utils.tasks.detect.task import DetectionTask

TINY = {"cfg": "yolov5n.yaml", "imgsz": 64, "batch_size": 8, "workers": 0, "noplots": True, "noautoanchor": True}


def make_cfg(data: str, project: Path, **kw) -> TrainConfig:
    return TrainConfig(data=data, project=str(project), **{**TINY, **kw})


def read_results(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_flags_are_generated_from_the_typed_config():
    p = add_arguments(argparse.ArgumentParser(), TrainConfig, imgsz=320)
    cfg = from_namespace(p.parse_args(["--img", "416", "--batch-size", "4", "--cache", "--freeze", "10",
                                       "--cos-lr", "--resume", "--close-mosaic", "3"]))
    assert (cfg.imgsz, cfg.batch_size, cfg.cache, cfg.freeze, cfg.cos_lr, cfg.resume, cfg.close_mosaic) == \
           (416, 4, "ram", [10], True, "True", 3)
    assert from_namespace(p.parse_args([])).imgsz == 320


def test_results_csv_layout(tmp_path):
    log = ResultsLog(tmp_path / "results.csv", ["train/box_loss", "metrics/mAP_0.5"])
    log.append(0, [0.1234567, 0.5])
    log.append(1, [0.1, 0.75])
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0].split(",")[0] == " " * 15 + "epoch" and len(lines) == 3
    assert float(lines[1].split(",")[1]) == pytest.approx(0.12346)
    with pytest.raises(ValueError):
        log.append(2, [1.0])


def test_early_stopping_counts_epochs_without_improvement():
    stop = EarlyStopping(patience=2)
    assert [stop(e, f) for e, f in enumerate([0.1, 0.2, 0.15, 0.19, 0.3])] == [False, False, False, True, False]


def test_train_writes_run_and_checkpoints(tiny_data, tmp_path, monkeypatch):
    import detect
    import utils.engine.predictor
    import utils.engine.validate
    import val

    kept = []  # val.py and detect.py on a CPU reuse freed activation memory (utils.device.keep_freed_memory)
    for module in (utils.engine.validate, utils.engine.predictor):
        monkeypatch.setattr(module, "keep_freed_memory",
                            lambda device, m=module.__name__: kept.append((m, device.type)) or True)
    figures = Trainer(make_cfg(tiny_data, tmp_path, epochs=2), DetectionTask()).fit()
    run = tmp_path / "exp"
    for f in ("opt.yaml", "hyp.yaml", "results.csv", "weights/last.pt", "weights/best.pt"):
        assert (run / f).exists(), f
    rows = read_results(run / "results.csv")
    assert [r["epoch"] for r in rows] == [0, 1]
    assert all(np.isfinite(r["train/box_loss"]) and r["train/box_loss"] > 0 for r in rows)
    assert rows[0]["x/lr0"] > rows[0]["x/lr1"]  # warmup: bias lr starts high, weights from zero
    assert set(figures) == set(DetectionTask.metric_names)
    ck = torch.load(run / "weights/best.pt", weights_only=True)
    assert ck["optimizer"] is None and ck["ema"] is None and ck["epoch"] == -1
    assert all(v.dtype == torch.float16 for v in ck["model"].values() if v.is_floating_point())

    res = val.run(weights=[str(run / "weights/best.pt")], data=tiny_data, imgsz=64, batch_size=4, workers=0,
                  project=str(tmp_path / "val"))
    assert set(res.figures) == set(DetectionTask.metric_names) and res.speed[1] > 0
    out = detect.run(weights=[str(run / "weights/best.pt")], source=str(Path(tiny_data).parent / "det/images/val"),
                     imgsz=[64], conf_thres=0.001, save_txt=True, project=str(tmp_path / "detect"))
    assert len(list(out.glob("*.jpg"))) == 8
    assert (tmp_path / "exp2").exists() is False  # nothing else wrote into the train project
    assert kept == [("utils.engine.validate", "cpu"), ("utils.engine.predictor", "cpu")]


def test_new_run_never_overwrites_an_old_one(tiny_data, tmp_path):
    Trainer(make_cfg(tiny_data, tmp_path, epochs=1, noval=True), DetectionTask()).fit()
    Trainer(make_cfg(tiny_data, tmp_path, epochs=1, noval=True), DetectionTask()).fit()
    assert (tmp_path / "exp" / "weights/last.pt").exists() and (tmp_path / "exp2" / "weights/last.pt").exists()


def test_resume_after_interruption_matches_uninterrupted(tiny_data, tmp_path, monkeypatch):
    Trainer(make_cfg(tiny_data, tmp_path / "a", epochs=3), DetectionTask()).fit()
    full = read_results(tmp_path / "a/exp/results.csv")

    real_save = Trainer._save

    def save_then_die(self, epoch, fi):
        real_save(self, epoch, fi)
        if epoch == 1:
            raise KeyboardInterrupt  # killed right after the epoch-1 checkpoint landed

    monkeypatch.setattr(Trainer, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        Trainer(make_cfg(tiny_data, tmp_path / "b", epochs=3), DetectionTask()).fit()
    monkeypatch.setattr(Trainer, "_save", real_save)
    last = tmp_path / "b/exp/weights/last.pt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    Trainer(TrainConfig(resume=str(last), workers=0), DetectionTask()).fit()
    resumed = read_results(tmp_path / "b/exp/results.csv")
    assert [r["epoch"] for r in resumed] == [0, 1, 2]
    for key in ("train/box_loss", "train/obj_loss", "x/lr1"):
        assert resumed[2][key] == pytest.approx(full[2][key], rel=1e-5), key


def test_nonfinite_loss_stops_with_epoch_and_batch(tiny_data, tmp_path, monkeypatch, caplog):
    task = DetectionTask()
    real = task.criterion

    def poisoned(model, hyp):
        crit = real(model, hyp)

        def f(preds, batch):
            loss, items = crit(preds, batch)
            return loss * float("nan"), items
        return f

    monkeypatch.setattr(task, "criterion", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"epoch 0, batch 0"):
        Trainer(make_cfg(tiny_data, tmp_path, epochs=1), task).fit()
    assert not (tmp_path / "exp/weights/last.pt").exists()


def test_missing_data_yaml_is_one_clear_line(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "train.py"), "--data", str(tmp_path / "nope.yaml"),
                        "--project", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "nope.yaml" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr


@pytest.fixture(autouse=True)
def _quiet(caplog):
    caplog.set_level(logging.INFO, logger="yolov5")


def test_recipe_flags_together(tiny_data, tmp_path):
    """Freeze, image weights, multi-scale, quad, cosine LR, AdamW, RAM cache and single-class in one short run."""
    cfg = make_cfg(tiny_data, tmp_path, epochs=2, freeze=[3], image_weights=True, multi_scale=True, quad=True,
                   cos_lr=True, optimizer="AdamW", cache="ram", single_cls=True)
    trainer = Trainer(cfg, DetectionTask())
    trainer.fit()
    ck = torch.load(tmp_path / "exp/weights/last.pt", weights_only=True)
    assert ck["nc"] == 1 and ck["names"] == {0: "item"}
    frozen = [k for k, v in trainer.model.named_parameters() if not v.requires_grad]
    assert frozen and all(k.startswith(("model.0.", "model.1.", "model.2.")) for k in frozen)
    rows = read_results(tmp_path / "exp/results.csv")
    assert len(rows) == 2 and np.isfinite(rows[-1]["train/box_loss"])


def test_close_mosaic_from_the_hyp_file_and_the_flag(tiny_data, tmp_path, log):
    hyp = yaml.safe_load((ROOT / "data/hyps/hyp.shapes-adamw.yaml").read_text())
    (tmp_path / "hyp.yaml").write_text(yaml.safe_dump({**hyp, "close_mosaic": 1}))
    trainer = Trainer(make_cfg(tiny_data, tmp_path, epochs=3, hyp=str(tmp_path / "hyp.yaml"), workers=1),
                      DetectionTask())
    trainer.fit()
    assert trainer.cfg.close_mosaic == 1 and not trainer.train_loader.dataset.mosaic
    assert "Closing dataloader mosaic: the last 1 epochs" in log.text
    before = log.text[:log.text.index("Closing dataloader mosaic")]
    assert before.count(" all ") == 2  # closed after the validations of epochs 0 and 1, before the last epoch
    # the flag wins over the file; 0 keeps mosaic to the end
    trainer = Trainer(make_cfg(tiny_data, tmp_path, epochs=1, hyp=str(tmp_path / "hyp.yaml"), close_mosaic=0),
                      DetectionTask())
    trainer.fit()
    assert trainer.cfg.close_mosaic == 0 and trainer.train_loader.dataset.mosaic


def test_evolve_writes_csv_and_best_hyp(tiny_data, tmp_path):
    from utils.engine.evolve import evolve

    best = evolve(make_cfg(tiny_data, tmp_path / "train", epochs=1, evolve=2), DetectionTask())
    out = tmp_path / "evolve" / "exp"
    lines = (out / "evolve.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("fitness,lr0")
    assert (out / "hyp_evolve.yaml").exists() and "lr0" in best


def test_compile_failure_falls_back_to_eager_with_one_warning(tiny_data, tmp_path, monkeypatch, log):
    class Broken(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            raise RuntimeError("backend compiler failed")

    monkeypatch.setattr(torch, "compile", lambda m, **kw: Broken(m))
    Trainer(make_cfg(tiny_data, tmp_path, epochs=1, compile=True), DetectionTask()).fit()
    assert log.text.count("torch.compile failed") == 1
    assert (tmp_path / "exp/weights/best.pt").exists()


@pytest.mark.slow
def test_compiled_training_runs(tiny_data, tmp_path):
    figures = Trainer(make_cfg(tiny_data, tmp_path, epochs=1, compile=True, noval=True), DetectionTask()).fit()
    assert set(figures) == set(DetectionTask.metric_names)
    assert len(read_results(tmp_path / "exp/results.csv")) == 1


@pytest.mark.parametrize("cfg", ["yolov5n.yaml", "yolov5n-seg.yaml"])
def test_cpu_evaluation_in_chunks_equals_whole_batch(cfg, monkeypatch):
    from models.build import build_model
    from utils.engine import evaluator
    from utils.log import quiet

    with quiet():
        model = build_model(cfg).eval()
    x = torch.rand(5, 3, 64, 64)
    monkeypatch.setattr(evaluator, "CPU_PIXELS_PER_FORWARD", 2 * 64 * 64)  # chunks of 2, 2 and 1 images
    calls = []
    hook = model.register_forward_pre_hook(lambda m, inp: calls.append(inp[0].shape[0]))
    with torch.inference_mode():
        chunked = evaluator.forward_batch(model, x)
        hook.remove()
        whole = model(x)
    assert calls == [2, 2, 1]
    flat = [chunked[0], *chunked[1:-1], *chunked[-1]], [whole[0], *whole[1:-1], *whole[-1]]
    assert len(flat[0]) == len(flat[1]) and all(a.shape == b.shape for a, b in zip(*flat))
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(*flat))


@pytest.mark.parametrize("given,expected", [("", torch.optim.AdamW), ("SGD", torch.optim.SGD)])
def test_hyp_file_names_its_optimizer(tiny_data, tmp_path, given, expected):
    """A hyp file tuned for one optimizer (hyp.shapes-adamw.yaml: AdamW) gets it unless --optimizer says otherwise."""
    hyp = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-low.yaml").read_text())
    (tmp_path / "hyp.yaml").write_text(yaml.safe_dump({**hyp, "lr0": 0.002, "optimizer": "AdamW"}))
    cfg = make_cfg(tiny_data, tmp_path, epochs=1, hyp=str(tmp_path / "hyp.yaml"), optimizer=given)
    trainer = Trainer(cfg, DetectionTask())
    trainer.fit()
    assert type(trainer.optimizer) is expected
    assert yaml.safe_load((tmp_path / "exp/opt.yaml").read_text())["optimizer"] == expected.__name__
    # without the key, upstream's SGD
    assert TrainConfig().optimizer == "" and "optimizer" not in hyp


def test_hyp_file_sets_the_ema_decay_and_ramp(tiny_data, tmp_path):
    """ema_decay and ema_tau from the hyp file reach the EMA kept through training (made again after AutoAnchor);
    without them, YOLOv5's 0.9999 and 2000."""
    hyp = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-low.yaml").read_text())
    (tmp_path / "hyp.yaml").write_text(yaml.safe_dump({**hyp, "ema_decay": 0.99, "ema_tau": 100}))
    trainer = Trainer(make_cfg(tiny_data, tmp_path, epochs=1, hyp=str(tmp_path / "hyp.yaml")), DetectionTask())
    trainer.setup()
    assert (trainer.ema.decay_max, trainer.ema.tau) == (0.99, 100)
    assert trainer.ema.decay(100) == pytest.approx(0.99 * (1 - np.exp(-1)))
    trainer = Trainer(make_cfg(tiny_data, tmp_path, epochs=1), DetectionTask())
    trainer.setup()
    assert (trainer.ema.decay_max, trainer.ema.tau) == (0.9999, 2000) and "ema_tau" not in hyp


def test_cpu_training_keeps_freed_memory_for_the_next_step(tiny_data, tmp_path, monkeypatch):
    import utils.engine.trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda device: calls.append(device.type) or True)
    Trainer(make_cfg(tiny_data, tmp_path, epochs=1, device="cpu"), DetectionTask()).setup()
    assert calls == ["cpu"]
