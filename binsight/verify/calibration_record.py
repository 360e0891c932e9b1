"""What the evaluate stage stores in the model file, and how it is fitted from the val split's outputs.

    {"method": "temperature", "scale": 1.31,             # binsight.verify.calibration
     "coverage": 0.9, "set_threshold": 0.71,             # binsight.verify.count_sets
     "max_false_accept": 0.05, "against": "off_by_one", "accept_threshold": 0.58,   # quantity_check
     "val_probs": [[...], ...], "val_labels": [...]}      # the calibrated val probabilities they came from

The val probabilities travel with the model, so predict, verify and serve can recompute both thresholds for
another coverage or false-accept target (`--coverage`, `--max-false-accept`) without the data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from binsight.params import VerifyParams
from binsight.verify.calibration import METHODS, calibrated_probs, fit_scale
from binsight.verify.count_sets import set_threshold
from binsight.verify.quantity_check import accept_threshold, expectation_probs


@dataclass
class Calibration:
    method: str
    scale: float
    coverage: float
    set_threshold: float
    max_false_accept: float
    against: str
    accept_threshold: float
    val_probs: list[list[float]] = field(default_factory=list)
    val_labels: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(**data)

    def retarget(self, coverage: float | None = None, max_false_accept: float | None = None) -> Calibration:
        """The same calibration with the thresholds recomputed for other targets, from the stored val data."""
        probs, labels = np.asarray(self.val_probs, dtype=float), np.asarray(self.val_labels, dtype=int)
        changes: dict[str, Any] = {}
        if coverage is not None:
            changes.update(coverage=coverage, set_threshold=set_threshold(probs, labels, coverage))
        if max_false_accept is not None:
            _, wrong = expectation_probs(probs, labels, self.against)
            changes.update(
                max_false_accept=max_false_accept, accept_threshold=accept_threshold(wrong, max_false_accept)
            )
        return replace(self, **changes)


def thresholds(probs: np.ndarray, labels: np.ndarray, verify: VerifyParams) -> dict[str, float]:
    _, wrong = expectation_probs(probs, labels, verify.against)
    return {
        "set_threshold": set_threshold(probs, labels, verify.coverage),
        "accept_threshold": accept_threshold(wrong, verify.max_false_accept),
    }


def fit_calibration(
    loss: str, outputs: np.ndarray, labels: np.ndarray, num_classes: int, verify: VerifyParams
) -> tuple[Calibration, np.ndarray, np.ndarray]:
    """Val head outputs per view [n, V, O] and class indices -> (the calibration, the val probabilities before
    and after it)."""
    before = calibrated_probs(loss, outputs, num_classes, None)
    scale = fit_scale(loss, outputs, labels, num_classes)
    after = calibrated_probs(loss, outputs, num_classes, scale)
    calibration = Calibration(
        method=METHODS[loss],
        scale=scale,
        coverage=verify.coverage,
        max_false_accept=verify.max_false_accept,
        against=verify.against,
        val_probs=np.round(after, 6).tolist(),
        val_labels=[int(y) for y in labels],
        **thresholds(after, labels, verify),
    )
    return calibration, before, after
