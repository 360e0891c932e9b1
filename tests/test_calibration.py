"""Calibration, count sets and verdicts (binsight/verify/) on synthetic outputs with known answers, and the
model file carrying them to predict and serve."""

import numpy as np
import pytest
import torch

from binsight.params import VerifyParams
from binsight.verify.calibration import calibrated_probs, fit_scale
from binsight.verify.calibration_metrics import calibration_scores, ece, reliability
from binsight.verify.calibration_record import Calibration, fit_calibration
from binsight.verify.count_sets import count_set, coverage_report, set_threshold
from binsight.verify.quantity_check import (
    BadExpectation,
    accept_threshold,
    expectation_probs,
    parse_expected,
    rates,
    verdict,
)

K = 5


def synthetic(n, seed, overconfidence=4.0):
    """Logits whose softmax is the true class distribution, labels drawn from it, and the outputs of a model
    that is over-confident by construction: the true logits times `overconfidence`."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.2, size=(n, K)) + np.linspace(0, 0.5, K)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(K, p=row) for row in p])
    return (overconfidence * logits)[:, None, :].astype(np.float32), labels


def test_temperature_scaling_lowers_the_ece_of_an_over_confident_model():
    outputs, labels = synthetic(4000, seed=0)
    before = calibrated_probs("ce", outputs, K, None)
    scale = fit_scale("ce", outputs, labels, K)
    after = calibrated_probs("ce", outputs, K, scale)
    assert scale == pytest.approx(4.0, rel=0.15)  # it finds the over-confidence it was built with
    assert ece(after, labels) < ece(before, labels) / 3
    assert calibration_scores(after, labels)["nll"] < calibration_scores(before, labels)["nll"]
    assert (after.argmax(1) == before.argmax(1)).all()  # the counts themselves do not change


def test_a_regression_head_gets_probabilities_from_a_noise_model_fitted_on_val():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, K, 3000)
    outputs = (labels + rng.normal(0, 0.7, 3000)).astype(np.float32)[:, None, None]
    sigma = fit_scale("regression", outputs, labels, K)
    probs = calibrated_probs("regression", outputs, K, sigma)
    assert sigma == pytest.approx(0.7, rel=0.15)
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and (probs >= 0).all() and probs.max(1).mean() < 0.8
    assert ece(probs, labels) < 0.05


def test_ordinal_outputs_are_scaled_per_threshold_and_views_are_averaged():
    outputs = torch.tensor([[[2.0, 0.0, -1.0, -3.0], [4.0, 0.0, -2.0, -6.0]]]).numpy()  # 1 bin, 2 views
    sharp, soft = calibrated_probs("ordinal", outputs, K, 1.0), calibrated_probs("ordinal", outputs, K, 3.0)
    assert sharp.shape == (1, K) and np.allclose(sharp.sum(), 1) and np.allclose(soft.sum(), 1)
    assert soft.max() < sharp.max()  # a higher temperature spreads the mass


def test_count_sets_cover_held_out_bins_within_binomial_error_of_the_target():
    cal_out, cal_labels = synthetic(1000, seed=2, overconfidence=1.0)
    test_out, test_labels = synthetic(5000, seed=3, overconfidence=1.0)
    cal_probs, test_probs = (calibrated_probs("ce", o, K, None) for o in (cal_out, test_out))
    for coverage in (0.8, 0.9, 0.95):
        q = set_threshold(cal_probs, cal_labels, coverage)
        got = coverage_report(test_probs, test_labels, q, list(range(1, K + 1)))
        sd = np.sqrt(coverage * (1 - coverage) / len(test_labels))
        # split conformal: coverage >= target, and at most 1/(n+1) above it (plus the test set's sampling error)
        assert coverage - 3 * sd <= got["coverage"] <= coverage + 1 / 1001 + 3 * sd, (coverage, got)
        assert 1 <= got["mean_set_size"] < K


def test_too_few_val_bins_for_the_target_give_every_count():
    probs = np.full((5, K), 1 / K)
    assert set_threshold(probs, np.zeros(5, int), 0.9) == 1.0
    assert count_set(probs[0], [1, 2, 3, 4, 5], 1.0) == [1, 2, 3, 4, 5]


def test_the_accept_threshold_holds_the_false_accept_rate_on_held_out_bins():
    cal_out, cal_labels = synthetic(2000, seed=4, overconfidence=1.0)
    test_out, test_labels = synthetic(5000, seed=5, overconfidence=1.0)
    cal_probs, test_probs = (calibrated_probs("ce", o, K, None) for o in (cal_out, test_out))
    for target in (0.01, 0.05, 0.1):
        _, wrong = expectation_probs(cal_probs, cal_labels, "off_by_one")
        t = accept_threshold(wrong, target)
        assert (wrong >= t).mean() <= target  # on val, by construction
        right, wrong_test = expectation_probs(test_probs, test_labels, "off_by_one")
        held = rates(right, wrong_test, t)
        assert abs(held["false_accept"] - target) < 3 * np.sqrt(target * (1 - target) / len(wrong_test)) + 0.01
        assert 0 < held["right_accepted"] < 1


def test_wrong_expectations_are_the_neighbours_or_every_other_count():
    probs = np.array([[0.1, 0.6, 0.2, 0.05, 0.05]])
    right, off = expectation_probs(probs, np.array([1]), "off_by_one")
    _, other = expectation_probs(probs, np.array([1]), "any_other")
    assert right.tolist() == [0.6] and sorted(off.tolist()) == [0.1, 0.2] and len(other) == 4


@pytest.mark.parametrize(
    "value,expected",
    [(3, 3), ("3", 3), (" 4 ", 4), (2.0, 2), ("0", 0)],
)
def test_whole_quantities_are_read_from_files_and_requests(value, expected):
    assert parse_expected(value) == expected


@pytest.mark.parametrize(
    "value,message",
    [
        ("3.5", "'3.5' is not a whole number"),
        (-1, "-1 is negative"),
        (None, "no expected quantity"),
        ("", "no expected quantity"),
        ("three", "'three' is not a whole number"),
        (True, "True is not a whole number"),
        ([3], "[3] is not a whole number"),
    ],
)
def test_a_bad_expected_quantity_is_named(value, message):
    with pytest.raises(BadExpectation, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_expected(value)


def test_verdicts_accept_above_the_threshold_and_review_the_rest_with_a_reason():
    classes, names, probs = [1, 2, 3, 4, 5], ["1", "2", "3", "4", "5"], [0.05, 0.1, 0.7, 0.1, 0.05]
    ok = verdict(probs, classes, names, 3, 0.5, [3])
    assert ok["verdict"] == "accept" and ok["p_expected"] == 0.7 and "reaches" in ok["reason"]
    low = verdict(probs, classes, names, 4, 0.5, [3])
    assert low["verdict"] == "review" and "below the threshold 0.50" in low["reason"]
    outside = verdict(probs, classes, names, 7, 0.0, [3])  # even a threshold of 0 never accepts it
    assert outside["verdict"] == "review" and "outside the counts this model knows (1-5)" in outside["reason"]
    open_class = verdict([0.5, 0.5], [5, 6], ["5", "6+"], 8, 0.0, [5, 6])
    assert open_class["verdict"] == "review" and "open class 6+" in open_class["reason"]


def test_a_calibration_keeps_its_val_data_and_moves_its_thresholds_on_request():
    outputs, labels = synthetic(800, seed=6)
    calibration, before, after = fit_calibration("ce", outputs, labels, K, VerifyParams())
    assert calibration.method == "temperature" and calibration.coverage == 0.9
    assert ece(after, labels) < ece(before, labels)
    again = Calibration.from_dict(calibration.as_dict())
    assert again == calibration
    wider = again.retarget(coverage=0.95, max_false_accept=0.01)
    assert wider.set_threshold >= calibration.set_threshold and wider.accept_threshold >= calibration.accept_threshold
    assert reliability(after, labels)[0].keys() == {"bin", "confidence", "accuracy", "bins"}


def test_the_model_file_round_trips_the_calibration_to_the_predictor(tmp_path):
    from binsight.model.counting_model import copy_model_file, load_model
    from binsight.serve.predictor import Predictor
    from tests.support.serving import untrained_model
    from tests.support.synthetic import make_bins

    trained = untrained_model(tmp_path / "trained.pt", image_size=32)
    outputs, labels = synthetic(300, seed=7)
    calibration, _, _ = fit_calibration("ce", outputs, labels, K, VerifyParams(coverage=0.8))
    copy_model_file(trained, tmp_path / "model.pt", calibration=calibration.as_dict())
    _, meta = load_model(tmp_path / "model.pt")
    assert meta["calibration"]["scale"] == calibration.scale
    assert meta["calibration"]["set_threshold"] == calibration.set_threshold
    predictor = Predictor(tmp_path / "model.pt", "cpu")
    assert predictor.calibration == calibration
    jpeg = next(iter(make_bins(1, classes=(3,)).values()))[1]
    res = predictor.predict_bytes([jpeg])[0]
    assert res["count_set"] == count_set(
        [res["probabilities"][n] for n in predictor.names], [1, 2, 3, 4, 5], calibration.set_threshold
    )
    assert predictor.verdict(res, 9)["verdict"] == "review"
    uncalibrated = Predictor(trained, "cpu")
    assert uncalibrated.calibration is None and "count_set" not in uncalibrated.predict_bytes([jpeg])[0]
