"""The featurize stage and train's cached-embedding path: same head as on images, skipped by DVC
when only lr or batch_size change, and never trusted when stale."""

import csv
import json

import numpy as np
import pytest
import torch

from binsight.data.split_files import read_split
from binsight.errors import ConfigError
from binsight.model.counting_model import model_from_params
from binsight.params import check_model, load_params, train_section
from binsight.train.embeddings import cached_features
from binsight.train.loops import seed_everything
from stages import featurize
from tests.support.dataset import write_dataset
from tests.support.project import call, clone, dvc, git_commit, kill_when_written, make_project, python_m, set_params
from tests.support.tuning import FROZEN_MODEL, FROZEN_TRAIN


@pytest.fixture
def project(tmp_path):
    proj = make_project(tmp_path / "proj", commit=False, params={"model": FROZEN_MODEL, "train": FROZEN_TRAIN})
    write_dataset(proj, n_per_class=8)
    git_commit(proj, "small frozen project")
    return proj


def params_of(project):
    params = load_params(project / "params.yaml")
    return check_model(params["model"]), train_section(params)


def curve(live, name):
    column = name.rsplit("/", 1)[-1]
    return [float(r[column]) for r in csv.DictReader(open(live / f"plots/metrics/{name}.tsv"), delimiter="\t")]


@pytest.mark.slow
def test_head_on_cached_embeddings_matches_the_image_path(project):
    out = call("stages.featurize", cwd=project).stdout
    assert "256-d resnet18 features at 64 px" in out, out
    meta = json.loads((project / "data/features/meta.json").read_text())
    n_train = len(read_split(project / "data/split", "train", project / "data/raw/images"))
    assert meta["cached"] and meta["feature_dim"] == 256 and meta["splits"]["train"] == n_train, meta
    assert np.load(project / "data/features/train.npy").shape == (n_train, 256)

    logs, models = {}, {}
    for mode in ("auto", "never"):  # same seed, same head init, same batches; only the input differs
        set_params(project, {"train": {"use_features": mode}})
        logs[mode] = call(
            "stages.train",
            "--live",
            f"live_{mode}",
            "--model",
            f"{mode}.pt",
            "--checkpoint",
            f"ckpt_{mode}.pt",
            cwd=project,
        ).stdout
        models[mode] = torch.load(project / f"{mode}.pt", weights_only=False)["state_dict"]
    assert "train: head only on cached 256-d features" in logs["auto"], logs["auto"]
    assert "train: images; no cached features: train.use_features is never" in logs["never"], logs["never"]
    assert curve(project / "live_auto", "val/acc") == curve(project / "live_never", "val/acc")
    for name in ("train/loss", "val/loss"):  # the same trajectory, up to float noise in the backbone
        assert curve(project / "live_auto", name) == pytest.approx(curve(project / "live_never", name), rel=1e-4)
    # The saved model is whole (pretrained-or-initial backbone + trained head), as on the image path.
    assert models["auto"].keys() == models["never"].keys()
    for key in models["auto"]:
        assert torch.allclose(models["auto"][key].float(), models["never"][key].float(), atol=1e-4), key


def test_not_cacheable_writes_only_a_meta_saying_why(project, capsys):
    set_params(project, {"model": {"freeze_backbone": False}})
    featurize.main(
        [
            "--params",
            str(project / "params.yaml"),
            "--split",
            str(project / "data/split"),
            "--images",
            str(project / "data/raw/images"),
            "--out",
            str(project / "data/features"),
        ]
    )
    assert "nothing to cache (model.freeze_backbone is false" in capsys.readouterr().out
    assert [p.name for p in (project / "data/features").iterdir()] == ["meta.json"]
    meta = json.loads((project / "data/features/meta.json").read_text())
    assert meta["cached"] is False and "fine-tuning" in meta["reason"]


