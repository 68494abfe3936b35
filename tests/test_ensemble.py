"""Ensembles as upstream v7.0: several --weights in val.py and detect.py run every model and merge their candidate
boxes before one NMS."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_checkpoint

from models.ensemble import Ensemble
from utils.export.backend import BackendError, load_backend
from utils.nms import non_max_suppression


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("ens")
    return [write_checkpoint(d / "a.pt", seed=1, sharp=True), write_checkpoint(d / "b.pt", seed=2, sharp=True)]


def test_ensemble_concatenates_every_models_candidates_before_one_nms(two):
    a, b = (load_backend(w) for w in two)
    ens = load_backend([str(w) for w in two])
    assert isinstance(ens, Ensemble) and len(ens) == 2 and ens.names == a.names and ens.task == "detect"
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        ya, yb, (y, maps) = a(x)[0], b(x)[0], ens(x)
    assert maps == [] and torch.equal(y, torch.cat([ya, yb], 1))
    merged = non_max_suppression(y, 0.3, 0.45)[0]
    alone = [non_max_suppression(t, 0.3, 0.45)[0] for t in (ya, yb)]
    assert len(merged) <= len(alone[0]) + len(alone[1]) and len(merged) >= max(map(len, alone)) > 0
    # the best box of the ensemble is the better of the two models' best boxes
    assert merged[0, 4] == max(t[0, 4] for t in alone)


def test_val_and_detect_take_several_weights(two, tiny_data, tmp_path):
    import detect
    import val

    ws = [str(w) for w in two]
    res = val.run(weights=ws, data=tiny_data, imgsz=64, project=str(tmp_path), name="v")
    assert 0 <= res.figures["metrics/mAP_0.5"] <= 1
    src = sorted((Path(tiny_data).parent / "det" / "images" / "val").glob("*.jpg"))[0]
    txt = {}
    for name, w in (("one", ws[:1]), ("same", [ws[0], ws[0]]), ("both", ws)):
        out = detect.run(weights=w, source=str(src), imgsz=[64], conf_thres=0.3, save_txt=True, save_conf=True,
                         project=str(tmp_path), name=name)
        f = out / "labels" / f"{src.stem}.txt"
        txt[name] = f.read_text() if f.is_file() else ""
    assert txt["same"] == txt["one"] != ""  # a model twice: its duplicate boxes are suppressed by the one NMS
    assert txt["both"] != txt["one"]


def test_ensembles_combine_detectors_only(two, tmp_path):
    seg = write_checkpoint(tmp_path / "seg.pt", cfg="yolov5n-seg.yaml")
    with pytest.raises(BackendError, match="ensembles .* combine detection models"):
        load_backend([str(two[0]), str(seg)])
    other = write_checkpoint(tmp_path / "nc3.pt", nc=3)
    with pytest.raises(BackendError, match="an ensemble needs models of the same classes"):
        load_backend([str(two[0]), str(other)])
