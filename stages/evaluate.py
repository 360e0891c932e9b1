"""Stage `evaluate`: calibrate models/trained.pt on the val split, then score it on the test split.

    python -m stages.evaluate         # what `dvc repro evaluate` runs

Images are prepared as the model file says (size, decode, normalisation) and, when the model asks
for test-time augmentation (model.tta), averaged over its views. First, on val: a temperature (for the
regression loss, the sd of a noise model) that minimises the NLL, then the count-set threshold for
verify.coverage and the accept threshold for verify.max_false_accept (binsight/verify/); the trained model
plus that calibration is written to models/model.pt, the file predict, verify and serve read. A change of
the verify: section reruns this stage, never train. Then, on test, outputs dvclive/evaluate/:
metrics.json (accuracy, balanced accuracy, macro-F1, per-class precision/recall, RMSE and MAE of
the count, off-by-one accuracy; the same for a single view under test/single_view/, and the cost
of each in ms per image; ECE, NLL and Brier before and after calibration; the count sets' coverage and
size; the verdicts' false-accept rate and right bins accepted), the confusion matrix, the reliability
diagram and the verify trade-off, a per-class accuracy bar chart and a few
misclassified images; data/predictions/test.csv; and metrics.json, the headline that
`dvc exp show` and `dvc metrics show` list: test accuracy, validation accuracy, test ECE and count-set
coverage and, when the test
split holds other counts too, test_acc_1to5: the accuracy on the bins with 1-5 items, the figure
comparable with the notebook's (its subset holds only those). dvclive/evaluate/metrics.json also has
that figure decoded over the counts 1-5 only (test/counts_1to5/accuracy_argmax_1to5): a model that learnt
other counts too may do better on the 1-5 bins when it is not allowed to answer 0 or 6+.
With train.data: shards the test bins stream from the test shards. The steps are in
binsight/evaluate/model_evaluation.py.
"""

import argparse

from dvclive import Live

from binsight.errors import one_line_errors
from binsight.evaluate.model_calibration import calibrate_model, calibration_summary
from binsight.evaluate.model_evaluation import evaluate_model, headline, log_evaluation, summary
from binsight.evaluate.scoring import prediction_rows, split_inputs
from binsight.model.counting_model import copy_model_file, load_model
from binsight.params import EvaluateParams, VerifyParams, load_params, section, train_section
from binsight.tables import write_csv, write_json
from binsight.train.loops import amp_dtype, pick_device


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--trained", default="models/trained.pt", help="the train stage's model file")
    parser.add_argument("--model", default="models/model.pt", help="the calibrated model file to write")
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
    dtype = amp_dtype(train_params.amp, device)
    model, meta = load_model(args.trained, device)
    inputs = (train_params, eval_params.batch_size, args.split, args.images, args.shards, device)
    val_rows, val_loader = split_inputs("val", meta, *inputs)
    verify = section(params, VerifyParams)
    calibration, scores = calibrate_model(model, meta, val_rows, val_loader, device, dtype, verify)
    meta["calibration"] = calibration.as_dict()
    copy_model_file(args.trained, args.model, calibration=meta["calibration"])
    print(calibration_summary(calibration, scores, len(val_rows)))
    rows_with_counts, loader = split_inputs("test", meta, *inputs)
    result = evaluate_model(model, meta, rows_with_counts, loader, device, dtype)
    columns = ["id", "label", "pred", "prob", *(f"p{c}" for c in result.classes)]
    write_csv(args.predictions, prediction_rows(result.rows, result.probs, result.classes), columns)
    with Live(dir=args.live, save_dvc_exp=False, dvcyaml=False) as live:  # `dvc exp run` records experiments
        log_evaluation(live, result, args.images, eval_params.misclassified)
    write_json(args.headline, headline(result))
    print(summary(result))


if __name__ == "__main__":
    main()
