"""--augment (test-time augmentation) in val.py, detect.py, segment/val.py and segment/predict.py: never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import FIXTURES, need


def _checkpoint(tmp_path: Path, cfg: str, nc: int) -> str:
    from models.build import build_model
    from utils.checkpoint import make_checkpoint, save_checkpoint
    from utils.log import quiet

    torch.manual_seed(0)
    with quiet():
        return str(save_checkpoint(make_checkpoint(build_model(cfg, nc=nc)), tmp_path / f"{Path(cfg).stem}.pt"))


def test_val_augment_runs_on_cpu_chunks(tiny_data, tmp_path):
    import val

    w = _checkpoint(tmp_path, "yolov5n.yaml", 4)
    # batch 8 at 64 px: the CPU evaluator forwards chunks and joins the (predictions, None) TTA outputs
    res = val.run(weights=w, data=tiny_data, imgsz=64, batch_size=8, augment=True, project=str(tmp_path / "v"))
    assert set(res.figures) == {"metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95"}


def test_detect_augment_writes_results(tiny_data, tmp_path):
    import detect

    w = _checkpoint(tmp_path, "yolov5n.yaml", 4)
    src = Path(tiny_data).parent / "det" / "images" / "val"
    out = detect.run(weights=w, source=str(src), imgsz=[64], augment=True, conf_thres=0.0, save_txt=True,
                     project=str(tmp_path / "d"))
    assert len(list(out.glob("*.jpg"))) == len(list(src.glob("*.jpg"))) and list(out.glob("labels/*.txt"))


def test_val_augment_on_the_upstream_fixture_matches_plain_validation_closely(tmp_path):
    import val

    w = need(FIXTURES / "shapes_n320.pt")
    data = need(FIXTURES / "shapes_val" / "shapes_val.yaml")
    plain = val.run(weights=str(w), data=str(data), imgsz=320, project=str(tmp_path), name="plain").figures
    tta = val.run(weights=str(w), data=str(data), imgsz=320, augment=True, project=str(tmp_path), name="tta").figures
    assert plain["metrics/mAP_0.5"] == pytest.approx(0.986, abs=1e-3)  # upstream's figure, as before
    # flips and smaller scales of a well-trained model: the same objects, slightly different boxes
    assert tta["metrics/mAP_0.5"] > 0.95 and abs(tta["metrics/mAP_0.5:0.95"] - plain["metrics/mAP_0.5:0.95"]) < 0.1


def _seg_data(tmp_path: Path) -> str:
    from utils.data.synthetic import generate_shapes

    generate_shapes(tmp_path / "shapes", n_train=2, n_val=4, seed=3, imgsz_range=(64, 96))
    y = tmp_path / "seg.yaml"
    y.write_text(f"path: {tmp_path / 'shapes' / 'seg'}\ntrain: images/train\nval: images/val\n"
                 "names: {0: rectangle, 1: ellipse, 2: triangle, 3: star}\n")
    return str(y)


def test_segment_val_and_predict_say_augment_is_not_supported(tmp_path, log):
    import segment.predict
    import segment.val

    w = _checkpoint(tmp_path, "yolov5n-seg.yaml", 4)
    data = _seg_data(tmp_path)
    plain = segment.val.run(weights=w, data=data, imgsz=64, project=str(tmp_path / "v"), name="a").figures
    tta = segment.val.run(weights=w, data=data, imgsz=64, augment=True, project=str(tmp_path / "v"), name="b").figures
    assert tta == plain  # one warning, then plain validation
    warnings = [r.getMessage() for r in log.records if "--augment" in r.getMessage()]
    assert len(warnings) == 1 and "not supported for the 'segment' task" in warnings[0]
    out = segment.predict.run(weights=w, source=str(tmp_path / "shapes" / "seg" / "images" / "val"), imgsz=[64],
                              augment=True, project=str(tmp_path / "p"))
    assert len(list(out.glob("*.jpg"))) == 4
    assert sum("--augment" in r.getMessage() for r in log.records) == 2
