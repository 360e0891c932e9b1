"""Stratified, seeded train/val/test split as a pure function.

Within each class the ids are ordered by sha256(seed:id): the same on every machine and Python
version (no RNG stream involved), and adding bins to the list does not reshuffle the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

SPLITS = ("train", "val", "test")


def split_sizes(n, ratios):
    """Per-split sizes for n items: train and val rounded, test takes the rest (each within 1)."""
    n_train = round(n * ratios["train"])
    n_val = min(round(n * ratios["val"]), n - n_train)
    return {"train": n_train, "val": n_val, "test": n - n_train - n_val}


def _order_key(seed, bin_id):
    return hashlib.sha256(f"{seed}:{bin_id}".encode()).hexdigest()


def stratified_split(
    items: Iterable[tuple[str, int]], ratios: Mapping[str, float], seed: int
) -> dict[str, list[tuple[str, int]]]:
    """[(id, label)] -> {"train": [...], "val": [...], "test": [...]}, each sorted by id."""
    by_class: dict[int, list[str]] = {}
    for bin_id, label in items:
        by_class.setdefault(label, []).append(bin_id)
    out: dict[str, list[tuple[str, int]]] = {name: [] for name in SPLITS}
    for label, ids in sorted(by_class.items()):
        ids = sorted(set(ids), key=lambda i: _order_key(seed, i))
        sizes = split_sizes(len(ids), ratios)
        start = 0
        for name in SPLITS:
            out[name].extend((i, label) for i in ids[start : start + sizes[name]])
            start += sizes[name]
    return {name: sorted(rows) for name, rows in out.items()}
