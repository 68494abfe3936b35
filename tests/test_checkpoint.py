"""Checkpoints: safe reading of upstream pickles, our weights_only format, atomic writes, strip, intersect, load."""

from __future__ import annotations

import builtins
import io
import pickle
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, need

from utils.checkpoint import (
    FORMAT,
    CheckpointError,
    intersect_state_dict,
    load_checkpoint,
    load_model,
    make_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    strip_optimizer,
)
from utils.upstream_pickle import UpstreamPickleError, load_upstream, pickle_globals, read_torch_zip


def _torch_zip(path: Path, data_pkl: bytes, records: dict[str, bytes] | None = None) -> Path:
    """Write a file laid out like torch.save's zip format around a hand-made data.pkl."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for k, v in (records or {}).items():
            z.writestr(f"archive/data/{k}", v)
    return path


class _Evil:
    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        import os

        return os.system, (self.cmd,)


def _evil_pickle(marker: Path, as_upstream: bool) -> bytes:
    data = pickle.dumps({"epoch": 0, "model": _Evil(f"touch {marker}"), "tag": __import__("collections").OrderedDict()},
                        protocol=2)
    if as_upstream:  # make it look like an upstream file so the upstream reader is the one tried first
        data = data.replace(b"ccollections\nOrderedDict\n", b"cmodels.yolo\nDetectionModel\n")
    return data


@pytest.mark.parametrize("as_upstream", [False, True])
def test_malicious_pickle_never_runs(tmp_path, monkeypatch, as_upstream):
    marker = tmp_path / "pwned"
    f = _torch_zip(tmp_path / "evil.pt", _evil_pickle(marker, as_upstream))
    assert any("system" in g for g in pickle_globals(f))  # the payload really is in there
    imported = []
    real_import = builtins.__import__

    def spy(name, *a, **k):
        imported.append(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", spy)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(f)
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert not marker.exists()
    assert not {"posix", "models.yolo"} & set(imported)  # torch itself imports os; the payload's module is posix


def test_unknown_module_is_stubbed_not_imported(tmp_path):
    data = b"\x80\x02cno_such_pkg_zz.sub\nThing\n)\x81}b."  # NEWOBJ + BUILD with an empty dict
    obj = read_torch_zip(_torch_zip(tmp_path / "x.pt", data))
    assert type(obj).full_name() == "no_such_pkg_zz.sub.Thing" and obj.stub_state == {}
    assert "no_such_pkg_zz" not in sys.modules


@pytest.mark.parametrize("data,why", [
    (b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x7f\x85R.", "integer size"),  # bytes(2 GB)
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\x00\x00\x7f\x85U\x01b\x87R.",
     "empty numpy"),
    (b"\x80\x02c__builtin__\ngetattr\nccollections\nOrderedDict\nX\x07\x00\x00\x00__new__\x86R.", "stubbed"),
])
def test_allocation_bombs_and_getattr_refused(tmp_path, data, why):
    with pytest.raises(UpstreamPickleError, match=why):
        read_torch_zip(_torch_zip(tmp_path / "bomb.pt", data))


def test_storage_record_too_short_is_refused(tmp_path):
    # persistent id claims 1000 float32 values but the record holds 8 bytes
    pid = ("storage", None, "0", "cpu", 1000)
    buf = io.BytesIO()

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return pid if obj == "T" else None

    P(buf, protocol=2).dump("T")
    data = buf.getvalue().replace(b"N", b"ctorch\nFloatStorage\n", 1)
    with pytest.raises(UpstreamPickleError, match="needs 4000"):
        read_torch_zip(_torch_zip(tmp_path / "short.pt", data, {"0": b"\0" * 8}))


def test_upstream_fixture_converts(tmp_path):
    f = need(FIXTURES / "coco128_n320.pt")
    up = load_upstream(f)
    assert up["model"]["class"] == "models.yolo.DetectionModel"
    ck = load_checkpoint(f)
    assert ck["format"] == FORMAT and ck["task"] == "detect" and ck["nc"] == 80 and ck["epoch"] == 37
    assert isinstance(ck["best_fitness"], float) and ck["stride"] == [8.0, 16.0, 32.0]
    sd = ck["ema"]
    assert "model.0.conv.weight" in sd and sd["model.24.anchors"].shape == (3, 3, 2)
    assert sd["model.0.conv.weight"].dtype == torch.float16 and sd["model.0.conv.weight"].shape == (16, 3, 6, 6)
    assert len(ck["optimizer"]["param_groups"]) == 3 and ck["names"][0] == "person"
    # the converted dict is plain data: it survives a weights_only round trip
    save_checkpoint(ck, tmp_path / "ours.pt")
    ck2 = torch.load(tmp_path / "ours.pt", weights_only=True)
    assert torch.equal(ck2["ema"]["model.24.anchors"], sd["model.24.anchors"])
    assert ck2["opt"]["hyp"]["lr0"] == 0.01


def test_upstream_segment_and_classify_fixtures():
    seg = load_checkpoint(need(FIXTURES / "shapes_seg_n320.pt"))
    assert seg["task"] == "segment" and any(k.startswith("model.24.proto.") for k in seg["model"])
    cls = load_checkpoint(need(FIXTURES / "shapes_cls_n.pt"))
    assert cls["task"] == "classify" and cls["model_yaml"]["head"] == [[-1, 1, "Classify", [3]]]
    assert cls["model_yaml"]["backbone"][0] == [-1, 1, "Conv", [16, 6, 2, 2]]


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"a": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="plain.pt"):
        load_checkpoint(plain)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def _tiny_model():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    m.yaml, m.names, m.nc, m.stride = {"nc": 2, "backbone": [], "head": []}, {0: "a", 1: "b"}, 2, torch.tensor([8.0])
    return m


def test_our_checkpoint_round_trip(tmp_path):
    m = _tiny_model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m(torch.rand(2, 3, 4, 4)).sum().backward()
    opt.step()
    ck = make_checkpoint(m, ema=m, updates=5, optimizer=opt, epoch=3, best_fitness=[0.5],
                         opt={"save_dir": Path("runs/x"), "epochs": 3}, train_state={"rng": rng_state()})
    save_checkpoint(ck, tmp_path / "last.pt")
    raw = torch.load(tmp_path / "last.pt", weights_only=True)  # must load in the safe mode
    assert raw["opt"]["save_dir"] == "runs/x" and raw["best_fitness"] == 0.5 and raw["updates"] == 5
    assert raw["model"]["0.weight"].dtype == torch.float16
    assert raw["model"]["1.num_batches_tracked"].dtype == torch.int64
    back = load_checkpoint(tmp_path / "last.pt")
    assert back["names"] == {0: "a", 1: "b"} and back["task"] == "detect"
    assert "momentum_buffer" in back["optimizer"]["state"][0]
    set_rng_state(back["train_state"]["rng"])
    first = torch.rand(3)
    set_rng_state(back["train_state"]["rng"])
    assert torch.equal(first, torch.rand(3))


def test_atomic_save_keeps_old_file(tmp_path, monkeypatch):
    f = tmp_path / "best.pt"
    save_checkpoint({"format": FORMAT, "v": torch.ones(2)}, f)
    before = f.read_bytes()

    def broken_save(obj, fh, *a, **k):
        fh.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"format": FORMAT, "v": torch.zeros(2)}, f)
    assert f.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_one_serialisation_written_to_every_path(tmp_path, monkeypatch):
    calls = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda *a, **k: calls.append(1) or real_save(*a, **k))
    out = save_checkpoint({"format": FORMAT, "v": torch.arange(3)}, tmp_path / "last.pt", tmp_path / "best.pt",
                          tmp_path / "sub" / "epoch3.pt")
    assert out == tmp_path / "last.pt" and len(calls) == 1
    data = out.read_bytes()
    assert (tmp_path / "best.pt").read_bytes() == data == (tmp_path / "sub" / "epoch3.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "best.pt", weights_only=True)["v"], torch.arange(3))


def test_strip_optimizer(tmp_path):
    src = load_checkpoint(need(FIXTURES / "coco128_n320.pt"))
    f = save_checkpoint(src, tmp_path / "last.pt")
    out = strip_optimizer(f, tmp_path / "stripped.pt")
    ck = torch.load(out, weights_only=True)
    assert ck["optimizer"] is None and ck["ema"] is None and ck["epoch"] == -1 and ck["best_fitness"] is None
    assert all(v.dtype == torch.float16 for v in ck["model"].values() if v.is_floating_point())
    assert torch.equal(ck["model"]["model.0.conv.weight"], src["ema"]["model.0.conv.weight"])
    assert out.stat().st_size < f.stat().st_size
    assert f.exists()  # s given: the source is left alone


def test_intersect_state_dict():
    da = {"model.0.w": torch.zeros(2, 3), "model.24.anchors": torch.zeros(3, 3, 2), "x": torch.zeros(4),
          "y": torch.zeros(1)}
    db = {"model.0.w": torch.ones(2, 3), "model.24.anchors": torch.ones(3, 3, 2), "x": torch.ones(5)}
    assert list(intersect_state_dict(da, db, exclude=("anchor",))) == ["model.0.w"]
    assert set(intersect_state_dict(da, db)) == {"model.0.w", "model.24.anchors"}


def test_load_model_strict_and_forward(log):
    pytest.importorskip("models.yolo")
    f = need(FIXTURES / "shapes_n320.pt")
    # load_model rebuilds from the yaml and loads the upstream-named state dict with strict=True
    with pytest.warns(UserWarning, match="ensemble"):
        model = load_model([f, f], fuse=True)
    assert "157 layers, 1763224 parameters, 0 gradients" in log.text  # an inference model: no trainable parameters
    assert not model.training and model.names == {0: "rect", 1: "circle", 2: "triangle"}
    assert next(model.parameters()).dtype == torch.float32
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    with torch.no_grad():
        pred = model(torch.rand(1, 3, 320, 320))[0]
    assert pred.shape == (1, 3 * (40 * 40 + 20 * 20 + 10 * 10), 8) and torch.isfinite(pred).all()


def test_load_model_upstream_classifier():
    pytest.importorskip("models.yolo")
    model = load_model(need(FIXTURES / "shapes_cls_n.pt"))  # its yaml is rebuilt from the pickled layer shapes
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 3)