@pytest.mark.slow
def test_stale_or_mismatched_features_are_never_used(project):
    call("stages.featurize", cwd=project)
    model_params, train_params = params_of(project)
    folder = project / "data/features"
    rows = {s: read_split(project / "data/split", s, project / "data/raw/images") for s in ("train", "val")}
    classes = [1, 2, 3, 4, 5]

    def backbone(seed=train_params.seed):
        seed_everything(seed)
        return model_from_params(model_params, 5).backbone

    got, why = cached_features(folder, model_params, train_params, rows, classes, backbone())
    assert (
        got is not None
        and got["train"][0].shape == (len(rows["train"]), 256)
        and got["val"][1].tolist() == [classes.index(label) for _, label in rows["val"]]
    ), why
    cases = [
        (
            (model_params, train_params.replace(image_size=96), rows, backbone()),
            "not {'arch': 'resnet18', 'weights': 'none', 'image_size': 96",
        ),
        ((model_params, train_params, rows, backbone(seed=7)), "other backbone weights"),
        (
            (model_params, train_params, {**rows, "train": rows["train"][1:]}, backbone()),
            "does not list the bins of the train split",
        ),
        ((model_params, train_params.replace(augment=True), rows, backbone()), "train.augment is true"),
        ((model_params, train_params.replace(use_features="never"), rows, backbone()), "train.use_features is never"),
        ((model_params, train_params, rows, backbone()), "no "),  # folder missing
    ]
    for i, ((m, t, r, b), expected) in enumerate(cases):
        target = folder if i < len(cases) - 1 else project / "nowhere"
        got, why = cached_features(target, m, t, r, classes, b)
        assert got is None and expected in why, (expected, why)


def test_use_features_takes_auto_or_never():
    with pytest.raises(ConfigError, match="train.use_features='always' is not allowed: expected auto or never"):
        params = load_params()
        train_section({**params, "train": {**params["train"], "use_features": "always"}})


@pytest.mark.slow
def test_lr_or_batch_size_change_leaves_featurize_up_to_date_but_image_size_does_not(frozen_project, clone_project):
    """What `dvc status` says would rerun. That the runs then skip featurize and train the head on
    the cached features, tests/test_queue.py checks in each queued run's log: they change lr and
    batch_size."""
    project = clone_project(frozen_project)
    assert json.loads((project / "data/features/meta.json").read_text())["cached"] is True
    set_params(project, {"train": {"lr": 0.003, "batch_size": 8}})
    status = dvc(project, "status").stdout
    assert "train:" in status and "featurize:" not in status, status
    set_params(project, {"train": {"image_size": 48}})
    assert "featurize:" in dvc(project, "status").stdout


@pytest.mark.e2e
def test_head_only_checkpoint_every_n_epochs_resumes_to_the_uninterrupted_result(tmp_path):
    """On cached features the checkpoint holds the head alone (the frozen backbone is rebuilt from
    params), it is written every `checkpoint_every` epochs, and kill -9 + resume from it ends with
    the uninterrupted run's exact weights."""
    train_params = {**FROZEN_TRAIN, "epochs": 41, "checkpoint_every": 2, "patience": 100}
    proj = make_project(tmp_path / "straight", commit=False, params={"model": FROZEN_MODEL, "train": train_params})
    write_dataset(proj, n_per_class=8)
    git_commit(proj, "small frozen project")
    call("stages.featurize", cwd=proj)
    runs = {"straight": proj, "killed": clone(proj, tmp_path / "killed")}  # the same features, computed once
    call("stages.train", cwd=runs["straight"])
    whole = torch.load(runs["straight"] / "models/trained.pt", weights_only=False)["state_dict"]
    ckpt = torch.load(runs["straight"] / "models/checkpoint.pt", weights_only=False)
    assert ckpt["trained"] == "head" and ckpt["epoch"] == 40
    assert set(ckpt["model"]) == {k[len("head.") :] for k in whole if k.startswith("head.")}
    assert (runs["straight"] / "models/checkpoint.pt").stat().st_size * 20 < (
        runs["straight"] / "models/trained.pt"
    ).stat().st_size

    proj, path = runs["killed"], runs["killed"] / "models/checkpoint.pt"
    kill_when_written(python_m("stages.train"), proj, path)
    saved = torch.load(path, weights_only=False)
    assert not saved["completed"], "training finished before the kill"
    assert (saved["epoch"] + 1) % 2 == 0, saved["epoch"]  # only every second epoch is written
    out = call("stages.train", cwd=proj).stdout
    assert f"resuming at epoch {saved['epoch'] + 2}/41" in out, out
    resumed = torch.load(proj / "models/trained.pt", weights_only=False)["state_dict"]
    assert resumed.keys() == whole.keys()
    for key, tensor in whole.items():
        assert torch.equal(tensor, resumed[key]), key
