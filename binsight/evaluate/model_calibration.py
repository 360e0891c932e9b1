"""The calibration half of the evaluate stage: score the val split with the model's test-time views, fit the
calibration and the decision thresholds (binsight/verify/), and say how much the calibration changed."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from binsight.evaluate.scoring import timed_outputs
from binsight.params import VerifyParams
from binsight.verify.calibration_metrics import calibration_scores
from binsight.verify.calibration_record import Calibration, fit_calibration


def calibrate_model(
    model: torch.nn.Module,
    meta: dict,
    rows_with_counts: list[tuple[str, int, int]],
    loader: Iterable,
    device: torch.device,
    dtype: torch.dtype | None,
    verify: VerifyParams,
) -> tuple[Calibration, dict[str, dict[str, float]]]:
    """-> (the calibration fitted on these val bins, {"before": scores, "after": scores} on them)."""
    classes, tta = meta["classes"], meta["preprocess"]["tta"]
    outputs, _ = timed_outputs(model, meta, loader, device, dtype, tta, label="calibrate on val")
    index = {c: k for k, c in enumerate(classes)}
    targets = np.array([index[label] for _, label, _ in rows_with_counts], dtype=int)
    calibration, before, after = fit_calibration(meta["loss"], outputs, targets, len(classes), verify)
    return calibration, {"before": calibration_scores(before, targets), "after": calibration_scores(after, targets)}


def calibration_summary(calibration: Calibration, scores: dict[str, dict[str, float]], n: int) -> str:
    name = "temperature" if calibration.method == "temperature" else "noise sd"
    before, after = scores["before"], scores["after"]
    return (
        f"calibrate: {name} {calibration.scale:.3f} fitted on {n} val bins: ECE {before['ece']:.3f} -> "
        f"{after['ece']:.3f}, NLL {before['nll']:.3f} -> {after['nll']:.3f}; count sets at coverage "
        f"{calibration.coverage:g}: P >= {1 - calibration.set_threshold:.3f}; accept at P(expected) >= "
        f"{calibration.accept_threshold:.3f} ({calibration.max_false_accept:g} false accepts, {calibration.against})"
    )
