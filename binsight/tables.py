"""Small CSV/JSON readers and writers shared by the stages (atomic, in a stable column and key order)."""

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
