"""The evaluate stage's work as library calls: score a saved model on the test split, then log what it found.

    result = evaluate_model(model, meta, rows_with_counts, loader, device, dtype)
    log_evaluation(live, result, images_dir, misclassified)
    write_json("metrics.json", headline(result))

A run is scored twice when the model asks for test-time augmentation (model.tta): with its views and with a
single view, so the report shows what TTA buys and what it costs (ms per image).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from dvclive import Live

from binsight.data.class_policy import COUNTS_1TO5
from binsight.data.image_decode import load_rgb
from binsight.data.raw_bins import RawBins
from binsight.evaluate.count_metrics import count_metrics
from binsight.evaluate.scoring import model_scale, per_class_accuracy, scores_on_counts_1to5, timed_outputs
from binsight.verify.calibration import calibrated_probs
from binsight.verify.calibration_metrics import calibration_scores, reliability
from binsight.verify.count_sets import coverage_report
from binsight.verify.quantity_check import expectation_probs, rates, tradeoff

# what `dvclive/evaluate/metrics.json` holds for the views the model asks for and for a single view
HEADLINE_SCORES = ("accuracy", "balanced_accuracy", "macro_f1", "rmse", "mae", "off_by_one_accuracy")


@dataclass
class Evaluation:
    """A model's scores on the test bins it knows the classes of."""

    rows: list[tuple[str, int]]  # (bin id, label) in split order
    classes: list[int]
    tta: str
    probs: np.ndarray  # [n, K], with the model's test-time views
    y_true: np.ndarray
    y_pred: np.ndarray
    scores: dict[str, Any]  # count_metrics with the model's views
    single_scores: dict[str, Any]  # the same with one view
    counts_1to5: dict[str, float]  # scores_on_counts_1to5: the figure comparable with the notebook's
    seconds_per_image: float
    single_seconds_per_image: float
    val_acc: float | None
    # the decision layer (binsight/verify/), when the model file has a calibration (evaluate's, fitted on val)
    calibration_before: dict[str, float] = field(default_factory=dict)  # ece, nll, brier as trained
    calibration_after: dict[str, float] = field(default_factory=dict)  # the same, calibrated
    reliability: list[dict[str, Any]] = field(default_factory=list)  # the reliability diagram's rows
    count_sets: dict[str, Any] = field(default_factory=dict)  # coverage_report at the model's threshold
    verification: dict[str, float] = field(default_factory=dict)  # rates at the model's accept threshold
    tradeoff: list[dict[str, float]] = field(default_factory=list)  # false accepts against right accepted


def evaluate_model(
    model: torch.nn.Module,
    meta: dict,
    rows_with_counts: list[tuple[str, int, int]],
    loader: Iterable,  # a DataLoader over the split's images, or ShardBatches over its shards
    device: torch.device,
    dtype: torch.dtype | None,
) -> Evaluation:
    """Score `model` on `rows_with_counts` [(id, label, count)], the bins `loader` yields (in any order)."""
    classes, tta, loss, scale = meta["classes"], meta["preprocess"]["tta"], meta["loss"], model_scale(meta)
    rows = [(i, label) for i, label, _ in rows_with_counts]
    single_out, single_s = timed_outputs(model, meta, loader, device, dtype, "none")
    outputs, tta_s = timed_outputs(model, meta, loader, device, dtype, tta) if tta != "none" else (single_out, single_s)
    probs = calibrated_probs(loss, outputs, len(classes), scale)
    single = calibrated_probs(loss, single_out, len(classes), scale)
    y_true = np.array([label for _, label in rows])
    y_pred = np.array([classes[i] for i in probs.argmax(1)])
    counts = np.array([count for _, _, count in rows_with_counts])
    result = Evaluation(
        rows=rows,
        classes=classes,
        tta=tta,
        probs=probs,
        y_true=y_true,
        y_pred=y_pred,
        scores=count_metrics(y_true, y_pred, classes),
        single_scores=count_metrics(y_true, np.array([classes[i] for i in single.argmax(1)]), classes),
        counts_1to5=scores_on_counts_1to5(probs, y_true, counts, classes),
        seconds_per_image=tta_s,
        single_seconds_per_image=single_s,
        val_acc=meta.get("val_acc"),
    )
    if meta.get("calibration"):
        add_decisions(result, calibrated_probs(loss, outputs, len(classes), None), meta["calibration"])
    return result


def add_decisions(result: Evaluation, uncalibrated: np.ndarray, calibration: dict[str, Any]) -> None:
    """The decision layer on the test bins: calibration before and after, the count sets' coverage, and the
    verdicts' false accepts and right bins accepted at the thresholds fitted on val."""
    index = {c: k for k, c in enumerate(result.classes)}
    targets = np.array([index[label] for label in result.y_true], dtype=int)
    result.calibration_before = calibration_scores(uncalibrated, targets)
    result.calibration_after = calibration_scores(result.probs, targets)
    result.reliability = reliability(result.probs, targets)
    result.count_sets = coverage_report(result.probs, targets, calibration["set_threshold"], result.classes)
    threshold = calibration["accept_threshold"]
    wrong = {}
    for against in ("off_by_one", "any_other"):
        right, wrong[against] = expectation_probs(result.probs, targets, against)
    off_by_one = rates(right, wrong["off_by_one"], threshold)
    result.verification = {
        "threshold": threshold,
        "right_accepted": off_by_one["right_accepted"],
        "false_accept_off_by_one": off_by_one["false_accept"],
        "false_accept_any_other": rates(right, wrong["any_other"], threshold)["false_accept"],
    }
    result.tradeoff = tradeoff(right, wrong[calibration["against"]])


