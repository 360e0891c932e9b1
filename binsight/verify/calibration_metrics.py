"""How honest a model's probabilities are, as pure functions of probabilities [n, K] and class indices [n].

ece          expected calibration error: the top probability against the share right, in equal-width
             confidence bins, weighted by the bins' sizes (Guo et al., 2017; 15 bins)
nll          mean negative log-likelihood of the true class
brier        mean squared distance between the probabilities and the one-hot truth (summed over classes)
reliability  the rows of a reliability diagram: per confidence bin, its mean confidence and accuracy
"""

from __future__ import annotations

from typing import Any

import numpy as np

from binsight.verify.calibration import nll

BINS = 15


def _bin_of(confidence: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((confidence * bins).astype(int), bins - 1)


def ece(probs: np.ndarray, targets: np.ndarray, bins: int = BINS) -> float:
    if len(targets) == 0:
        return float("nan")
    confidence, right = probs.max(1), probs.argmax(1) == targets
    which = _bin_of(confidence, bins)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(right[mask].mean() - confidence[mask].mean())
    return float(total)


def brier(probs: np.ndarray, targets: np.ndarray) -> float:
    if len(targets) == 0:
        return float("nan")
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(targets)), targets] = 1.0
    return float(((probs - onehot) ** 2).sum(1).mean())


def calibration_scores(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    return {"ece": ece(probs, targets), "nll": nll(probs, targets), "brier": brier(probs, targets)}


def reliability(probs: np.ndarray, targets: np.ndarray, bins: int = BINS) -> list[dict[str, Any]]:
    """Per non-empty confidence bin: its centre, mean confidence, accuracy and size."""
    confidence, right = probs.max(1), probs.argmax(1) == targets
    which = _bin_of(confidence, bins)
    rows = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            rows.append(
                {
                    "bin": round((b + 0.5) / bins, 4),
                    "confidence": float(confidence[mask].mean()),
                    "accuracy": float(right[mask].mean()),
                    "bins": int(mask.sum()),
                }
            )
    return rows
