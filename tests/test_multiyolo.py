"""Multi YOLO V5: its YAMLs build as they are with its parameter counts, its checkpoints load without running
pickled code and reproduce its reference outputs, its Lab and Base heads train and export, and fine-tuning from
its checkpoints keeps the weights that fit."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, SHARED, need

from models.build import build_model
from models.multiyolo import SegMaskBase, SegMaskBiSe, SegMaskLab, SegMaskPSP
from models.semantic import with_semantic_head
from models.yolo import load_yaml_cfg, parse_model
from utils.checkpoint import checkpoint_kind, load_checkpoint, load_model
from utils.log import quiet

MY = SHARED / "fixtures" / "multiyolov5"

# Multi YOLO V5's yolov5s_city_seg.yaml, written out here (v5.0 backbone: Focus, SPP); {seg} is the head row.
CITY_S = """
nc: 10
n_segcls: 19
depth_multiple: 0.33
width_multiple: 0.50
anchors:
  - [10,13, 16,30, 33,23]
  - [30,61, 62,45, 59,119]
  - [116,90, 156,198, 373,326]
backbone:
  [[-1, 1, Focus, [64, 3]], [-1, 1, Conv, [128, 3, 2]], [-1, 3, C3, [128]], [-1, 1, Conv, [256, 3, 2]],
   [-1, 9, C3, [256]], [-1, 1, Conv, [512, 3, 2]], [-1, 9, C3, [512]], [-1, 1, Conv, [1024, 3, 2]],
   [-1, 1, SPP, [1024, [5, 9, 13]]], [-1, 3, C3, [1024, False]]]
