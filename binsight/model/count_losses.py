"""Counting-aware losses and how each one's head output decodes to a count.

The classes are the sorted counts (1..5 for the subset); class index k stands for classes[k].
Every loss has a head of its own width and a `decode` to probabilities over the classes, so
evaluate, predict and serve treat all of them alike (the predicted count is the most probable):

    ce          K logits, softmax. Cross-entropy, as the notebook.
    neighbour   K logits, softmax. Cross-entropy against a target that puts `neighbour_weight` of
                the mass on the neighbouring counts k-1 and k+1: a wrong count near the truth costs
                less than a far one (the "CE + neighbour term" of the ABID challenge write-ups).
    ordinal     K-1 logits, one per threshold: P(count > classes[j]) = sigmoid(logit_j) (CORAL-style
                cumulative logits, binary cross-entropy per threshold). Decoded to
                P(k) = P(> k-1) - P(> k), with the thresholds made monotone first.
    regression  1 output: the class index as a number (smooth L1). Decoded to a distribution
                between the two nearest counts (linear interpolation), so argmax = rounding to the
                nearest count, clamped to the known counts.
"""

import torch
import torch.nn.functional as F

from binsight.model.aux_targets import PRODUCT_CLASSES
from binsight.params import LOSSES


def output_size(loss, num_classes):
    """Width of the head's last layer for `loss`."""
    return {"ce": num_classes, "neighbour": num_classes, "ordinal": num_classes - 1, "regression": 1}[loss]


def class_weights(targets, num_classes):
    """Inverse-frequency weights n / (K * n_k): each class contributes equally to the loss."""
    counts = torch.bincount(torch.as_tensor(targets), minlength=num_classes).double().clamp(min=1)
    return (counts.sum() / (num_classes * counts)).float()


def neighbour_targets(targets, num_classes, weight):
    """Soft targets: 1 - weight on the true class, weight split over the neighbours that exist."""
    n = len(targets)
    rows = torch.arange(n, device=targets.device)
    soft = torch.zeros(n, num_classes, device=targets.device)
    for step in (-1, 1):
        k = targets + step
        ok = (k >= 0) & (k < num_classes)
        soft[rows[ok], k[ok]] = 1.0
    soft = soft / soft.sum(1, keepdim=True).clamp(min=1) * weight
    soft[rows, targets] = 1.0 - weight * (soft.sum(1) > 0).float()
    return soft


def ordinal_levels(targets, num_classes):
    """Class index k -> K-1 binary levels [k > 0, k > 1, ...]."""
    return (torch.arange(num_classes - 1, device=targets.device)[None] < targets[:, None]).float()


class CountingLoss(torch.nn.Module):
    """One of LOSSES, with optional per-class weights and label smoothing (ce only)."""

    def __init__(self, loss, num_classes, weights=None, label_smoothing=0.0, neighbour_weight=0.2):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}: expected one of {', '.join(LOSSES)}")
        self.loss, self.num_classes = loss, num_classes
        self.label_smoothing, self.neighbour_weight = label_smoothing, neighbour_weight
        self.register_buffer("weights", weights if weights is not None else torch.ones(num_classes))

    def forward(self, outputs, targets):
        outputs = outputs.float()
        w = self.weights[targets]
        if self.loss == "ce":
            per = F.cross_entropy(outputs, targets, reduction="none", label_smoothing=self.label_smoothing)
        elif self.loss == "neighbour":
            soft = neighbour_targets(targets, self.num_classes, self.neighbour_weight)
            per = -(soft * F.log_softmax(outputs, 1)).sum(1)
        elif self.loss == "ordinal":
            levels = ordinal_levels(targets, self.num_classes)
            per = F.binary_cross_entropy_with_logits(outputs, levels, reduction="none").sum(1)
        else:
            per = F.smooth_l1_loss(outputs[:, 0], targets.float(), reduction="none")
        return (per * w).sum() / w.sum()


def decode(loss, outputs, num_classes, scale=None):
    """Head outputs [n, output_size] -> probabilities over the classes [n, K] (rows sum to 1). `scale`: the
    calibration fitted on val (binsight.verify.calibration): the temperature of the logits, or for
    regression the sd of the noise model; None decodes the model as trained."""
    outputs = outputs.float()
    if loss in ("ce", "neighbour"):
        return torch.softmax(outputs / (scale or 1.0), 1)
    if loss == "ordinal":
        above = torch.sigmoid(outputs / (scale or 1.0))
        above = torch.cummin(above, dim=1).values  # P(> k) can only fall as k grows
        ones, zeros = torch.ones_like(above[:, :1]), torch.zeros_like(above[:, :1])
        cum = torch.cat([ones, above, zeros], 1)
        return (cum[:, :-1] - cum[:, 1:]).clamp(min=0)
    if loss == "regression" and scale is not None:
        return noise_model(outputs[:, 0], num_classes, scale)
    if loss == "regression":
        value = outputs[:, 0].clamp(0, num_classes - 1)
        grid = torch.arange(num_classes, device=outputs.device, dtype=value.dtype)
        return (1 - (value[:, None] - grid[None]).abs()).clamp(min=0)
    raise ValueError(f"unknown loss {loss!r}: expected one of {', '.join(LOSSES)}")


def noise_model(value, num_classes, sigma):
    """P(class k) when the class index is `value` plus Gaussian noise of sd `sigma`: the mass of [k - 1/2,
    k + 1/2], the first and last classes taking the tails."""
    grid = torch.arange(num_classes + 1, device=value.device, dtype=value.dtype) - 0.5
    cdf = torch.special.ndtr((grid[None] - value[:, None]) / sigma)
    cdf[:, 0], cdf[:, -1] = 0.0, 1.0
    return (cdf[:, 1:] - cdf[:, :-1]).clamp(min=0)


def standardizer(targets):
    """(mean, std) of the two log totals over the rows that have both: the regressions see z-scores."""
    known = targets[:, 1:][~targets[:, 1:].isnan().any(1)]
    if len(known) < 2:
        return torch.zeros(2), torch.ones(2)
    return known.mean(0), known.std(0).clamp(min=1e-6)


class AuxTargetLoss(torch.nn.Module):
    """The counting loss on the first `count_outputs` outputs, plus `weight` x (cross-entropy on the
    number of products + half the squared error of the standardized log totals that are known).
    Called without aux targets (val), it is the counting loss alone."""

    def __init__(self, counting, count_outputs, weight, mean, std):
        super().__init__()
        self.counting, self.count_outputs, self.weight = counting, count_outputs, weight
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    def forward(self, outputs, targets, aux=None):
        loss = self.counting(outputs[:, : self.count_outputs], targets)
        if aux is None:
            return loss
        extra = outputs[:, self.count_outputs :].float()
        products = F.cross_entropy(extra[:, :PRODUCT_CLASSES], aux[:, 0].long())
        z = (aux[:, 1:] - self.mean) / self.std
        known = ~z.isnan()
        totals = F.mse_loss(extra[:, PRODUCT_CLASSES:][known], z[known]) if known.any() else extra.sum() * 0
        return loss + self.weight * (products + 0.5 * totals)
