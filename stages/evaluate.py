"""Stage `evaluate`: score models/model.pt on the test split.

    python -m stages.evaluate         # what `dvc repro evaluate` runs

Images are prepared as the model file says (size, decode, normalisation) and, when the model asks
for test-time augmentation (model.tta), averaged over its views. Outputs dvclive/evaluate/:
metrics.json (accuracy, balanced accuracy, macro-F1, per-class precision/recall, RMSE and MAE of
the count, off-by-one accuracy; the same for a single view under test/single_view/, and the cost
of each in ms per image), the confusion matrix, a per-class accuracy bar chart and a few
misclassified images; data/predictions/test.csv; and metrics.json, the headline that
`dvc exp show` and `dvc metrics show` list: test accuracy, the capstone's comparable test accuracy
(test_acc_1to5: the test bins with 1-5 items, when the test split holds other counts too) and
validation accuracy, nothing else, so the table of experiments stays narrow (everything else:
`dvc metrics show dvclive/evaluate/metrics.json`). dvclive/evaluate/metrics.json also has the 1-5 figure
decoded over the counts 1-5 only (test/capstone/accuracy_argmax_1to5): a model that learnt other
counts too may do better on the 1-5 bins when it is not allowed to answer 0 or 6+.
With train.data: shards the test bins stream from the test shards.
"""

import argparse

import numpy as np
from dvclive import Live

from binsight.data.class_policy import CAPSTONE_COUNTS
from binsight.data.image_decode import load_rgb
from binsight.data.raw_bins import RawBins
from binsight.errors import DataError, one_line_errors
from binsight.evaluate.count_metrics import count_metrics
from binsight.evaluate.scoring import (
    capstone_scores,
    per_class_accuracy,
    prediction_rows,
    shard_split_loader,
    split_loader,
    timed_predictions,
)
from binsight.model.counting_model import load_model
from binsight.params import check_evaluate, load_params, section, train_section
from binsight.tables import read_split_counts, write_csv, write_json
from binsight.train.loops import amp_dtype, pick_device

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "rmse", "mae", "off_by_one_accuracy")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="models/model.pt")
    parser.add_argument("--split", default="data/split")
    parser.add_argument("--images", default="data/raw/images")
    parser.add_argument("--shards", default="data/shards", help="with train.data: shards (train.shards overrides)")
    parser.add_argument("--predictions", default="data/predictions/test.csv")
    parser.add_argument("--live", default="dvclive/evaluate")
    parser.add_argument("--headline", default="metrics.json")
    return parser.parse_args(argv)


def log_plots(live, y_true, y_pred, classes, rows, images_dir, max_images):
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
        per_class_accuracy(y_true, y_pred, classes),
        x="count",
        y="accuracy",
        template="bar_horizontal",
        title="Test accuracy per item count",
    )
    bins = RawBins(images_dir)  # a run on shards read from S3 may have no local copy: those images are skipped
    wrong = [i for i in range(len(rows)) if y_pred[i] != y_true[i] and rows[i][0] in bins]
    for i in wrong[:max_images]:
        bin_id, label = rows[i]
        img = load_rgb(bins.image(bin_id), 256)
        img.thumbnail((256, 256))
        live.log_image(f"misclassified/{bin_id}_true{label}_pred{y_pred[i]}.jpg", img)


