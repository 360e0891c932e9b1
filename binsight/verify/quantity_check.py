"""The verdict for an expected quantity: accept when P(count = expected) reaches a threshold chosen on the val
split, otherwise a person reviews the bin.

The threshold is the lowest that keeps the false-accept rate on val within `verify.max_false_accept`: the
share of val bins, each paired with a wrong expectation, whose P(wrong expectation) reaches it. Which wrong
expectations (`verify.against`):

    off_by_one   one item missing or extra: the count next to the true one (the realistic error, and the
                 hardest to catch, since a counting model's probability spreads to the neighbours)
    any_other    every other count the model knows

The lowest such threshold accepts the most right bins. "Off by one" is taken between neighbouring classes,
which are neighbouring counts under every class policy but the open class of `clip` ("6+").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

AGAINST = ("off_by_one", "any_other")


class BadExpectation(ValueError):
    """An expected quantity that is not a whole number of items."""


def parse_expected(value: Any) -> int:
    """A file's or a request's expected quantity -> an int; BadExpectation naming the value otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadExpectation("no expected quantity")
    if isinstance(value, bool):
        raise BadExpectation(f"expected quantity {value!r} is not a whole number")
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            raise BadExpectation(f"expected quantity {text!r} is not a whole number") from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise BadExpectation(f"expected quantity {value!r} is not a whole number")
    if not math.isfinite(number) or number != int(number):
        raise BadExpectation(f"expected quantity {value!r} is not a whole number")
    if number < 0:
        raise BadExpectation(f"expected quantity {value!r} is negative")
    return int(number)


def wrong_indices(true_index: int, num_classes: int, against: str) -> list[int]:
    if against == "off_by_one":
        return [k for k in (true_index - 1, true_index + 1) if 0 <= k < num_classes]
    return [k for k in range(num_classes) if k != true_index]


def expectation_probs(probs: np.ndarray, targets: np.ndarray, against: str) -> tuple[np.ndarray, np.ndarray]:
    """-> (P(expected) of each bin with its right expectation, P(expected) of each (bin, wrong expectation))."""
    right = probs[np.arange(len(targets)), targets]
    wrong = [probs[i, k] for i, y in enumerate(targets) for k in wrong_indices(int(y), probs.shape[1], against)]
    return right, np.asarray(wrong, dtype=float)


def accept_threshold(wrong: np.ndarray, max_false_accept: float) -> float:
    """The lowest threshold t with share(wrong >= t) <= max_false_accept."""
    if len(wrong) == 0:
        return 0.0
    allowed = math.floor(max_false_accept * len(wrong) + 1e-9)
    if allowed >= len(wrong):
        return 0.0
    ranked = np.sort(wrong)[::-1]
    return float(np.nextafter(ranked[allowed], np.inf))


def rates(right: np.ndarray, wrong: np.ndarray, threshold: float) -> dict[str, float]:
    """At `threshold`: the false-accept rate and the share of right bins accepted without a person."""
    return {
        "false_accept": float((wrong >= threshold).mean()) if len(wrong) else float("nan"),
        "right_accepted": float((right >= threshold).mean()) if len(right) else float("nan"),
    }


def tradeoff(right: np.ndarray, wrong: np.ndarray, steps: int = 100) -> list[dict[str, float]]:
    """The whole trade-off: for thresholds from 0 to 1, the false-accept rate against the right bins accepted."""
    return [{"threshold": round(t, 4), **rates(right, wrong, t)} for t in (i / steps for i in range(steps + 1))]


def verdict(
    probs_row: Sequence[float],
    classes: Sequence[int],
    names: Sequence[str],
    expected: int,
    threshold: float,
    count_set: Sequence[int],
) -> dict[str, Any]:
    """accept or review, with P(count = expected), the count set and the reason."""
    out: dict[str, Any] = {"expected": expected, "count_set": list(count_set)}
    open_class = next((c for c, n in zip(classes, names) if n.endswith("+")), None)
    if open_class is not None and expected >= open_class:
        out.update(
            p_expected=None,
            verdict="review",
            reason=f"{expected} is in the open class {open_class}+, which does not tell {expected} from other counts",
        )
        return out
    if expected not in classes:
        known = (
            f"{min(classes)}-{max(classes)}"
            if list(classes) == list(range(min(classes), max(classes) + 1))
            else (", ".join(map(str, classes)))
        )
        out.update(
            p_expected=None, verdict="review", reason=f"{expected} is outside the counts this model knows ({known})"
        )
        return out
    p = float(probs_row[list(classes).index(expected)])
    out["p_expected"] = round(p, 6)
    if p >= threshold:
        out.update(verdict="accept", reason=f"P({expected}) = {p:.2f} reaches the threshold {threshold:.2f}")
    else:
        out.update(verdict="review", reason=f"P({expected}) = {p:.2f} is below the threshold {threshold:.2f}")
    return out
