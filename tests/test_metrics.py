"""Metrics against values worked out by hand."""

import numpy as np
import pytest

from binsight.evaluate.count_metrics import confusion, count_metrics
from binsight.train.loops import mean_loss


def test_metrics_match_hand_computed_values():
    y_true = [1, 1, 2, 2, 3, 3]
    y_pred = [1, 2, 2, 2, 3, 1]
    m = count_metrics(y_true, y_pred, classes=[1, 2, 3])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # recalls: class1 1/2, class2 2/2, class3 1/2 -> mean 2/3
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    # precisions: class1 1/2 (preds 1,1 -> one right), class2 2/3, class3 1/1
    assert m["per_class"]["1"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["2"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["3"]["precision"] == pytest.approx(1.0)
    f1 = [2 * 0.5 * 0.5 / 1.0, 2 * (2 / 3) * 1 / (2 / 3 + 1), 2 * 1 * 0.5 / 1.5]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    # errors: 0, +1, 0, 0, 0, -2
    assert m["mae"] == pytest.approx(3 / 6)
    assert m["rmse"] == pytest.approx(np.sqrt(5 / 6))
    assert m["off_by_one_accuracy"] == pytest.approx(5 / 6)
    assert m["per_class"]["3"]["support"] == 2


def test_confusion_rows_are_true_counts():
    cm = confusion([1, 1, 2, 3], [1, 2, 2, 1], classes=[1, 2, 3])
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert cm.sum() == 4


def test_classes_absent_from_the_test_set_do_not_dilute_the_averages():
    m = count_metrics([1, 1], [1, 1], classes=[1, 2, 3, 4, 5])
    assert m["balanced_accuracy"] == 1.0 and m["macro_f1"] == 1.0


def test_mean_loss_is_cross_entropy():
    probs = np.array([[0.5, 0.5], [0.9, 0.1]])
    assert mean_loss(probs, np.array([0, 1])) == pytest.approx(-(np.log(0.5) + np.log(0.1)) / 2)


def test_a_count_never_predicted_scores_zero_not_nan():
    m = count_metrics([1, 2, 2], [1, 1, 1], classes=[1, 2, 3])
    assert m["per_class"]["2"] == {"precision": 0.0, "recall": 0.0, "support": 2}
    assert m["per_class"]["3"] == {"precision": 0.0, "recall": 0.0, "support": 0}
    # class 1: precision 1/3, recall 1 -> F1 0.5; class 2: F1 0 (class 3 has no support: left out)
    assert m["macro_f1"] == pytest.approx(0.25) and m["balanced_accuracy"] == pytest.approx(0.5)
