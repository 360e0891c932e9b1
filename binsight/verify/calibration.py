"""Post-hoc calibration: one number fitted on the val split that makes `p=0.62` mean right 62 % of the time.

    ce, neighbour, ordinal   temperature scaling (Guo et al., 2017): the head's logits divided by T before the
                             softmax (ordinal: before each threshold's sigmoid). One parameter cannot overfit a
                             few hundred val bins, and the ranking of the counts, hence the argmax, stays the
                             same for the softmax losses.
    regression               a noise model: the count is the regressed value plus Gaussian noise of standard
                             deviation sigma (in counts), so P(k) is the mass of [k - 1/2, k + 1/2] (the end
                             counts take the tails). Without it a regression head has no class probabilities.

Both are fitted by minimising the negative log-likelihood of the val labels, on the probabilities the model
serves: averaged over its test-time views. Temperature scaling rather than vector or Dirichlet scaling: with
~600 val bins a per-class fit overfits, and one scale is what the model file, predict and serve can carry.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from binsight.model.count_losses import decode

METHODS = {"ce": "temperature", "neighbour": "temperature", "ordinal": "temperature", "regression": "noise"}
# search ranges of the scale: T for the logits, sigma (in counts) for the noise model
RANGES = {"temperature": (0.05, 20.0), "noise": (0.05, 10.0)}


def calibrated_probs(
    loss: str, outputs: np.ndarray | torch.Tensor, num_classes: int, scale: float | None
) -> np.ndarray:
    """Head outputs per view [n, V, O] -> probabilities over the classes [n, K], averaged over the views.
    `scale`: the fitted T or sigma; None is the model as trained (regression: linear interpolation)."""
    out = torch.as_tensor(np.asarray(outputs), dtype=torch.float32)
    if out.dim() == 2:
        out = out[:, None]
    views = [decode(loss, out[:, v], num_classes, scale) for v in range(out.shape[1])]
    return torch.stack(views).mean(0).numpy()


def nll(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood of the class indices `targets`."""
    if len(targets) == 0:
        return float("nan")
    p = probs[np.arange(len(targets)), targets]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def fit_scale(loss: str, outputs: np.ndarray, targets: np.ndarray, num_classes: int) -> float:
    """The T (or sigma) that minimises the val NLL: golden-section search on its log, which the NLL is
    unimodal in for temperature scaling; 60 steps narrow the range to well under 0.1 %."""
    low, high = (math.log(v) for v in RANGES[METHODS[loss]])

    def cost(log_scale: float) -> float:
        return nll(calibrated_probs(loss, outputs, num_classes, math.exp(log_scale)), targets)

    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = cost(c), cost(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = cost(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = cost(d)
    return float(math.exp((a + b) / 2))