head:
  [[-1, 1, Conv, [512, 1, 1]], [-1, 1, nn.Upsample, [None, 2, 'nearest']], [[-1, 6], 1, Concat, [1]],
   [-1, 3, C3, [512, False]], [-1, 1, Conv, [256, 1, 1]], [-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [[-1, 4], 1, Concat, [1]], [-1, 3, C3, [256, False]], [-1, 1, Conv, [256, 3, 2]], [[-1, 14], 1, Concat, [1]],
   [-1, 3, C3, [512, False]], [-1, 1, Conv, [512, 3, 2]], [[-1, 10], 1, Concat, [1]], [-1, 3, C3, [1024, False]],
   {seg},
   [[17, 20, 23], 1, Detect, [nc, anchors]]]
"""
SEG_ROWS = {
    "SegMaskPSP": "[[16, 19, 22], 1, SegMaskPSP, [n_segcls, 3, 256, False]]",
    "SegMaskBiSe": "[[16, 19, 22], 1, SegMaskBiSe, [n_segcls, 3, 256, False]]",
    "SegMaskLab": "[[4, 19], 1, SegMaskLab, [n_segcls, 3, 256, False]]",
    "SegMaskBase": "[[16], 1, SegMaskBase, [n_segcls, 3, 512, False]]",
}
# (total, seg head) parameters of the s model with nc=10, n_segcls=19: PSP and BiSe as the fixture README states,
# Lab and Base as the spec's table rounds them (8.21M / 1.13M, 7.70M / 0.61M); Detect is 40,455 in all four.
COUNTS = {"SegMaskPSP": (7760090, 672275), "SegMaskBiSe": (8842112, 1754297), "SegMaskLab": (8213274, 1125459),
          "SegMaskBase": (7697479, 609664)}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference outputs were computed with one thread
    yield
    torch.set_num_threads(n)


def city_yaml(head: str) -> dict:
    return yaml.safe_load(CITY_S.replace("{seg}", SEG_ROWS[head]))


@pytest.mark.parametrize("head", list(COUNTS))
def test_multiyolo_yaml_builds_as_it_is_with_its_counts(head):
    d = load_yaml_cfg(city_yaml(head))
    assert d["nc_seg"] == 19 and "n_segcls" not in d and d["semantic"][0][2] == head
    with torch.device("meta"), quiet():
        layers, _ = parse_model(d, [3])
    total, seg = COUNTS[head]
    assert sum(p.numel() for p in layers.parameters()) == total
    assert layers[-1].np == seg and layers[-2].np == 40455  # semantic head numbered after Detect (layer 24)
    assert layers[-1].f == yaml.safe_load(SEG_ROWS[head])[0]


def test_yaml_errors_are_one_line():
    d = city_yaml("SegMaskPSP")
    d["head"].insert(3, d["head"].pop(-2))  # the head not right before Detect
    with pytest.raises(ValueError, match="one SegMask head, the row just before Detect"):
        load_yaml_cfg(d)
    d = city_yaml("SegMaskPSP")
    del d["n_segcls"]
    with pytest.raises(ValueError, match="needs n_segcls"):
        load_yaml_cfg(d)


def _fixture_input(name: str) -> torch.Tensor:
    import cv2

    im = cv2.imread(str(MY / f"{name}_input.png"))[:, :, ::-1]  # RGB
    x = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float() / 255
    return torch.stack([x, x.flip(-1)])


def _assert_matches_reference(model: torch.nn.Module, name: str) -> None:
    from utils.nms import non_max_suppression

    ref = torch.load(MY / f"{name}_outputs.pt", weights_only=True)
    with torch.no_grad():
        det, _, seg = model(_fixture_input(name))
    # README: fused vs unfused differ by up to 1.2e-4 relative in xywh, 2e-5 in scores and logits
    xywh = (det[..., :4] - ref["det"][..., :4]).abs() / ref["det"][..., :4].abs().clamp_min(1)
    assert xywh.max() < 2e-4
    assert (det[..., 4:] - ref["det"][..., 4:]).abs().max() < 5e-5
    assert (seg[:, :, ::4, ::4] - ref["seg_s4"]).abs().max() < 5e-5
    top2 = seg.topk(2, 1).values
    unsure = (top2[:, 0] - top2[:, 1]) < 1e-4  # argmax may legitimately flip only there
    assert ((seg.argmax(1).to(torch.uint8) != ref["seg_argmax"]) & ~unsure).sum() == 0
    kept = non_max_suppression(det, 0.25, 0.45)[0]
    assert kept.shape == ref["nms0"].shape
    assert (kept[:, :4] - ref["nms0"][:, :4]).abs().max() < 0.05 and torch.equal(kept[:, 5], ref["nms0"][:, 5])


@pytest.mark.parametrize("name", ["psp_s", "bise_s"])
def test_reference_checkpoint_reproduces_its_outputs(name):
    w = need(MY / f"{name}.pt")
    assert checkpoint_kind(w) == "semantic"
    ck = load_checkpoint(w)  # nothing of the pickle runs: models.yolo.SegMask* and friends become stubs
    assert ck["source"] == "multiyolo" and ck["nc"] == 10 and ck["nc_seg"] == 19 and ck["names"][0] == "car"
    assert ck["stride"] == [8.0, 16.0, 32.0] and ck["epoch"] == -1
    with quiet():
        model = load_model(w)  # fused, as the reference's attempt_load
    assert sum(p.numel() for p in model.parameters()) == {"psp_s": 7749498, "bise_s": 8830880}[name]
    _assert_matches_reference(model, name)
    with quiet():
        hub = torch.hub.load(str(ROOT), "custom", path=str(w), source="local", autoshape=False)
    _assert_matches_reference(hub, name)


def test_reference_yaml_file_builds_as_it_is():
    with quiet():
        model = build_model(need(MY / "psp_s.yaml"))
    assert isinstance(model.semantic[-1], SegMaskPSP) and model.nc_seg == 19
    assert sum(p.numel() for p in model.parameters()) == 7760090


def test_scripts_take_a_multiyolo_checkpoint(tmp_path):
    import detect
    import export
    from utils.export.backend import load_backend

    w = tmp_path / "psp_s.pt"
    w.write_bytes(need(MY / "psp_s.pt").read_bytes())
    src = MY / "psp_s_input.png"
    out = detect.run(weights=str(w), source=str(src), imgsz=[256, 512], project=str(tmp_path), name="d")
    assert (out / src.name).is_file() and (out / "maps" / f"{src.stem}.png").is_file()
    export.run(weights=[str(w)], include=["onnx"], imgsz=[256, 512], device="cpu")
    onnx = load_backend(w.with_suffix(".onnx"))
    assert onnx.task == "semantic"
    x = _fixture_input("psp_s")[:1]
    with torch.no_grad():
        got = onnx(x)
    ref = torch.load(MY / "psp_s_outputs.pt", weights_only=True)
    boxes, logits = got[0], got[-1]
    assert (boxes[0, :, 4:] - ref["det"][0, :, 4:]).abs().max() < 1e-3
    assert (logits[0, :, ::4, ::4] - ref["seg_s4"][0]).abs().max() < 1e-3


def test_val_takes_a_multiyolo_checkpoint(tmp_path):
    import val
    from utils.data.synthetic import generate_shapes

    w = need(MY / "bise_s.pt")
    generate_shapes(tmp_path, n_train=2, n_val=4, seed=1, imgsz_range=(64, 96))
    names = {i: f"c{i}" for i in range(10)}
    seg_names = {i: f"s{i}" for i in range(19)}
    data = tmp_path / "my.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path / "semantic"), "train": "images/train",
                                    "val": "images/val", "names": names,
                                    "semantic": {"masks_dir": "masks", "names": seg_names}}))
    res = val.run(weights=str(w), data=str(data), imgsz=64, project=str(tmp_path), name="v")
    assert 0 <= res.figures["metrics/mIoU"] <= 1 and 0 <= res.figures["metrics/mAP_0.5"] <= 1


# ------------------------------------------------------------------------------------------ Lab and Base heads
@pytest.mark.parametrize("head,cls,levels", [("lab", SegMaskLab, [4, 19]), ("base", SegMaskBase, [16])])
def test_new_heads_build_train_one_step_and_export(head, cls, levels, tmp_path):
    import onnxruntime as ort

    d = with_semantic_head(load_yaml_cfg("yolov5n-city.yaml"), head, nc_seg=5)
    assert d["semantic"][0][0] == levels
    with quiet():
        model = build_model(d, nc=3)
    assert isinstance(model.semantic[-1], cls)
    x, target = torch.rand(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    model.train()
    det, seg, aux = model(x)
    assert seg.shape == (2, 5, 64, 64) and aux == []
    before = [p.detach().clone() for p in model.semantic.parameters()]
    loss = torch.nn.functional.cross_entropy(seg, target) + sum(p.sigmoid().mean() for p in det)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.semantic.parameters()))
    model.eval()
    f = tmp_path / f"{head}.onnx"
    model.model[-1].export = True
    with torch.no_grad():
        ref = model(x)
        torch.onnx.export(model, (x,), str(f), opset_version=17, input_names=["images"], dynamo=False)
    got = ort.InferenceSession(str(f)).run(None, {"images": x.numpy()})
    assert np.abs(got[-1] - ref[-1].numpy()).max() < 1e-3 and got[-1].shape == (2, 5, 64, 64)


def test_bise_head_trains_with_its_two_auxiliary_outputs():
    d = load_yaml_cfg(city_yaml("SegMaskBiSe"))
    d.update(depth_multiple=0.33, width_multiple=0.25)
    with quiet():
        model = build_model(d)
    _, seg, aux = model.train()(torch.rand(2, 3, 64, 64))
    assert isinstance(model.semantic[-1], SegMaskBiSe) and len(aux) == 2
    assert all(a.shape == seg.shape == (2, 19, 64, 64) for a in aux)


def test_finetuning_from_a_reference_checkpoint_keeps_every_weight_that_fits(tmp_path, log):
    import train
    from utils.data.synthetic import generate_shapes

    w = need(MY / "psp_s.pt")
    generate_shapes(tmp_path, n_train=4, n_val=2, seed=1, imgsz_range=(64, 64))
    data = tmp_path / "d.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path / "semantic"), "train": "images/train", "val": "images/val",
                                    "names": {i: f"c{i}" for i in range(10)},
                                    "semantic": {"masks_dir": "masks", "names": {i: f"s{i}" for i in range(19)}}}))
    train.run(data=str(data), cfg="yolov5s-city.yaml", weights=str(w), imgsz=64, batch_size=2, epochs=1, workers=0,
              noautoanchor=True, noval=True, project=str(tmp_path), name="ft")
    moved, total = map(int, re.search(r"Transferred (\d+)/(\d+) items", log.text).groups())
    # What fits: v7.0's backbone differs from v5.0's at layers 0 (Conv vs Focus), 4 (2 vs 3 bottlenecks), 8-9
    # (C3 + SPPF vs SPP + C3); the neck and Detect (nc=10) are the same; the -city YAML's SemanticPSP is not
    # Multi YOLO V5's SegMaskPSP. Counted from the two state dicts: same name and shape.
    ck = load_checkpoint(w)
    with quiet():
        ours = build_model("yolov5s-city.yaml", nc=10, nc_seg=19).state_dict()
    fits = {k for k, v in ck["model"].items() if k in ours and ours[k].shape == v.shape and "anchor" not in k}
    assert moved == len(fits) and total == len(ours)
    assert all(k in fits for k in ours if k.startswith(("model.1.", "model.13.", "model.24.m.")))
    assert not any(k.startswith(("model.0.", "semantic.")) for k in fits)
    assert (moved, total) == (314, 423)  # measured


def _standin_modules(model: torch.nn.Module, monkeypatch, anchor_grid: bool) -> None:
    """Re-class every models.* module of `model` as a stand-in whose pickled class path is upstream v5.0/v6.x's
    (models.common.Focus, models.yolo.Model, ...); anchor_grid: give Detect v5.0's anchor_grid buffer."""
    import sys
    import types

    fakes = {"models.common": types.ModuleType("models.common"), "models.yolo": types.ModuleType("models.yolo")}
    made: dict[str, type] = {}
    for m in model.modules():
        cls = type(m)
        if not cls.__module__.startswith("models."):
            continue
        name = "Model" if cls.__name__.endswith("DetectionModel") else cls.__name__
        where = "models.yolo" if name in ("Model", "Detect") or name.startswith("SegMask") else "models.common"
        if name not in made:
            made[name] = type(name, (torch.nn.Module,), {"__module__": where, "__qualname__": name})
            setattr(fakes[where], name, made[name])
        if cls.__name__ == "Detect" and anchor_grid:
            del m.anchor_grid  # ours is a list attribute, v5.0's a buffer
            m.register_buffer("anchor_grid", (m.anchors * m.stride.view(-1, 1, 1)).view(m.nl, 1, -1, 1, 1, 2))
        m.__class__ = made[name]
    for k, v in fakes.items():
        monkeypatch.setitem(sys.modules, k, v)


@pytest.mark.parametrize("release,head", [("v5.0", None), ("v5.0", "SegMaskLab"), ("v6.x", None)])
def test_older_checkpoints_load_and_predict_the_same(release, head, tmp_path, monkeypatch):
    """A pickle written with upstream v5.0's class paths (Focus, SPP, models.yolo.Model, Detect.anchor_grid; with a
    SegMask head: Multi YOLO V5's layout, head at layer 24 before Detect), or v6.x's (models.yolo.Model, SPPF, no
    anchor_grid buffer), loads and gives the model's outputs."""
    d = city_yaml(head or "SegMaskPSP") if release == "v5.0" else load_yaml_cfg("yolov5n.yaml")
    d.update(width_multiple=0.125, nc=3)
    if release == "v5.0" and head is None:
        del d["head"][-2], d["n_segcls"]
    with quiet():
        model = build_model(load_yaml_cfg(d)).eval().half().float()  # the weights as an fp16 checkpoint holds them
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        ref = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if head:  # back to the reference's order: head at layer 24 inside model, Detect at 25
        seg = model.semantic[0]
        model.model = torch.nn.Sequential(*model.model[:-1], seg, model.model[-1])
        del model.semantic
    tree = type(model).__new__(type(model))
    tree.__dict__.update(model.__dict__)
    tree.yaml = d  # what v5.0 pickled: the YAML as read
    _standin_modules(tree, monkeypatch, anchor_grid=release == "v5.0")
    f = tmp_path / "v50.pt"
    torch.save({"epoch": -1, "best_fitness": np.array([0.5]), "training_results": None, "model": tree.half(),
                "optimizer": None, "wandb_id": None}, f)
    monkeypatch.undo()
    from utils.upstream_pickle import pickle_globals

    names = pickle_globals(f)
    assert "models.yolo Model" in names and f"models.common {'Focus' if release == 'v5.0' else 'SPPF'}" in names
    kind = checkpoint_kind(f)
    assert kind == ("semantic" if head else "detect")
    ck = load_checkpoint(f)
    assert not any(k.endswith("anchor_grid") for k in ck["model"])
    with quiet():
        loaded = load_model(f, fuse=False)
    got_sd = loaded.state_dict()
    assert all(torch.equal(got_sd[k].half(), v.half()) for k, v in state.items() if v.is_floating_point())
    with torch.no_grad():
        got = loaded(x)
    assert (got[0] - ref[0]).abs().max() < 1e-3
    if head:
        assert got[-1].shape == (1, 19, 64, 96) and (got[-1] - ref[-1]).abs().max() < 1e-4
