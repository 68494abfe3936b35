"""One inference path: for every task, its predict script, the hub model and the REST server give the same result on
the same image (they share the task's preprocessing, post-processing and Task.to_original)."""

from __future__ import annotations

import base64
import importlib

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, write_checkpoint

IMGSZ = 128
CONF = 0.3
# task: (predict script module, model YAML, classifier?, seed: one whose random masks are not all empty)
CASES = {"detect": ("detect", "yolov5n.yaml", False, 0), "segment": ("segment.predict", "yolov5n-seg.yaml", False, 1),
         "classify": ("classify.predict", "yolov5n.yaml", True, 0),
         "semantic": ("detect", "yolov5n-city.yaml", False, 0)}


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> tuple:
    """A non-square PNG (lossless, so every reader decodes the same pixels) and its bytes."""
    im = cv2.imread(str(ROOT / "data/images/shapes1.jpg"))[:150, :230]
    f = tmp_path_factory.mktemp("img") / "probe.png"
    cv2.imwrite(str(f), im)
    return f, f.read_bytes()


def _script(task: str, weights, source, project) -> dict:
    """Run the task's predict script with --save-txt and return its run folder."""
    module, _, cls, _ = CASES[task]
    kw = {} if cls else {"conf_thres": CONF, "save_conf": True}
    return importlib.import_module(module).run(weights=[str(weights)], source=str(source), imgsz=[IMGSZ],
                                                device="cpu", save_txt=True, project=str(project), name="exp", **kw)


def _server(weights):
    from fastapi.testclient import TestClient

    from utils.hub.create import custom
    from utils.serve import Served, create_app

    return TestClient(create_app({"m": Served(custom(weights, device="cpu", _verbose=False))}, conf=CONF,
                                 imgsz=IMGSZ))


@pytest.mark.parametrize("task", list(CASES))
def test_script_hub_and_server_agree(task, image, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    from utils.hub.create import custom

    _, cfg, cls, seed = CASES[task]
    weights = write_checkpoint(tmp_path / f"{task}.pt", cfg=cfg, nc=3, cls=cls, seed=seed, sharp=not cls)
    png, data = image
    run_dir = _script(task, weights, png, tmp_path / "runs")
    hub = custom(weights, device="cpu", _verbose=False)(str(png), size=IMGSZ, conf=CONF)
    client = _server(weights)
    served = client.post("/v1/predict/m", files={"image": ("probe.png", data, "image/png")}).json()
    records = client.post("/v1/object-detection/m", files={"image": ("probe.png", data, "image/png")}).json()
    assert served["records"] == records == hub.records()[0]  # server and hub: the same records
    h, w = cv2.imread(str(png)).shape[:2]
    lines = [x.split() for x in (run_dir / "labels" / "probe.txt").read_text().splitlines()] \
        if (run_dir / "labels" / "probe.txt").exists() else []
    if task == "classify":
        top = [(f"{float(p):.2f}", name) for p, name in lines]
        assert top == [(f"{r['confidence']:.2f}", r["name"]) for r in records]  # the script's top-5 = the server's
        return
    boxes = hub.xyxy[0].round()
    assert len(boxes) > 0, "the test model should detect something at this threshold"
    if task == "segment":  # the script writes one polygon per non-empty mask: its extent is the mask's
        drawn = [r for r in records if len(r["segment"])]
        assert len(lines) == len(drawn) > 0
        for line, rec in zip(lines, drawn):
            xy = np.array(line[1:-1], float).reshape(-1, 2) * (w, h)
            seg = np.array(rec["segment"])
            assert int(line[0]) == rec["class"] and abs(float(line[-1]) - rec["confidence"]) < 1e-4
            np.testing.assert_allclose(xy.min(0), seg.min(0), atol=1.0)
            np.testing.assert_allclose(xy.max(0), seg.max(0), atol=1.0)
        return
    rows = np.array(lines[::-1], float)  # the script writes lowest confidence first
    assert len(rows) == len(boxes)
    xywh = torch.cat(((boxes[:, :2] + boxes[:, 2:4]) / 2, boxes[:, 2:4] - boxes[:, :2]), 1) / torch.tensor([w, h] * 2)
    np.testing.assert_allclose(rows[:, 1:5], xywh.numpy(), atol=1e-4)
    np.testing.assert_allclose(rows[:, 5], hub.xyxy[0][:, 4].numpy(), atol=1e-4)
    assert (rows[:, 0] == hub.xyxy[0][:, 5].numpy()).all()
    if task == "semantic":  # the class map: the script's colour map, the hub's ids, the server's PNG of ids
        ids = cv2.imdecode(np.frombuffer(base64.b64decode(served["class_map"]), np.uint8), cv2.IMREAD_UNCHANGED)
        assert (ids == hub.semantic[0].numpy()).all()
        from utils.tasks.semantic.palette import colourise, palette_for

        drawn = colourise(hub.semantic[0], palette_for(len(hub.semantic_names)), bgr=True)
        saved = cv2.imread(str(run_dir / "maps" / "probe.png"))
        assert (saved == drawn).all()
