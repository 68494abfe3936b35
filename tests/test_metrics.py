"""Detection metrics: upstream ap_per_class parity, AP on hand-made curves, matching, confusion matrix, fitness."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from conftest import FIXTURES, need

from utils.metrics import ConfusionMatrix, ap_per_class, ap_summary, compute_ap, match_predictions, smooth

IOUV = torch.linspace(0.5, 0.95, 10)


def test_ap_per_class_parity_with_upstream():
    d = torch.load(need(FIXTURES / "ap.pt"), weights_only=True)
    out = ap_per_class(d["tp"].numpy(), d["conf"].numpy(), d["pred_cls"].numpy(), d["target_cls"].numpy())
    for key, got in zip(("out_tp", "out_fp", "p", "r", "f1", "ap", "classes"), out):
        ref = d[key].numpy()
        assert got.shape == ref.shape, key
        assert np.abs(got - ref).max() <= 1e-6, key
    # class 7 has labels but no predictions: everything 0
    assert out[5][-1].sum() == 0 and out[2][-1] == 0


def test_compute_ap_perfect_and_half():
    # The final sentinel precision 0 is read at recall 1.0, so the last of 100 trapezoids is half-height:
    # a perfect detector scores 1 - 0.01 / 2 = 0.995 (as upstream).
    ap, mpre, mrec = compute_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0]))
    assert ap == pytest.approx(0.995, abs=1e-12)
    assert mrec[0] == 0 and mrec[-1] == 1 and mpre[-1] == 0
    # precision 1 up to recall 0.5, then a linear ramp to the sentinel (recall 1, precision 0): 0.5 + 0.25
    ap, *_ = compute_ap(np.array([0.5]), np.array([1.0]))
    assert ap == pytest.approx(0.75, abs=1e-12)
    # the envelope lifts an early precision dip to the later maximum
    ap, mpre, _ = compute_ap(np.array([0.25, 0.5, 1.0]), np.array([0.5, 1.0, 1.0]))
    assert ap == pytest.approx(0.995, abs=1e-12) and mpre[1] == 1.0


def test_ap_per_class_perfect_detector_and_missing_class(tmp_path):
    tp = np.ones((5, 10), bool)
    conf = np.linspace(0.9, 0.5, 5)
    pred_cls = np.zeros(5)
    target_cls = np.array([0, 0, 0, 0, 0, 1.0])
    has_plots = importlib.util.find_spec("utils.plots") is not None
    tp_, fp, p, r, f1, ap, classes = ap_per_class(tp, conf, pred_cls, target_cls, plot=True, save_dir=tmp_path,
                                                  names={0: "a", 1: "b", 2: "c"}, prefix="Box")
    assert classes.tolist() == [0, 1]
    assert ap[0] == pytest.approx(np.full(10, 0.995)) and ap[1].sum() == 0
    assert p[0] == pytest.approx(1.0) and r[0] == pytest.approx(1.0) and tp_[0] == 5 and fp[0] == 0
    mp, mr, map50, map_ = ap_summary(p, r, ap)
    assert map50 == pytest.approx(0.4975) and map_ == pytest.approx(0.4975)
    if has_plots:
        for f in ("BoxPR_curve.png", "BoxF1_curve.png", "BoxP_curve.png", "BoxR_curve.png"):
            assert (tmp_path / f).is_file(), f


def test_smooth_and_fitness():
    y = np.full(50, 0.3)
    assert smooth(y, 0.1) == pytest.approx(y)
    step = smooth(np.r_[np.zeros(50), np.ones(50)], 0.1)  # window of 11 samples
    assert len(step) == 100 and step[44] == 0 and step[55] == pytest.approx(1) and step[50] == pytest.approx(6 / 11)
    assert len(smooth(np.arange(1000.0), 0.1)) == 1000  # the ap_per_class case: 101-sample window
    assert smooth(np.arange(1000.0), 0.1)[500] == pytest.approx(500)
    from utils.tasks.detect.task import DetectionTask

    task = DetectionTask()  # fitness = 0.1 mAP50 + 0.9 mAP50-95, owned by the task (no twin in utils.metrics)
    figures = dict(zip(task.metric_names, (0.5, 0.6, 0.7, 0.4)))
    assert task.fitness(figures) == pytest.approx(0.07 + 0.36)


def test_match_predictions():
    labels = torch.tensor([[0, 0, 0, 10, 10], [0, 20, 20, 30, 30.0]])
    det = torch.tensor([[0, 0, 10, 10, 0.9, 0],  # exact: label 0
                        [0, 0, 10, 9, 0.8, 0],  # IoU 0.9 with label 0, which d0 already took
                        [20, 20, 30, 30, 0.7, 1],  # right place, wrong class
                        [20, 20, 30, 31, 0.6, 0.0]])  # IoU 100/110 with label 1
    c = match_predictions(det, labels, IOUV)
    assert c.shape == (4, 10) and c.dtype == torch.bool
    assert c[0].all() and not c[1].any() and not c[2].any()
    assert c[3].tolist() == [True] * 9 + [False]


def test_match_predictions_lowest_detection_index_wins():
    # upstream quirk: per label the pair with the lowest detection index wins, not the highest IoU
    labels = torch.tensor([[0, 0, 0, 10, 10.0]])
    det = torch.tensor([[0, 0, 10, 6, 0.9, 0],  # IoU 0.6
                        [0, 0, 10, 10, 0.8, 0.0]])  # IoU 1
    c = match_predictions(det, labels, IOUV)
    assert c[0].tolist() == [True] * 3 + [False] * 7
    assert c[1].tolist() == [False] * 3 + [True] * 7
    assert not match_predictions(det[:0], labels, IOUV).any()
    assert match_predictions(det, labels[:0], IOUV).shape == (2, 10)


def test_confusion_matrix(tmp_path):
    cm = ConfusionMatrix(nc=2)
    labels = torch.tensor([[0, 0, 0, 10, 10], [1, 20, 20, 30, 30], [1, 50, 50, 60, 60.0]])
    det = torch.tensor([[0, 0, 10, 10, 0.9, 0],  # correct
                        [20, 20, 30, 30, 0.8, 0],  # true class 1 predicted as 0
                        [100, 100, 110, 110, 0.7, 1],  # nothing there: background false positive
                        [50, 50, 60, 60, 0.1, 1.0]])  # below conf: ignored, so label 3 is missed
    cm.process_batch(det, labels)
    expected = np.zeros((3, 3))
    expected[0, 0] = expected[0, 1] = expected[2, 1] = expected[1, 2] = 1
    assert np.array_equal(cm.matrix, expected)
    tp, fp = cm.tp_fp()
    assert tp.tolist() == [1, 0] and fp.tolist() == [1, 1]
    cm.process_batch(None, labels[:, 0])  # an image without detections: all labels missed
    assert cm.matrix[2, 0] == 1 and cm.matrix[2, 1] == 3
    # unmatched detections count as background even when nothing matched at all
    cm2 = ConfusionMatrix(nc=2)
    cm2.process_batch(det[2:3], labels[:1])
    assert cm2.matrix[1, 2] == 1 and cm2.matrix[2, 0] == 1
    f = cm.plot(normalize=True, save_dir=tmp_path, names={0: "a", 1: "b"})
    assert f.is_file() and f.stat().st_size > 1000
    cm.print()
