"""Experiment tracking: an offline W&B run and TensorBoard events from real tiny trainings, failing backends, the
no-login behaviour (never a prompt), WANDB_MODE=disabled, and the --entity/--upload_dataset/--bbox_interval flags."""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.engine.config import TrainConfig
from utils.engine.trainer import Trainer
from utils.loggers import Backend, Loggers
from utils.loggers.wandb import HOW_TO, choose_mode, find_api_key, project_name
from utils.tasks.detect.task import DetectionTask

ROOT = Path(__file__).resolve().parents[1]
TINY = {"cfg": "yolov5n.yaml", "imgsz": 64, "batch_size": 8, "workers": 0, "noplots": True, "noautoanchor": True}


def wandb_records(run_dir: Path) -> list:
    """The protobuf records of an offline run's .wandb file (a LevelDB-style log: 32 KiB blocks of framed chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # a full record, or the last chunk of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def history(records: list) -> list[dict]:
    """Each logged step as {key: value}; a media entry's fields (nested keys) become a dict."""
    rows = []
    for r in records:
        if r.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in r.history.item:
            keys = [item.key] if item.key else list(item.nested_key)
            d = row
            for k in keys[:-1]:
                d = d.setdefault(k, {})
            d[keys[-1]] = json.loads(item.value_json)
        rows.append(row)
    return rows


