"""The split stage's files, read back: data/split/{train,val,test}.csv (id, label, count), checked against
the fetched bins."""

from pathlib import Path

from binsight.data.raw_bins import RawBins
from binsight.errors import DataError
from binsight.tables import read_csv


def read_labels(path):
    """A split or manifest CSV -> list of (id, int label)."""
    return [(row["id"], int(row["label"])) for row in read_csv(path, required=("id", "label"))]


def read_split(split_dir, name, images_dir):
    """Rows (id, label) of one split, checked: not empty, every image present (unless images_dir is None)."""
    path = Path(split_dir) / f"{name}.csv"
    return check_split_rows(path, name, read_labels(path), images_dir)


def check_split_rows(path, name, rows, images_dir):
    """`rows` of the split file `path`, checked: not empty, every image present (unless images_dir is None)."""
    if not rows:
        raise DataError(f"{path} is empty: no bins to {'train on' if name == 'train' else 'evaluate'}")
    if images_dir is None:
        return rows
    missing = RawBins(images_dir).missing([bin_id for bin_id, _ in rows])
    if missing:
        raise DataError(
            f"{len(missing)} images listed in {path} are missing from {images_dir} "
            f"(first: {missing[0]}.jpg); run `dvc repro fetch` or `dvc pull`"
        )
    return rows


def read_split_counts(split_dir, name, images_dir):
    """Rows (id, label, count) of one split, checked as read_split does. `count` is the bin's item count
    (a split written before class policies has none: the label is the count then)."""
    path = Path(split_dir) / f"{name}.csv"
    rows = [(r["id"], int(r["label"]), int(r.get("count") or r["label"])) for r in read_csv(path, ("id", "label"))]
    check_split_rows(path, name, [(i, label) for i, label, _ in rows], images_dir)
    return rows


def class_names(split_dir, classes):
    """Each class's name as a person reads it: "3", or "6+" for a class that holds bins with more items
    than its label (classes.policy: clip), read off the count column of the train and val splits."""
    more = set()
    for name in ("train", "val"):
        path = Path(split_dir) / f"{name}.csv"
        if path.exists():
            more |= {int(r["label"]) for r in read_csv(path) if int(r.get("count") or r["label"]) > int(r["label"])}
    return [f"{c}+" if c in more else str(c) for c in classes]
