"""Counting-safe views of a square image batch: the symmetries of a square (flips, 90° rotations).
None of them moves an item out of the frame or changes how many there are, so they serve both as
training augmentation and as test-time augmentation (TTA: the average of the model's
probabilities over the views).

    none      the image itself (1 view)
    flips     itself, left-right, up-down, both (= 180°)  (4 views)
    dihedral  the 8 symmetries: 4 rotations by 90°, each with and without a left-right flip
"""

import torch

from binsight.params import TTA_MODES  # noqa: F401 (re-exported)


def dihedral(x, k):
    """The k-th (0..7) symmetry of the last two (square) dims: rotate k % 4 quarter turns, then
    flip left-right when k >= 4."""
    x = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return x.flip(-1) if k >= 4 else x


VIEW_INDICES = {"none": (0,), "flips": (0, 4, 6, 2), "dihedral": tuple(range(8))}


def views(mode):
    """The dihedral indices of the views of a TTA mode."""
    if mode not in VIEW_INDICES:
        raise ValueError(f"unknown TTA mode {mode!r}: expected one of {', '.join(TTA_MODES)}")
    return VIEW_INDICES[mode]


def average_over_views(probabilities_of, x, mode):
    """Mean of `probabilities_of(view)` over the views of `x` ([n, c, s, s]) for a TTA mode."""
    indices = views(mode)
    total = None
    for k in indices:
        p = probabilities_of(dihedral(x, k))
        total = p if total is None else total + p
    return total / len(indices)
