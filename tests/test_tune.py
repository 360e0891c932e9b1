"""`python -m binsight.tune`: Optuna trials as real DVC experiments, a leaderboard, best params."""
import csv
import io
import re
import sys

import pytest
import yaml

from binsight.errors import ConfigError
from binsight.params import load_params
from binsight.tune import check_tune, cli_value, lookup
from binsight.testing.project import dvc, git_commit, run, set_params
from binsight.testing.tuning import frozen_project  # noqa: F401 (fixture)


def test_the_default_search_space_is_the_seed_tuners():
    tune_params = check_tune(load_params()["tune"])
    assert tune_params["space"] == {"lr": {"low": 0.001, "high": 0.1, "log": True},
                           "batch_size": [16, 32, 64, 128, 256, 512],
                           "epochs": {"low": 10, "high": 20}}
    assert tune_params["metric"] == "best/val_acc" and tune_params["direction"] == "maximize"


@pytest.mark.parametrize("override,expected", [
    ({"metric": "test/accuracy"}, "never a test metric"),
    ({"direction": "up"}, "maximize or minimize"),
    ({"space": {}}, "tune.space={} is not allowed"),
    ({"space": {"train": {"lr": {"low": 0.1, "high": 0.01}}}}, "tune.space.train.lr"),
    ({"space": {"train": {"lr": {"low": 0, "high": 0.1, "log": True}}}}, "log: true only with low > 0"),
    ({"space": {"train": {"batch_size": []}}}, "tune.space.train.batch_size"),
    ({"space": {"train": {"epochs": 12}}}, "tune.space.train.epochs=12 is not allowed"),
])
def test_bad_tune_sections_are_named(override, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check_tune({**load_params()["tune"], **override})


def test_values_reach_params_yaml_as_plain_numbers():
    assert cli_value(0.012345678) == "0.01235" and cli_value(1.5e-05) == "0.000015"
    assert yaml.safe_load(cli_value(1.5e-05)) == 1.5e-05
    assert cli_value(64) == "64" and cli_value(True) == "true"
    metrics = {"best/val_acc": 0.5, "val": {"acc": 0.25}}
    assert lookup(metrics, "best/val_acc") == 0.5 and lookup(metrics, "val/acc") == 0.25
    assert lookup(metrics, "val/loss") is None


def test_three_trials_are_three_dvc_experiments_then_a_continued_study_applies_the_best(frozen_project, clone_project):
    project = clone_project(frozen_project)
    set_params(project, {"tune": {"space": {"lr": {"low": 0.001, "high": 0.1, "log": True},
                                            "batch_size": [16, 32], "epochs": {"low": 1, "high": 2}}}})
    git_commit(project, "small search space")
    out = run([sys.executable, "-m", "binsight.tune", "--trials", "3", "--study", "t"], project).stdout
    for n in (1, 2, 3):
        assert re.search(rf"tune: trial {n}/3 t-trial-{n} best/val_acc [0-9.]+ in \S+ \| best [0-9.]+ "
                         rf"\(t-trial-\d\) \| ETA \S+", out), out
    assert "leaderboard of study 't' (3 finished of 3 trials)" in out, out

    rows = list(csv.DictReader(io.StringIO(dvc(project, "exp", "show", "--csv", "--no-pager", "--sort-by", "val_acc").stdout)))
    exps = {r["Experiment"]: r for r in rows if r["Experiment"]}
    assert set(exps) == {"t-trial-1", "t-trial-2", "t-trial-3"}, exps.keys()
    for r in exps.values():
        assert r["batch_size"] in ("16", "32") and r["epochs"] in ("1", "2"), r
        assert 0.001 <= float(r["lr"]) <= 0.1 and 0 <= float(r["val_acc"]) <= 1, r

    best = yaml.safe_load((project / "tune/best_params.yaml").read_text())
    assert best["value"] == max(float(r["val_acc"]) for r in exps.values())
    assert float(exps[best["experiment"]]["val_acc"]) == best["value"]
    assert best["apply"] == f"dvc exp apply {best['experiment']}"
    assert f"apply it with `{best['apply']}`" in out
    leaderboard = list(csv.DictReader(open(project / "tune/t.csv")))
    assert [r["experiment"] for r in leaderboard][0] == best["experiment"] and len(leaderboard) == 3

    # Running it again continues the study (new draws, not a replay) and --apply takes the best.
    again = run([sys.executable, "-m", "binsight.tune", "--trials", "1", "--study", "t", "--apply"], project).stdout
    assert "(continuing after 3 earlier trials)" in again and "t-trial-4" in again, again
    rows = list(csv.DictReader(io.StringIO(dvc(project, "exp", "show", "--csv", "--no-pager").stdout)))
    exps = {r["Experiment"]: r for r in rows if r["Experiment"]}
    assert exps["t-trial-4"]["lr"] not in {exps[f"t-trial-{k}"]["lr"] for k in (1, 2, 3)}, exps
    best = yaml.safe_load((project / "tune/best_params.yaml").read_text())
    assert f"tune: applied {best['experiment']}" in again, again
    applied = yaml.safe_load((project / "params.yaml").read_text())
    assert {k: applied[k] for k in ("lr", "batch_size", "epochs")} == best["params"]
    assert str(applied["lr"]) == exps[best["experiment"]]["lr"]
