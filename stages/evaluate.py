"""Stage `evaluate`: score models/model.pt on the test split.

    python -m stages.evaluate         # what `dvc repro evaluate` runs

Images are prepared as the model file says (size, decode, normalisation) and, when the model asks
for test-time augmentation (model.tta), averaged over its views. Outputs dvclive/evaluate/:
metrics.json (accuracy, balanced accuracy, macro-F1, per-class precision/recall, RMSE and MAE of
the count, off-by-one accuracy; the same for a single view under test/single_view/, and the cost
of each in ms per image), the confusion matrix, a per-class accuracy bar chart and a few
misclassified images; data/predictions/test.csv; and metrics.json, the headline that
`dvc exp show` and `dvc metrics show` list: test accuracy, validation accuracy and, when the test
split holds other counts too, test_acc_1to5: the accuracy on the bins with 1-5 items, the figure
comparable with the notebook's (its subset holds only those). dvclive/evaluate/metrics.json also has
that figure decoded over the counts 1-5 only (test/counts_1to5/accuracy_argmax_1to5): a model that learnt
other counts too may do better on the 1-5 bins when it is not allowed to answer 0 or 6+.
With train.data: shards the test bins stream from the test shards. The steps are in
binsight/evaluate/model_evaluation.py.
"""

import argparse

from dvclive import Live

from binsight.data.split_files import read_split_counts
from binsight.errors import DataError, one_line_errors
from binsight.evaluate.model_evaluation import evaluate_model, headline, known_rows, log_evaluation, summary
from binsight.evaluate.scoring import prediction_rows, shard_split_loader, split_loader
from binsight.model.counting_model import load_model
from binsight.params import EvaluateParams, load_params, section, train_section
from binsight.tables import write_csv, write_json
from binsight.train.loops import amp_dtype, pick_device


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


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    eval_params, train_params = section(params, EvaluateParams), train_section(params)
    device = pick_device()
    model, meta = load_model(args.model, device)
    batch, workers, on_shards = eval_params.batch_size, train_params.num_workers, train_params.data == "shards"
    if on_shards:
        rows_with_counts, loader = shard_split_loader(
            train_params.shards or args.shards, meta, batch, workers, device, train_params.decode
        )
    else:
        rows_with_counts = read_split_counts(args.split, "test", args.images)
    rows_with_counts, unknown = known_rows(rows_with_counts, meta["classes"])
    if unknown:
        print(f"evaluate: warning: counts {unknown} never seen in training are left out")
    if unknown and on_shards:
        raise DataError(f"the test shards hold classes {unknown} the model does not know: run `dvc repro` again")
    if not on_shards:
        rows = [(i, label) for i, label, _ in rows_with_counts]
        loader = split_loader(rows, args.images, meta, batch, workers, device)
    result = evaluate_model(model, meta, rows_with_counts, loader, device, amp_dtype(train_params.amp, device))
    columns = ["id", "label", "pred", "prob", *(f"p{c}" for c in result.classes)]
    write_csv(args.predictions, prediction_rows(result.rows, result.probs, result.classes), columns)
    with Live(dir=args.live, save_dvc_exp=False, dvcyaml=False) as live:  # `dvc exp run` records experiments
        log_evaluation(live, result, args.images, eval_params.misclassified)
    write_json(args.headline, headline(result))
    print(summary(result))


if __name__ == "__main__":
    main()
