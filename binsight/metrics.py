"""Metrics of a counting classifier, as pure functions of true and predicted counts."""
import numpy as np
from sklearn import metrics as skm


def count_metrics(y_true, y_pred, classes):
    """y_true, y_pred: item counts (class values, not indices). Returns a flat-ish dict of floats."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ValueError("no predictions to score")
    err = (y_pred - y_true).astype(float)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=list(classes), zero_division=0)
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(recall[support > 0].mean()),
        "macro_f1": float(f1[support > 0].mean()),
        "rmse": float(np.sqrt(np.mean(err ** 2))),
        "mae": float(np.mean(np.abs(err))),
        "off_by_one_accuracy": float(np.mean(np.abs(err) <= 1)),
        "per_class": {str(c): {"precision": float(p), "recall": float(r), "support": int(s)}
                      for c, p, r, s in zip(classes, precision, recall, support)},
    }


def confusion(y_true, y_pred, classes):
    """Rows: true count, columns: predicted count."""
    return skm.confusion_matrix(y_true, y_pred, labels=list(classes))