def of_type(records: list, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def read_results(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    """wandb's own caches and settings under a temporary folder; its process-wide state reset afterwards."""
    wandb = pytest.importorskip("wandb")
    home = tmp_path_factory.mktemp("wandb_home")
    env = {"WANDB_CACHE_DIR": home / "cache", "WANDB_DATA_DIR": home / "data", "WANDB_CONFIG_DIR": home / "config",
           "WANDB_ARTIFACT_DIR": home / "artifacts"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update({k: str(v) for k, v in env.items()})
    yield home
    wandb.teardown()
    for k, v in old.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def offline_run(tiny_data, tmp_path_factory, wandb_env):
    """Two epochs with WANDB_MODE=offline: killed after epoch 0's checkpoint, then resumed for epoch 1."""
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.delenv("WANDB_DIR", raising=False)
    cwd = tmp_path_factory.mktemp("cwd")
    mp.chdir(cwd)
    project = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(data=tiny_data, project=str(project), epochs=2, entity="my-team", upload_dataset="val",
                      bbox_interval=1, upload_model=True, **TINY)
    real_save = Trainer._save

    def save_then_die(self, epoch, fi):
        real_save(self, epoch, fi)
        raise KeyboardInterrupt

    mp.setattr(Trainer, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, DetectionTask()).fit()
    mp.setattr(Trainer, "_save", real_save)
    save_dir = project / "exp"
    Trainer(TrainConfig(resume=str(save_dir / "weights/last.pt"), workers=0), DetectionTask()).fit()
    mp.undo()
    runs = sorted((save_dir / "wandb").glob("offline-run-*"))
    return {"save_dir": save_dir, "runs": runs, "records": [wandb_records(r) for r in runs], "cwd": cwd}


def test_offline_wandb_run_holds_config_and_metrics(offline_run):
    save_dir = offline_run["save_dir"]
    assert len(offline_run["runs"]) == 2, "the killed run and its resumption"
    assert not any(offline_run["cwd"].iterdir()), "wandb wrote into the working directory"
    first, second = offline_run["records"]
    run = of_type(first, "run")[0]
    assert run.entity == "my-team" and run.display_name == "exp" and run.project == save_dir.parent.name
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["epochs"] == 2 and config["entity"] == "my-team" and config["hyp"]["lr0"] == 0.01

    rows = read_results(save_dir / "results.csv")
    logged = [h for rec in (first, second) for h in history(rec) if "x/lr0" in h]
    assert [h["_step"] for h in logged] == [0, 1]
    for row, h in zip(rows, logged):
        for key, value in row.items():
            if key != "epoch":
                assert h[key] == pytest.approx(value, rel=1e-4, abs=1e-9), key


def test_offline_wandb_run_resumes_and_records_failure(offline_run):
    first, second = offline_run["records"]
    ids = [of_type(r, "run")[0].run_id for r in (first, second)]
    assert ids[0] == ids[1], "the resumed training continues the same wandb run"
    exits = [of_type(r, "exit")[0].exit_code for r in (first, second)]
    assert exits == [1, 0], "the killed run is marked failed, the finished one not"


def test_offline_wandb_artifacts_and_images(offline_run, tiny_data):
    first, second = offline_run["records"]
    arts = {a.type: a for a in of_type(first, "artifact") + of_type(second, "artifact")}
    val = Path(tiny_data).parent / "det"
    n_val = len(list((val / "images/val").iterdir()))
    files = [c.path for c in arts["dataset"].manifest.contents]
    assert arts["dataset"].name == "tiny_dataset" and len(of_type(second, "artifact")) == 1  # no re-upload on resume
    assert sum(f.startswith("val/images/") for f in files) == n_val and sum(f.startswith("val/labels/") for f in files)
    assert not any(f.startswith("train/") for f in files), "--upload_dataset val uploads only the val split"
    assert [c.path for c in arts["model"].manifest.contents] == ["best.pt"]
    # --bbox_interval 1: validation mosaics with predictions at both epochs, stored as media files of the run
    for records, step in ((first, 0), (second, 1)):
        h = next(h for h in history(records) if h["_step"] == step and "Validation/val_batch0_pred" in h)
        media = h["Validation/val_batch0_pred"]
        assert media["_type"] == "image-file"
        run_dir = offline_run["runs"][step]
        assert (run_dir / "files" / media["path"]).is_file()
    summary = {i.key or "/".join(i.nested_key): i.value_json for s in of_type(second, "summary") for i in s.update}
    assert "best/mAP_0.5" in summary


def test_tensorboard_events_hold_results_columns(offline_run):
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    save_dir = offline_run["save_dir"]
    events = sorted(save_dir.glob("events.out.tfevents.*"))
    assert len(events) == 2  # one writer per process, in the run folder, as upstream
    columns = list(read_results(save_dir / "results.csv")[0])[1:]
    steps, images = {}, set()
    for f in events:
        ea = ea_mod.EventAccumulator(str(f), size_guidance={"scalars": 0, "images": 0})
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            steps.setdefault(tag, []).extend(e.step for e in ea.Scalars(tag))
        images |= set(ea.Tags()["images"])
    assert set(steps) == set(columns) and all(sorted(s) == [0, 1] for s in steps.values())
    assert "Validation/val_batch0_pred" in images


def test_tensorboard_images_are_the_files_themselves(tmp_path):
    # plots are already PNG/JPEG on disk: logged as they are, not decoded and re-encoded (5 s a run through PIL)
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    import cv2
    from torch.utils.tensorboard import SummaryWriter

    from utils.loggers.tensorboard import TensorBoardBackend

    files = [tmp_path / "plot.png", tmp_path / "batch.jpg"]
    for f, (h, w) in zip(files, [(30, 50), (40, 20)]):
        cv2.imwrite(str(f), np.full((h, w, 3), 90, np.uint8))
    backend = TensorBoardBackend(SummaryWriter, tmp_path)
    backend.on_train_start({}, {}, {})
    backend.log_images("Results", files, 3)
    backend.close()
    ea = ea_mod.EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    ea.Reload()
    assert sorted(ea.Tags()["images"]) == ["Results/batch", "Results/plot"]
    for f, (h, w) in zip(files, [(30, 50), (40, 20)]):
        event = ea.Images(f"Results/{f.stem}")[0]
        assert event.encoded_image_string == f.read_bytes() and (event.height, event.width, event.step) == (h, w, 3)


def test_failing_backends_warn_once_and_training_finishes(tiny_data, tmp_path, monkeypatch, log, wandb_env):
    import wandb
    from torch.utils.tensorboard import SummaryWriter

    def refuse(*a, **k):
        raise RuntimeError("service unreachable")

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(wandb, "init", refuse)  # fails to start
    monkeypatch.setattr(SummaryWriter, "add_scalar", refuse)  # starts, then fails on its first log
    Trainer(TrainConfig(data=tiny_data, project=str(tmp_path), epochs=2, noval=True, **TINY), DetectionTask()).fit()
    assert len(read_results(tmp_path / "exp/results.csv")) == 2
    warnings = [r.getMessage() for r in log.records if "logger failed" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert any("wandb" in w and "on_train_start" in w for w in warnings)
    assert any("TensorBoard" in w and "on_epoch_end" in w for w in warnings)


def test_backend_that_fails_to_construct_is_skipped(tmp_path, monkeypatch, log):
    from utils.loggers import tensorboard

    def broken(cfg, save_dir):
        raise OSError("disk full")

    monkeypatch.setattr(tensorboard, "start", broken)
    loggers = Loggers.create(TrainConfig(project=str(tmp_path)), tmp_path)
    assert loggers.backends == [] and "failed to start" in log.text and "disk full" in log.text


def test_no_login_and_no_mode_is_off_with_one_line_and_never_prompts(tiny_data, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    (tmp_path / "home").mkdir()
    cmd = [sys.executable, str(ROOT / "train.py"), "--data", tiny_data, "--cfg", "yolov5n.yaml", "--img", "64",
           "--batch-size", "8", "--workers", "0", "--noplots", "--noautoanchor", "--epochs", "1", "--noval",
           "--project", str(tmp_path / "runs"), "--entity", "my-team", "--bbox-interval", "-1"]
    # stdin is closed and the time bounded: a login prompt would fail or hang here
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert p.stdout.count(HOW_TO) == 1
    assert not (tmp_path / "runs/exp/wandb").exists() and not (tmp_path / "wandb").exists()
    assert list((tmp_path / "runs/exp").glob("events.out.tfevents.*"))


def test_disabled_wandb_is_never_imported(tmp_path, monkeypatch, log):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setitem(sys.modules, "wandb", None)  # any `import wandb` now raises
    loggers = Loggers.create(TrainConfig(project=str(tmp_path), epochs=50), tmp_path)
    assert [b.name for b in loggers.backends] == ["TensorBoard"]
    assert "Weights & Biases" not in log.text and "failed" not in log.text
    assert loggers.bbox_interval == 0  # -1 means a tenth of training only when W&B is on
    loggers.close()
    assert not (tmp_path / "wandb").exists()


def test_choose_mode_from_environment(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    base = {"HOME": str(home)}
    assert choose_mode({**base, "WANDB_MODE": "disabled"}) == (None, "")
    assert choose_mode({**base, "WANDB_MODE": "offline"}) == ("offline", "")
    assert choose_mode(base) == (None, HOW_TO)
    assert choose_mode({**base, "WANDB_MODE": "online"}) == (None, HOW_TO)  # online without a key: still no prompt
    assert choose_mode({**base, "WANDB_API_KEY": "k" * 40}) == ("online", "")
    (home / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "n" * 40 + "\n")
    assert find_api_key(base) == "n" * 40 and choose_mode(base) == ("online", "")  # saved by an older `wandb login`
    (home / ".netrc").write_text("machine api.forge.coreweave.com login user password " + "f" * 40 + "\n")
    assert find_api_key(base) == "f" * 40
    assert find_api_key({**base, "WANDB_BASE_URL": "https://wandb.example.com"}) is None  # another host's key


def test_project_name_follows_upstream():
    assert project_name(ROOT / "runs/train") == "YOLOv5"
    assert project_name(ROOT / "runs/train-seg") == "YOLOv5-Segment"
    assert project_name(ROOT / "runs/train-cls") == "YOLOv5-Classify"
    assert project_name("/data/experiments/coco") == "coco"


def test_bbox_interval_and_val_images_hook(tmp_path):
    class Images(Backend):
        name, wants_val_images = "images", True

        def __init__(self):
            self.logged = []

        def log_images(self, name, paths, epoch):
            self.logged.append((name, [p.name for p in paths], epoch))

    class FakeEvaluator:
        plots, save_dir = False, tmp_path

        def __call__(self):
            if self.plots:  # what a task's plot_val_batch does when plots are on
                (self.save_dir / "val_batch0_pred.jpg").write_bytes(b"jpg")
                (self.save_dir / "PR_curve.png").write_bytes(b"png")

    backend = Images()
    loggers = Loggers([backend], bbox_interval=2)
    ev = FakeEvaluator()
    for epoch in range(4):
        with loggers.val_images(ev, epoch):
            ev()
    assert backend.logged == [("Validation", ["val_batch0_pred.jpg"], 1), ("Validation", ["val_batch0_pred.jpg"], 3)]
    assert ev.plots is False and ev.save_dir == tmp_path and not list(tmp_path.iterdir())
    assert Loggers([], bbox_interval=2).wants_images(1) is False  # nothing to log to: no plotting


@pytest.mark.parametrize("script", ["train", "segment/train", "classify/train"])
def test_tracking_flags_in_every_train_script(script):
    import importlib

    mod = importlib.import_module(script.replace("/", "."))
    opt = mod.parse_opt(["--entity", "team", "--upload_dataset", "--bbox_interval", "5", "--upload_model"])
    assert (opt.entity, opt.upload_dataset, opt.bbox_interval, opt.upload_model) == ("team", "True", 5, True)
    opt = mod.parse_opt(["--upload-dataset", "val", "--bbox-interval", "0"])
    assert (opt.entity, opt.upload_dataset, opt.bbox_interval, opt.upload_model) == ("", "val", 0, False)


def test_loggers_are_idle_on_a_run_without_backends(tmp_path):
    loggers = Loggers()
    loggers.on_train_start({}, {}, {})
    loggers.on_epoch_end(0, {"a": torch.tensor(1.0)})
    loggers.on_fit_end(tmp_path, tmp_path / "best.pt", {})
    loggers.close()
    assert not list(tmp_path.iterdir())


def test_dataset_artifact_holds_both_splits_with_labels(tiny_data):
    from utils.loggers.wandb import dataset_artifact

    class FakeArtifact:
        def __init__(self, name, type, metadata):
            self.name, self.type, self.metadata, self.files = name, type, metadata, {}

        def add_file(self, path, name):
            self.files[name] = path

    class FakeWandb:
        Artifact = FakeArtifact

    data = DetectionTask().check_data(tiny_data)
    art = dataset_artifact(FakeWandb, data, ("train", "val"), "tiny_dataset")
    det = Path(tiny_data).parent / "det"
    for split in ("train", "val"):
        images = sorted(p.name for p in (det / "images" / split).iterdir())
        assert sorted(Path(n).name for n in art.files if n.startswith(f"{split}/images/")) == images
        labels = [n for n in art.files if n.startswith(f"{split}/labels/")]
        assert len(labels) == len(list((det / "labels" / split).glob("*.txt"))) > 0
    assert all(Path(p).is_file() for p in art.files.values())
    assert art.type == "dataset" and art.metadata["names"]["0"] == "rectangle" and art.metadata["nc"] == 4