def has_other_counts(result: Evaluation) -> bool:
    """Whether the test split holds bins outside 1-5, so that the 1-5 figure differs from the accuracy."""
    return result.counts_1to5["n"] != len(result.rows)


def metric_groups(result: Evaluation) -> dict[str, float]:
    """Every number of dvclive/evaluate/metrics.json, by its key."""
    metrics = {}
    for name in HEADLINE_SCORES:
        metrics[f"test/{name}"] = result.scores[name]
        metrics[f"test/single_view/{name}"] = result.single_scores[name]
    for c, s in result.scores["per_class"].items():
        metrics[f"test/per_class/{c}/precision"] = s["precision"]
        metrics[f"test/per_class/{c}/recall"] = s["recall"]
    metrics["test/n"] = len(result.rows)
    for name, value in result.counts_1to5.items():
        metrics[f"test/counts_1to5/{name}"] = value
    metrics["test/ms_per_image"] = 1000 * result.seconds_per_image
    metrics["test/single_view/ms_per_image"] = 1000 * result.single_seconds_per_image
    for when, scores in (("before", result.calibration_before), ("after", result.calibration_after)):
        for name, value in scores.items():
            metrics[f"test/calibration/{when}/{name}"] = value
    if result.count_sets:
        metrics["test/count_sets/coverage"] = result.count_sets["coverage"]
        metrics["test/count_sets/mean_set_size"] = result.count_sets["mean_set_size"]
        for c, value in result.count_sets["per_count"].items():
            metrics[f"test/count_sets/per_count/{c}"] = value
    for name, value in result.verification.items():
        metrics[f"test/verify/{name}"] = value
    return metrics


def log_evaluation(live: Live, result: Evaluation, images_dir: str, max_images: int) -> None:
    """The metrics, the confusion matrix, accuracy per count and up to `max_images` misclassified photos."""
    for key, value in metric_groups(result).items():
        live.log_metric(key, value, plot=False)
    y_true, y_pred, rows = result.y_true, result.y_pred, result.rows
    live.log_sklearn_plot(
        "confusion_matrix",
        [str(v) for v in y_true],
        [str(v) for v in y_pred],
        name="confusion_matrix.json",
        title="Test confusion matrix (item count)",
        x_label="true count",
        y_label="predicted count",
    )
    live.log_plot(
        "per_class_accuracy",
        per_class_accuracy(y_true, y_pred, result.classes),
        x="count",
        y="accuracy",
        template="bar_horizontal",
        title="Test accuracy per item count",
    )
    if result.reliability:
        live.log_plot(
            "reliability",
            result.reliability,
            x="confidence",
            y="accuracy",
            template="scatter",
            title="Reliability on test: accuracy against the top probability (calibrated)",
        )
        live.log_plot(
            "verify_tradeoff",
            result.tradeoff,
            x="false_accept",
            y="right_accepted",
            template="linear",
            title="Verify on test: wrong quantities accepted against right bins accepted",
        )
    bins = RawBins(images_dir)  # a run on shards read from S3 may have no local copy: those images are skipped
    wrong = [i for i in range(len(rows)) if y_pred[i] != y_true[i] and rows[i][0] in bins]
    for i in wrong[:max_images]:
        bin_id, label = rows[i]
        img = load_rgb(bins.image(bin_id), 256)
        img.thumbnail((256, 256))
        live.log_image(f"misclassified/{bin_id}_true{label}_pred{y_pred[i]}.jpg", img)


def headline(result: Evaluation) -> dict[str, float | None]:
    """metrics.json, the few numbers `dvc exp show` lists: test and val accuracy, the accuracy on the bins
    with 1-5 items when the test split holds other counts too, and the calibrated model's test ECE and count-set
    coverage."""
    line: dict[str, float | None] = {"test_acc": result.scores["accuracy"]}
    if has_other_counts(result):
        line["test_acc_1to5"] = result.counts_1to5["accuracy"]
    line["val_acc"] = result.val_acc
    if result.count_sets:  # how far to trust the probabilities and the sets
        line["test_ece"] = result.calibration_after["ece"]
        line["test_coverage"] = result.count_sets["coverage"]
    return line


def summary(result: Evaluation) -> str:
    """One line for the log."""
    s, one, c = result.scores, result.single_scores, result.counts_1to5
    line = (
        f"evaluate: test accuracy {s['accuracy']:.3f}, balanced {s['balanced_accuracy']:.3f}, "
        f"macro-F1 {s['macro_f1']:.3f}, RMSE {s['rmse']:.3f}, off-by-one "
        f"{s['off_by_one_accuracy']:.3f} on {len(result.rows)} bins"
    )
    if has_other_counts(result):
        line += (
            f"; on the {c['n']} bins with {COUNTS_1TO5[0]}-{COUNTS_1TO5[-1]} items "
            f"{c['accuracy']:.3f} (argmax over 1-5: {c['accuracy_argmax_1to5']:.3f})"
        )
    if result.count_sets:
        v, sets = result.verification, result.count_sets
        line += (
            f"; ECE {result.calibration_before['ece']:.3f} -> {result.calibration_after['ece']:.3f} calibrated, "
            f"count sets cover {sets['coverage']:.3f} (mean size {sets['mean_set_size']:.2f}), "
            f"verify accepts {v['right_accepted']:.3f} of right bins at {v['false_accept_off_by_one']:.3f} off-by-one "
            "false accepts"
        )
    if result.tta != "none":
        line += (
            f"; TTA {result.tta} ({1000 * result.seconds_per_image:.1f} ms/image) vs one view "
            f"{one['accuracy']:.3f} ({1000 * result.single_seconds_per_image:.1f} ms/image)"
        )
    return line
