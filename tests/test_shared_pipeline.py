"""Against upstream YOLOv5 v7.0 on real checkpoints and data from ../shared (skipped when it is absent)."""

from __future__ import annotations

import pytest
from conftest import DATASETS, FIXTURES, need


def sig3(x: float) -> float:
    """Round to the 3 significant digits val.py prints (%.3g)."""
    return float(f"{x:.3g}")


def run_val(weights, data, tmp_path, **kw):
    import val

    return val.run(weights=[str(weights)], data=str(data), imgsz=320, batch_size=32, workers=0,
                   project=str(tmp_path), **kw)


@pytest.mark.shared
def test_val_reproduces_upstream_on_shapes_checkpoint(tmp_path):
    res = run_val(need(FIXTURES / "shapes_n320.pt"), need(FIXTURES / "shapes_val/shapes_val.yaml"), tmp_path,
                  verbose=True)
    p, r, m50, m = res.figures.values()
    assert (sig3(p), sig3(r), sig3(m50), sig3(m)) == (0.971, 0.996, 0.986, 0.789)
    assert (tmp_path / "exp" / "confusion_matrix.png").exists() and (tmp_path / "exp" / "PR_curve.png").exists()


@pytest.mark.shared
def test_val_reproduces_upstream_on_coco128_checkpoint(tmp_path):
    res = run_val(need(FIXTURES / "coco128_n320.pt"), need(DATASETS / "coco128/coco128.yaml"), tmp_path)
    p, r, m50, m = res.figures.values()
    assert (sig3(p), sig3(r), sig3(m50), sig3(m)) == (0.000352, 0.0216, 0.00318, 0.00135)
    assert res.metric.seen == 128 and int(res.metric._result["nt"].sum()) == 929


@pytest.mark.shared
@pytest.mark.slow
def test_fine_tuning_the_shapes_checkpoint_keeps_its_accuracy(tmp_path):
    from utils.engine.config import TrainConfig
    from utils.engine.trainer import Trainer
    from utils.tasks.detect.task import DetectionTask

    cfg = TrainConfig(weights=str(need(FIXTURES / "shapes_n320.pt")),
                      data=str(need(FIXTURES / "shapes_val/shapes_val.yaml")), imgsz=320, epochs=3, batch_size=16,
                      workers=0, noplots=True, project=str(tmp_path))
    figures = Trainer(cfg, DetectionTask()).fit()
    assert figures["metrics/mAP_0.5"] >= 0.9


@pytest.mark.shared
def test_save_json_is_scored_by_pycocotools(tmp_path):
    coco = need(DATASETS / "coco128/coco128.yaml")
    ann = need(DATASETS / "coco_json_mini/annotations/instances_train2017.json")
    names = coco.read_text().split("names:", 1)[1].split("download:", 1)[0]
    y = tmp_path / "coco_json.yaml"
    y.write_text(f"path: {coco.parent}\ntrain: images/train2017\nval: images/train2017\ncoco_json: {ann}\n"
                 f"names:{names}")
    res = run_val(need(FIXTURES / "coco128_n320.pt"), y, tmp_path, save_json=True)
    import json

    preds = json.loads((tmp_path / "exp" / "coco128_n320_predictions.json").read_text())
    assert preds and {"image_id", "category_id", "bbox", "score"} <= set(preds[0])
    assert all(1 <= p["category_id"] <= 90 for p in preds)  # mapped to the annotation file's COCO ids
    assert 0 < res.figures["metrics/mAP_0.5"] < 0.01  # pycocotools' figure replaced ours, same order of magnitude
