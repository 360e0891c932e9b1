"""The evaluate stage's assembly: the metric keys, the headline and the log line, from one Evaluation."""

import numpy as np

from binsight.evaluate.count_metrics import count_metrics
from binsight.evaluate.model_evaluation import Evaluation, headline, metric_groups, summary
from binsight.evaluate.scoring import scores_on_counts_1to5


def evaluation(classes, labels, counts, probs, tta="flips"):
    probs = np.asarray(probs, dtype=float)
    y_true, y_pred = np.asarray(labels), np.asarray([classes[i] for i in probs.argmax(1)])
    scores = count_metrics(y_true, y_pred, classes)
    return Evaluation(
        rows=[(str(i), label) for i, label in enumerate(labels)],
        classes=classes,
        tta=tta,
        probs=probs,
        y_true=y_true,
        y_pred=y_pred,
        scores=scores,
        single_scores=scores,
        counts_1to5=scores_on_counts_1to5(probs, y_true, np.asarray(counts), classes),
        seconds_per_image=0.002,
        single_seconds_per_image=0.001,
        val_acc=0.5,
    )


def test_a_split_of_counts_1_to_5_has_a_two_number_headline():
    result = evaluation([1, 2], [1, 2, 2], [1, 2, 2], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert headline(result) == {"test_acc": 2 / 3, "val_acc": 0.5}
    metrics = metric_groups(result)
    assert metrics["test/accuracy"] == 2 / 3 and metrics["test/n"] == 3
    assert metrics["test/counts_1to5/n"] == 3 and metrics["test/ms_per_image"] == 2.0
    assert {"test/per_class/1/precision", "test/single_view/rmse"} <= set(metrics)
    assert not any("capstone" in key for key in metrics)
    line = summary(result)
    assert "test accuracy 0.667" in line and "TTA flips (2.0 ms/image)" in line and "1-5 items" not in line


def test_other_counts_add_the_accuracy_on_the_bins_with_1_to_5_items():
    # classes 0 and 1; the bin of count 0 is right, the bin of count 1 wrong: 0.5 overall, 0 on the 1-5 bins
    result = evaluation([0, 1], [0, 1], [0, 1], [[0.9, 0.1], [0.7, 0.3]], tta="none")
    assert headline(result) == {"test_acc": 0.5, "test_acc_1to5": 0.0, "val_acc": 0.5}
    assert "on the 1 bins with 1-5 items 0.000" in summary(result) and "TTA" not in summary(result)
