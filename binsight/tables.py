"""Small CSV/JSON readers and writers shared by the stages (atomic, sorted, stable)."""

import csv
import io
import json
from pathlib import Path

from binsight.errors import DataError
from binsight.files import atomic_write_text


def write_csv(path, rows, columns):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_csv(path, required=()):
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} not found: run the stage that makes it first (`dvc repro`)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(required) - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path} lacks the columns {sorted(missing)}")
        return list(reader)


def write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_labels(path):
    """A split or manifest CSV -> list of (id, int label)."""
    return [(row["id"], int(row["label"])) for row in read_csv(path, required=("id", "label"))]


def read_split(split_dir, name, images_dir):
    """Rows (id, label) of one split, checked: not empty, every image present."""
    path = Path(split_dir) / f"{name}.csv"
    rows = read_labels(path)
    if not rows:
        raise DataError(f"{path} is empty: no bins to {'train on' if name == 'train' else 'evaluate'}")
    missing = [bin_id for bin_id, _ in rows if not (Path(images_dir) / f"{bin_id}.jpg").exists()]
    if missing:
        raise DataError(
            f"{len(missing)} images listed in {path} are missing from {images_dir} "
            f"(first: {missing[0]}.jpg); run `dvc repro fetch` or `dvc pull`"
        )
    return rows
