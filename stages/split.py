"""Stage `split`: stratified train/val/test lists from the fetch manifest (no image copies).

    python -m stages.split            # what `dvc repro split` runs

Outputs data/split/{train,val,test}.csv with columns id,label.
"""

import argparse
from pathlib import Path

from binsight.errors import DataError, one_line_errors
from binsight.params import check_split, load_params, section
from binsight.splitting import SPLITS, stratified_split
from binsight.tables import read_labels, write_csv


@one_line_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--manifest", default="data/raw/manifest.csv")
    parser.add_argument("--out", default="data/split")
    args = parser.parse_args(argv)

    p = section(load_params(args.params), "split", check_split)
    items = read_labels(args.manifest)
    if not items:
        raise DataError(f"{args.manifest} lists no bins: did fetch find any?")
    splits = stratified_split(items, p["ratios"], p["seed"])
    for name in SPLITS:
        write_csv(Path(args.out) / f"{name}.csv", [{"id": i, "label": y} for i, y in splits[name]], ("id", "label"))
    counts = {name: len(rows) for name, rows in splits.items()}
    print(f"split: {counts} (seed {p['seed']}) -> {args.out}/")


if __name__ == "__main__":
    main()
