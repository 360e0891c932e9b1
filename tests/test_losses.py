"""The counting losses: head widths, label <-> class mapping, decoding to a count as documented in
binsight/model/count_losses.py, and a small fit through the real training code on generated bins."""

import json

import pytest
import torch

from binsight.data.split_files import read_split
from binsight.evaluate.scoring import split_loader, timed_predictions
from binsight.model.count_losses import (
    LOSSES,
    CountingLoss,
    class_weights,
    decode,
    neighbour_targets,
    ordinal_levels,
    output_size,
)
from binsight.model.counting_model import load_model, model_from_params
from binsight.params import check_model
from binsight.serve.predictor import Predictor
from binsight.train.loops import seed_everything
from stages import evaluate
from tests.support.dataset import SMALL_MODEL, write_dataset
from tests.support.project import call, git_commit, make_project, set_params

K = 5


@pytest.mark.parametrize("loss,width", [("ce", 5), ("neighbour", 5), ("ordinal", 4), ("regression", 1)])
def test_head_width_and_decoded_shape(loss, width):
    assert output_size(loss, K) == width
    outputs = torch.randn(7, width)
    probs = decode(loss, outputs, K)
    assert probs.shape == (7, K)
    assert torch.all(probs >= 0)
    assert torch.allclose(probs.sum(1), torch.ones(7), atol=1e-5)
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 2])
    value = CountingLoss(loss, K)(outputs.requires_grad_(), targets)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert outputs.grad is not None and outputs.grad.abs().sum() > 0


def test_ordinal_levels_map_class_index_to_thresholds():
    levels = ordinal_levels(torch.tensor([0, 2, 4]), K)
    assert levels.tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


def test_ordinal_decodes_confident_thresholds_to_the_class_they_bracket():
    # P(>0), P(>1) near 1, P(>2), P(>3) near 0: class index 2 (count classes[2])
    outputs = torch.tensor([[9.0, 9.0, -9.0, -9.0]])
    assert decode("ordinal", outputs, K).argmax(1).item() == 2
    # non-monotone thresholds are made monotone: P(>2) can not exceed P(>1)
    probs = decode("ordinal", torch.tensor([[9.0, -9.0, 9.0, -9.0]]), K)
    assert probs.argmax(1).item() == 1 and torch.allclose(probs.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("value,expected", [(0.0, 0), (1.4, 1), (1.6, 2), (3.5001, 4), (-3.0, 0), (9.0, 4)])
def test_regression_rounds_to_the_nearest_class_and_clamps(value, expected):
    probs = decode("regression", torch.tensor([[value]]), K)
    assert probs.argmax(1).item() == expected
    if 0 < value < K - 1:  # split between the two nearest counts, linearly
        lo = int(value)
        assert probs[0, lo].item() == pytest.approx(1 - (value - lo), abs=1e-5)


def test_ce_and_neighbour_decode_with_softmax():
    outputs = torch.tensor([[0.0, 1.0, 5.0, 1.0, 0.0]])
    for loss in ("ce", "neighbour"):
        assert torch.allclose(decode(loss, outputs, K), torch.softmax(outputs, 1))


def test_neighbour_targets_spread_mass_to_existing_neighbours():
    soft = neighbour_targets(torch.tensor([0, 2, 4]), K, 0.2)
    assert soft[0].tolist() == pytest.approx([0.8, 0.2, 0, 0, 0])
    assert soft[1].tolist() == pytest.approx([0, 0.1, 0.8, 0.1, 0])
    assert soft[2].tolist() == pytest.approx([0, 0, 0, 0.2, 0.8])


def test_neighbour_loss_prefers_a_near_miss_to_a_far_one():
    near = torch.tensor([[0.0, 0.0, 0.0, 5.0, 0.0]])  # true class 2, guesses 3
    far = torch.tensor([[5.0, 0.0, 0.0, 0.0, 0.0]])  # guesses 0
    target = torch.tensor([2])
    nb = CountingLoss("neighbour", K, neighbour_weight=0.3)
    ce = CountingLoss("ce", K)
    assert nb(near, target) < nb(far, target)
    assert ce(near, target) == pytest.approx(ce(far, target).item())  # plain CE can't tell them apart


def test_class_weights_equalise_classes():
    w = class_weights(torch.tensor([0] * 6 + [1] * 2 + [2] * 2), 3)
    assert (w * torch.tensor([6.0, 2.0, 2.0])).tolist() == pytest.approx([10 / 3] * 3)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="expected one of ce, neighbour, ordinal, regression"):
        CountingLoss("hinge", K)


# The fits of the real train stage: 48 px, cached images, flips, a fresh start each
FIT_TRAIN = {
    "epochs": 6,
    "batch_size": 8,
    "image_size": 48,
    "num_workers": 0,
    "lr": 0.002,
    "optimizer": "adamw",
    "cache_images": True,
    "augment": "flips",
    "resume": False,
}


