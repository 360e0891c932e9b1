"""Count sets with a coverage guarantee: split conformal prediction (Vovk et al.; Angelopoulos & Bates,
"A Gentle Introduction to Conformal Prediction", 2021), fitted on the val split.

A bin's score is 1 - P(its true count). The threshold q is the ceil((n + 1) * coverage)-th smallest of the n
val scores; a new bin's set is every count with P(count) >= 1 - q. If val and the new bins are exchangeable
(drawn alike), the set holds the true count with probability at least `coverage`, whatever the model. This
score gives the smallest sets on average (Sadinle et al., 2019). A set is never empty: the most probable
count is always in it, which can only raise the coverage.

About 30 lines of numpy rather than a library (MAPIE, TorchCP): the threshold is one number that the model
file carries and that predict and serve apply without scikit-learn or a wrapped estimator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def set_threshold(probs: np.ndarray, targets: np.ndarray, coverage: float) -> float:
    """q: the conformal quantile of the val scores 1 - P(true count) for the target coverage. With too few
    val bins for the target (n < 1 / (1 - coverage) - 1) every count is in every set: q = 1."""
    n = len(targets)
    rank = math.ceil((n + 1) * coverage)
    if n == 0 or rank > n:
        return 1.0
    scores = np.sort(1.0 - probs[np.arange(n), targets])
    return float(scores[rank - 1])


def in_sets(probs: np.ndarray, threshold: float) -> np.ndarray:
    """[n, K] booleans: which counts are in each bin's set (the most probable always is)."""
    member = probs >= 1.0 - threshold - 1e-12
    member[np.arange(len(probs)), probs.argmax(1)] = True
    return member


def count_set(probs_row: Sequence[float], classes: Sequence[int], threshold: float) -> list[int]:
    """One bin's set, as counts in increasing order."""
    member = in_sets(np.asarray([probs_row], dtype=float), threshold)[0]
    return [int(c) for c, m in zip(classes, member) if m]


def coverage_report(probs: np.ndarray, targets: np.ndarray, threshold: float, classes: Sequence[int]) -> dict:
    """Empirical coverage (overall and per count) and the mean set size of the sets at `threshold`."""
    member = in_sets(probs, threshold)
    held = member[np.arange(len(targets)), targets]
    per_count = {
        str(c): float(held[targets == k].mean()) if np.any(targets == k) else float("nan")
        for k, c in enumerate(classes)
    }
    return {
        "coverage": float(held.mean()) if len(targets) else float("nan"),
        "mean_set_size": float(member.sum(1).mean()) if len(targets) else float("nan"),
        "per_count": per_count,
    }
