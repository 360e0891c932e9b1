"""Stage `split`: stratified train/val/test lists from the fetch manifest (no image copies).

    python -m stages.split            # what `dvc repro split` runs

The class policy (params `classes:`) turns each bin's item count into its class label and leaves out
the counts it does not admit. Outputs data/split/{train,val,test}.csv with columns id,label,count
(label: the class; count: the bin's EXPECTED_QUANTITY, which evaluate uses for the accuracy on the bins with 1-5 items).
Classes are split one by one, so adding bins of other counts leaves the 1-5 bins' split unchanged.
"""

import argparse
from pathlib import Path

from binsight.data.class_policy import label_for
from binsight.data.split_files import read_labels
from binsight.data.stratified_split import SPLITS, stratified_split
from binsight.errors import DataError, one_line_errors
from binsight.params import SplitParams, check_classes, load_params, section
from binsight.tables import write_csv


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--manifest", default="data/raw/manifest.csv")
    parser.add_argument("--out", default="data/split")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    p, classes = section(params, SplitParams), check_classes(params.get("classes"))
    counts = dict(read_labels(args.manifest))
    if not counts:
        raise DataError(f"{args.manifest} lists no bins: did fetch find any?")
    labels = {i: label_for(c, classes.policy, classes.clip_at) for i, c in counts.items()}
    items = [(i, y) for i, y in labels.items() if y is not None]
    if not items:
        raise DataError(
            f"classes.policy={classes.policy} admits none of the {len(counts)} bins of {args.manifest}; "
            "pick another policy or list other bins"
        )
    splits = stratified_split(items, p.ratios, p.seed)
    for name in SPLITS:
        rows = [{"id": i, "label": y, "count": counts[i]} for i, y in splits[name]]
        write_csv(Path(args.out) / f"{name}.csv", rows, ("id", "label", "count"))
    sizes = {name: len(rows) for name, rows in splits.items()}
    left_out = len(counts) - len(items)
    print(
        f"split: {sizes} (seed {p.seed}, classes.policy={classes.policy}"
        + (f", {left_out} bins left out" if left_out else "")
        + f") -> {args.out}/"
    )


if __name__ == "__main__":
    main()