@pytest.fixture(scope="module")
def fit_project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("losses") / "proj", commit=False)
    write_dataset(project, n_per_class=30)
    git_commit(project, "generated bins")
    return project


@pytest.mark.slow
@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_fits_generated_bins_better_than_chance(fit_project, loss, capsys):
    """The real train stage with each loss, 48 px, cached images; val accuracy is what it picks the
    best epoch by, and the saved model decodes on the held-out split to counts better than chance."""
    proj = fit_project
    set_params(proj, {"model": {**SMALL_MODEL}, "train": {**FIT_TRAIN, "loss": loss}})
    out = f"models/{loss}.pt"
    call("stages.train", "--model", out, "--live", f"live_{loss}", "--checkpoint", f"ckpt_{loss}.pt", cwd=proj)
    model, meta = load_model(proj / out)
    assert meta["loss"] == loss and meta["classes"] == [1, 2, 3, 4, 5]
    rows = read_split(proj / "data/split", "test", proj / "data/raw/images")
    loader = split_loader(rows, proj / "data/raw/images", meta, 64, 0, torch.device("cpu"))
    probs, _ = timed_predictions(model, meta, loader, torch.device("cpu"), None, "none")
    accuracy = sum(meta["classes"][p.argmax()] == label for p, (_, label) in zip(probs, rows)) / len(rows)
    assert accuracy > 0.35, (loss, accuracy)  # chance is 0.2 on 5 balanced classes
    best = json.loads((proj / f"live_{loss}" / "metrics.json").read_text())
    assert best["best/val_acc"] > 0.35
    # every loss verifies: evaluate calibrates it to honest class probabilities (regression: a noise model),
    # count sets and an accept threshold, and the predictor answers with them
    paths = {"--params": "params.yaml", "--trained": out, "--model": f"models/{loss}-calibrated.pt"}
    paths |= {"--split": "data/split", "--images": "data/raw/images", "--shards": "data/shards"}
    paths |= {"--predictions": f"pred_{loss}.csv", "--live": f"eval_{loss}", "--headline": f"headline_{loss}.json"}
    evaluate.main([arg for key, path in paths.items() for arg in (key, str(proj / path))])
    printed = capsys.readouterr().out
    assert ("noise sd" if loss == "regression" else "temperature") in printed, printed
    assert json.loads((proj / f"headline_{loss}.json").read_text())["test_coverage"] > 0
    _, calibrated = load_model(proj / f"models/{loss}-calibrated.pt")
    calibration = calibrated["calibration"]
    assert calibration["method"] == ("noise" if loss == "regression" else "temperature") and calibration["scale"] > 0
    predictor = Predictor(proj / f"models/{loss}-calibrated.pt", "cpu")
    res = predictor.predict_bytes([(proj / "data/raw/images" / f"{rows[0][0]}.jpg").read_bytes()])[0]
    assert abs(sum(res["probabilities"].values()) - 1) < 1e-3 and res["count"] in res["count_set"]
    assert predictor.verdict(res, rows[0][1])["verdict"] in ("accept", "review")


@pytest.mark.slow
def test_metadata_targets_fit_generated_bins_better_than_chance(fit_project):
    """train.aux_weight through the real train stage: the second head learns from data/raw/metadata
    beside the count, the checkpoint keeps it, and the model file (without it) counts better than chance."""
    proj = fit_project
    set_params(proj, {"model": {**SMALL_MODEL}, "train": {**FIT_TRAIN, "loss": "ce", "aux_weight": 1.0}})
    call("stages.train", "--model", "models/aux.pt", "--live", "live_aux", "--checkpoint", "ckpt_aux.pt", cwd=proj)
    head = torch.load(proj / "ckpt_aux.pt", weights_only=False)["model"]["aux.weight"]
    seed_everything(42)  # the run's initial weights, built as the train stage builds them
    init = model_from_params(check_model(SMALL_MODEL), 5, aux_outputs=7).aux.weight.detach()
    assert head.shape == init.shape == (7, 256)
    assert (head - init).abs().mean() > 0.1 * init.abs().mean()  # it got gradients: it learned
    model, meta = load_model(proj / "models/aux.pt")
    assert model.aux is None
    rows = read_split(proj / "data/split", "test", proj / "data/raw/images")
    loader = split_loader(rows, proj / "data/raw/images", meta, 64, 0, torch.device("cpu"))
    probs, _ = timed_predictions(model, meta, loader, torch.device("cpu"), None, "none")
    assert probs.shape == (len(rows), 5)
    accuracy = sum(meta["classes"][p.argmax()] == label for p, (_, label) in zip(probs, rows)) / len(rows)
    assert accuracy > 0.35, accuracy  # chance is 0.2 on 5 balanced classes
