"""Dataset statistics as pure functions of the fetch manifest and the parsed ABID metadata.

Each function takes plain values (manifest rows, {bin id: BinMetadata}) and returns either rows
ready for one CSV (one DVC plot each) or numbers for the summary, so tests call them directly.
"""

import math
import statistics
from dataclasses import dataclass

from binsight.errors import DataError

CLASS_COLUMNS = ("label", "bins", "share", "mean_products")
SIZE_COLUMNS = ("size_kib", "from_bytes", "to_bytes", "bins")
RESOLUTION_COLUMNS = ("id", "label", "width", "height")
ITEM_COLUMNS = ("bin_id", "label", "asin", "quantity", "length_in", "width_in", "height_in", "weight_lb", "volume_in3")


@dataclass(frozen=True)
class Bin:
    id: str
    label: int
    width: int
    height: int
    bytes: int


def bins_from_manifest(rows):
    """Manifest rows (strings from the CSV) -> [Bin], sorted by id. Raises DataError on a bad row."""
    bins = []
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            bins.append(
                Bin(
                    id=str(row["id"]),
                    label=int(row["label"]),
                    width=int(row["width"]),
                    height=int(row["height"]),
                    bytes=int(row["bytes"]),
                )
            )
        except (KeyError, TypeError, ValueError):
            raise DataError(f"manifest line {n} is not id,label,width,height,bytes: {dict(row)}") from None
    return sorted(bins, key=lambda b: b.id)


def _round(x, digits=4):
    return None if x is None else round(float(x), digits)


def class_counts(bins, metadata):
    """One row per label: how many bins, their share, and the mean number of distinct products."""
    by_label = {}
    for b in bins:
        by_label.setdefault(b.label, []).append(len(metadata[b.id].items))
    total = len(bins)
    return [
        {
            "label": label,
            "bins": len(products),
            "share": _round(len(products) / total),
            "mean_products": _round(statistics.fmean(products)),
        }
        for label, products in sorted(by_label.items())
    ]


def size_histogram(sizes, n_bins):
    """Equal-width histogram of file sizes in bytes, with integer edges so a size falls in exactly
    one bin: bin i holds from_bytes <= size < to_bytes. Always `n_bins` rows (none for no sizes)."""
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    if not sizes:
        return []
    lo, hi = min(sizes), max(sizes)
    width = max(1, math.ceil((hi - lo + 1) / n_bins))
    counts = [0] * n_bins
    for s in sizes:
        counts[(s - lo) // width] += 1
    rows = []
    for i, count in enumerate(counts):
        start, stop = lo + i * width, lo + (i + 1) * width
        rows.append(
            {"size_kib": round((start + stop) / 2 / 1024, 2), "from_bytes": start, "to_bytes": stop, "bins": count}
        )
    return rows


def resolution_rows(bins):
    return [{"id": b.id, "label": b.label, "width": b.width, "height": b.height} for b in bins]


def _volume(item):
    dims = (item.length_in, item.width_in, item.height_in)
    return None if any(d is None for d in dims) else dims[0] * dims[1] * dims[2]


def item_rows(bins, metadata):
    """One row per product listed in a bin; a measurement the metadata lacks (null) stays None."""
    rows = []
    for b in bins:
        for item in metadata[b.id].items:
            rows.append(
                {
                    "bin_id": b.id,
                    "label": b.label,
                    "asin": item.asin,
                    "quantity": item.quantity,
                    "length_in": _round(item.length_in),
                    "width_in": _round(item.width_in),
                    "height_in": _round(item.height_in),
                    "weight_lb": _round(item.weight_lb),
                    "volume_in3": _round(_volume(item)),
                }
            )
    return rows


def describe(values):
    """min/median/mean/max of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {
        "min": _round(min(values)),
        "median": _round(statistics.median(values)),
        "mean": _round(statistics.fmean(values)),
        "max": _round(max(values)),
    }


def summary(bins, metadata, items):
    """The numbers `dvc metrics show` lists for the dataset."""
    if not bins:
        raise DataError("no bins to explore: the manifest is empty")
    counts = {str(row["label"]): row["bins"] for row in class_counts(bins, metadata)}
    quantities = [metadata[b.id].expected_quantity for b in bins]
    return {
        "n_bins": len(bins),
        "n_classes": len(counts),
        "bins_per_class": counts,
        # the largest class over the smallest: 1.0 is balanced
        "class_imbalance": _round(max(counts.values()) / min(counts.values())),
        "mean_items_per_bin": _round(statistics.fmean(quantities)),
        "mean_products_per_bin": _round(statistics.fmean(len(metadata[b.id].items) for b in bins)),
        "file_size_kib": describe(b.bytes / 1024 for b in bins),
        "width_px": describe(b.width for b in bins),
        "height_px": describe(b.height for b in bins),
        "products": {
            "n": len(items),
            "with_dimensions": sum(r["volume_in3"] is not None for r in items),
            "with_weight": sum(r["weight_lb"] is not None for r in items),
        },
        "product_weight_lb": describe(r["weight_lb"] for r in items),
        "product_volume_in3": describe(r["volume_in3"] for r in items),
    }
