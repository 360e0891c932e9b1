"""Stage `evaluate`: score models/model.pt on the test split.

    python -m stages.evaluate         # what `dvc repro evaluate` runs

Outputs dvclive/evaluate/: metrics.json (accuracy, balanced accuracy, macro-F1, per-class
precision/recall, RMSE and MAE of the count, off-by-one accuracy), the confusion matrix, a
per-class accuracy bar chart and a few misclassified images; data/predictions/test.csv.
"""
import argparse

import numpy as np
from dvclive import Live

from stages.data import BinImages, eval_transform, make_loader, read_split
from stages.engine import amp_dtype, pick_device, predict
from stages.errors import one_line_errors
from stages.images import load_rgb
from stages.metrics import count_metrics
from stages.model import load_model
from stages.params import check_evaluate, check_train, load_params, section
from stages.tables import write_csv


def prediction_rows(rows, probs, classes):
    out = []
    for (bin_id, label), p in zip(rows, probs):
        row = {"id": bin_id, "label": label, "pred": classes[int(p.argmax())], "prob": round(float(p.max()), 6)}
        row.update({f"p{c}": round(float(v), 6) for c, v in zip(classes, p)})
        out.append(row)
    return out


def per_class_accuracy(y_true, y_pred, classes):
    return [{"count": str(c), "accuracy": float(np.mean(y_pred[y_true == c] == c)) if np.any(y_true == c) else 0.0}
            for c in classes]


@one_line_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="models/model.pt")
    parser.add_argument("--split", default="data/split")
    parser.add_argument("--images", default="data/raw/images")
    parser.add_argument("--predictions", default="data/predictions/test.csv")
    parser.add_argument("--live", default="dvclive/evaluate")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    ep, tp = section(params, "evaluate", check_evaluate), section(params, "train", check_train)
    rows = read_split(args.split, "test", args.images)
    device = pick_device()
    model, meta = load_model(args.model, device)
    classes, size = meta["classes"], meta["image_size"]
    unknown = sorted({label for _, label in rows} - set(classes))
    rows_known = [r for r in rows if r[1] in classes]
    if unknown:
        print(f"evaluate: warning: counts {unknown} never seen in training are left out")
    loader = make_loader(BinImages(rows_known, args.images, classes, eval_transform(size), size),
                         ep["batch_size"], False, tp["num_workers"], device.type == "cuda")
    probs, _ = predict(model, loader, device, amp_dtype(tp["amp"], device))
    y_true = np.array([label for _, label in rows_known])
    y_pred = np.array([classes[i] for i in probs.argmax(1)])
    scores = count_metrics(y_true, y_pred, classes)
    write_csv(args.predictions, prediction_rows(rows_known, probs, classes),
              ["id", "label", "pred", "prob", *(f"p{c}" for c in classes)])

    with Live(dir=args.live, save_dvc_exp=True, dvcyaml=False) as live:
        for name in ("accuracy", "balanced_accuracy", "macro_f1", "rmse", "mae", "off_by_one_accuracy"):
            live.log_metric(f"test/{name}", scores[name], plot=False)
        for c, s in scores["per_class"].items():
            live.log_metric(f"test/per_class/{c}/precision", s["precision"], plot=False)
            live.log_metric(f"test/per_class/{c}/recall", s["recall"], plot=False)
        live.log_metric("test/n", len(rows_known), plot=False)
        live.log_sklearn_plot("confusion_matrix", [str(v) for v in y_true], [str(v) for v in y_pred],
                              name="confusion_matrix.json", title="Test confusion matrix (item count)",
                              x_label="true count", y_label="predicted count")
        live.log_plot("per_class_accuracy", per_class_accuracy(y_true, y_pred, classes), x="count", y="accuracy",
                      template="bar_horizontal", title="Test accuracy per item count")
        wrong = [i for i in range(len(rows_known)) if y_pred[i] != y_true[i]]
        for i in wrong[: ep["misclassified"]]:
            bin_id, label = rows_known[i]
            img = load_rgb(f"{args.images}/{bin_id}.jpg", 256)
            img.thumbnail((256, 256))
            live.log_image(f"misclassified/{bin_id}_true{label}_pred{y_pred[i]}.jpg", img)
    print(f"evaluate: test accuracy {scores['accuracy']:.3f}, balanced {scores['balanced_accuracy']:.3f}, "
          f"macro-F1 {scores['macro_f1']:.3f}, RMSE {scores['rmse']:.3f}, off-by-one {scores['off_by_one_accuracy']:.3f} "
          f"on {len(rows_known)} bins")


if __name__ == "__main__":
    main()
