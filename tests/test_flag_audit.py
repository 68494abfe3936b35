"""Loose ends of the v7.0 flag audit: classify --optimizer RMSProp, --quad where the quad loader is refused,
--cache val, segment/val.py --save-json masks as COCO RLE."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import write_checkpoint


@pytest.fixture(scope="module")
def tiny_cls(tmp_path_factory):
    from utils.tasks.classify.synthetic import generate_shapes_cls

    return generate_shapes_cls(tmp_path_factory.mktemp("cls") / "shapes-cls", n_train=6, n_val=3, size=32)


def test_classify_rmsprop(tiny_cls, tmp_path, monkeypatch):
    from classify import train
    from utils.engine import trainer

    built = []
    real = trainer.smart_optimizer
    monkeypatch.setattr(trainer, "smart_optimizer", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    assert train.parse_opt(["--optimizer", "RMSProp"]).optimizer == "RMSProp"  # v7.0's classify choices
    train.run(data=str(tiny_cls), imgsz=64, epochs=1, batch_size=8, workers=0, device="cpu", optimizer="RMSProp",
              project=str(tmp_path), name="exp")
    assert [type(o) for o in built] == [torch.optim.RMSprop]
    assert all("square_avg" in s for s in built[0].state.values()) and built[0].state  # it stepped