@one_line_errors
def main(argv=None):
    args = parse_args(argv)
    params = load_params(args.params)
    eval_params, train_params = section(params, "evaluate", check_evaluate), train_section(params)
    device = pick_device()
    model, meta = load_model(args.model, device)
    classes, tta = meta["classes"], meta["preprocess"]["tta"]
    batch, workers = eval_params["batch_size"], train_params["num_workers"]
    if train_params["data"] == "shards":
        rows_with_counts, loader = shard_split_loader(
            train_params["shards"] or args.shards, meta, batch, workers, device, train_params["decode"]
        )
    else:
        rows_with_counts = read_split_counts(args.split, "test", args.images)
    unknown = sorted({label for _, label, _ in rows_with_counts} - set(classes))
    if unknown:
        print(f"evaluate: warning: counts {unknown} never seen in training are left out")
    if unknown and train_params["data"] == "shards":
        raise DataError(f"the test shards hold classes {unknown} the model does not know: run `dvc repro` again")
    rows_with_counts = [r for r in rows_with_counts if r[1] in classes]
    rows = [(i, label) for i, label, _ in rows_with_counts]
    if train_params["data"] != "shards":
        loader = split_loader(rows, args.images, meta, batch, workers, device)
    dtype = amp_dtype(train_params["amp"], device)
    single, single_s = timed_predictions(model, meta, loader, device, dtype, "none")
    probs, tta_s = timed_predictions(model, meta, loader, device, dtype, tta) if tta != "none" else (single, single_s)
    counts = np.array([count for _, _, count in rows_with_counts])
    capstone = capstone_scores(probs, np.array([label for _, label in rows]), counts, classes)
    y_true = np.array([label for _, label in rows])
    y_pred = np.array([classes[i] for i in probs.argmax(1)])
    scores = count_metrics(y_true, y_pred, classes)
    single_scores = count_metrics(y_true, np.array([classes[i] for i in single.argmax(1)]), classes)
    write_csv(
        args.predictions,
        prediction_rows(rows, probs, classes),
        ["id", "label", "pred", "prob", *(f"p{c}" for c in classes)],
    )

    with Live(dir=args.live, save_dvc_exp=False, dvcyaml=False) as live:  # `dvc exp run` records experiments
        for name in HEADLINE:
            live.log_metric(f"test/{name}", scores[name], plot=False)
            live.log_metric(f"test/single_view/{name}", single_scores[name], plot=False)
        for c, s in scores["per_class"].items():
            live.log_metric(f"test/per_class/{c}/precision", s["precision"], plot=False)
            live.log_metric(f"test/per_class/{c}/recall", s["recall"], plot=False)
        live.log_metric("test/n", len(rows), plot=False)
        for name, value in capstone.items():
            live.log_metric(f"test/capstone/{name}", value, plot=False)
        live.log_metric("test/ms_per_image", 1000 * tta_s, plot=False)
        live.log_metric("test/single_view/ms_per_image", 1000 * single_s, plot=False)
        log_plots(live, y_true, y_pred, classes, rows, args.images, eval_params["misclassified"])
    headline = {"test_acc": scores["accuracy"], "val_acc": meta.get("val_acc")}
    if capstone["n"] != len(rows):  # the test split holds other counts: the 1-5 figure differs from test_acc
        headline = {
            "test_acc": scores["accuracy"],
            "test_acc_1to5": capstone["accuracy"],
            "val_acc": meta.get("val_acc"),
        }
    write_json(args.headline, headline)
    print(
        f"evaluate: test accuracy {scores['accuracy']:.3f}, balanced {scores['balanced_accuracy']:.3f}, "
        f"macro-F1 {scores['macro_f1']:.3f}, RMSE {scores['rmse']:.3f}, off-by-one "
        f"{scores['off_by_one_accuracy']:.3f} on {len(rows)} bins"
        + (
            f"; on the {capstone['n']} bins with {CAPSTONE_COUNTS[0]}-{CAPSTONE_COUNTS[-1]} items "
            f"{capstone['accuracy']:.3f} (argmax over 1-5: {capstone['accuracy_argmax_1to5']:.3f})"
            if capstone["n"] != len(rows)
            else ""
        )
        + (
            f"; TTA {tta} ({1000 * tta_s:.1f} ms/image) vs one view {single_scores['accuracy']:.3f} "
            f"({1000 * single_s:.1f} ms/image)"
            if tta != "none"
            else ""
        )
    )


if __name__ == "__main__":
    main()
