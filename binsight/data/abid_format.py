"""The Amazon Bin Image Dataset's own formats, parsed by pure functions.

- the subset list (`file_list.json`): {"1": ["data/metadata/100313.json", ...], ..., "5": [...]}
- per-bin metadata (`metadata/<id>.json`): EXPECTED_QUANTITY and BIN_FCSKU_DATA, one entry per
  product (asin) with its quantity and measurements, any of which may be `null`.
- the bucket layout: `bin-images/<id>.jpg` and `metadata/<id>.json`.
"""

import json
from dataclasses import dataclass
from pathlib import PurePosixPath

from binsight.errors import DataError

IMAGE_DIR = "bin-images"
METADATA_DIR = "metadata"

# Everything to inches and pounds, the units the dataset mostly uses.
LENGTH_TO_INCH = {"IN": 1.0, "INCH": 1.0, "INCHES": 1.0, "CM": 1 / 2.54, "MM": 1 / 25.4, "M": 100 / 2.54}
WEIGHT_TO_POUND = {
    "POUNDS": 1.0,
    "POUND": 1.0,
    "LB": 1.0,
    "LBS": 1.0,
    "KG": 2.20462,
    "KILOGRAMS": 2.20462,
    "G": 0.00220462,
    "GRAMS": 0.00220462,
    "OUNCES": 1 / 16,
    "OZ": 1 / 16,
}


def bin_id_from_path(path):
    """'data/metadata/09915.json' -> '09915': the basename's stem, whatever the prefix."""
    stem = PurePosixPath(str(path).replace("\\", "/")).stem
    if not stem:
        raise DataError(f"file_list.json: cannot take a bin id from {path!r}")
    return stem


def parse_file_list(obj):
    """{"label": [paths]} -> {bin_id: int label}. Ids listed twice must agree on their label."""
    if not isinstance(obj, dict) or not obj:
        raise DataError("file_list.json must be a JSON object mapping labels ('1'..'5') to lists of paths")
    labels = {}
    for key, paths in obj.items():
        try:
            label = int(key)
        except (TypeError, ValueError):
            raise DataError(f"file_list.json: label {key!r} is not an integer") from None
        if not isinstance(paths, list):
            raise DataError(f"file_list.json: label {key!r} must map to a list of paths")
        for path in paths:
            bin_id = bin_id_from_path(path)
            if labels.setdefault(bin_id, label) != label:
                raise DataError(f"file_list.json: bin {bin_id} is listed under both {labels[bin_id]} and {label}")
    return labels


def parse_file_list_bytes(data):
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"file_list.json is not valid JSON: {exc}") from None
    return parse_file_list(obj)


def limit_per_class(labels, limit):
    """Keep the first `limit` ids (sorted) of each class; None keeps everything."""
    if limit is None:
        return dict(labels)
    kept, seen = {}, {}
    for bin_id in sorted(labels):
        label = labels[bin_id]
        if seen.get(label, 0) < limit:
            kept[bin_id] = label
            seen[label] = seen.get(label, 0) + 1
    return kept


def image_key(prefix, bin_id):
    return f"{prefix}{IMAGE_DIR}/{bin_id}.jpg"


def metadata_key(prefix, bin_id):
    return f"{prefix}{METADATA_DIR}/{bin_id}.json"


@dataclass(frozen=True)
class Item:
    asin: str
    name: str
    quantity: int
    length_in: float | None
    width_in: float | None
    height_in: float | None
    weight_lb: float | None


@dataclass(frozen=True)
class BinMetadata:
    expected_quantity: int
    items: tuple


def _measure(value, table):
    """{"unit": "IN", "value": 2.5} -> 2.5 in the table's unit; None when missing or unknown."""
    if not isinstance(value, dict):
        return None
    factor = table.get(str(value.get("unit", "")).upper())
    number = value.get("value")
    if factor is None or not isinstance(number, (int, float)) or isinstance(number, bool):
        return None
    return float(number) * factor


def parse_metadata(data):
    """Bytes of metadata/<id>.json -> BinMetadata. Raises DataError when unreadable."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"metadata is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DataError("metadata is not a JSON object")
    quantity = obj.get("EXPECTED_QUANTITY")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
        raise DataError(f"metadata EXPECTED_QUANTITY is {quantity!r}, not a count")
    skus = obj.get("BIN_FCSKU_DATA") or {}
    if not isinstance(skus, dict):
        raise DataError("metadata BIN_FCSKU_DATA is not an object")
    items = []
    for asin, sku in sorted(skus.items()):
        sku = sku if isinstance(sku, dict) else {}
        qty = sku.get("quantity")
        items.append(
            Item(
                asin=str(sku.get("asin") or asin),
                name=str(sku.get("name") or ""),
                quantity=qty if isinstance(qty, int) and not isinstance(qty, bool) else 0,
                length_in=_measure(sku.get("length"), LENGTH_TO_INCH),
                width_in=_measure(sku.get("width"), LENGTH_TO_INCH),
                height_in=_measure(sku.get("height"), LENGTH_TO_INCH),
                weight_lb=_measure(sku.get("weight"), WEIGHT_TO_POUND),
            )
        )
    return BinMetadata(expected_quantity=quantity, items=tuple(items))


def expected_quantity(data):
    """Bytes of metadata/<id>.json -> (count, None), or (None, (reason, detail)) when the bin has no usable
    EXPECTED_QUANTITY: the key missing, null, not a non-negative integer, or the JSON unreadable."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, ("unreadable_metadata", f"not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return None, ("unreadable_metadata", "not a JSON object")
    if "EXPECTED_QUANTITY" not in obj:
        return None, ("missing_quantity", "no EXPECTED_QUANTITY")
    quantity = obj["EXPECTED_QUANTITY"]
    if quantity is None:
        return None, ("null_quantity", "EXPECTED_QUANTITY is null")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
        return None, ("bad_quantity", f"EXPECTED_QUANTITY is {quantity!r}, not a count")
    return quantity, None


def file_list_object(counts, prefix=""):
    """{bin_id: count} -> the file_list.json object {"count": ["<prefix>metadata/<id>.json", ...]},
    counts in numeric order, ids sorted: the subset list's format, for any counts."""
    by_count = {}
    for bin_id in sorted(counts):
        by_count.setdefault(counts[bin_id], []).append(metadata_key(prefix, bin_id))
    return {str(c): by_count[c] for c in sorted(by_count)}
