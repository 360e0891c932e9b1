"""`python -m binsight.tune.bayes_search`: Optuna trials as real DVC experiments, a leaderboard, best params."""

import csv
import hashlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml

from binsight.errors import ConfigError
from binsight.params import load_params
from binsight.tune.bayes_search import check_tune, cli_value, lookup
from tests.support.bucket import admin_client
from tests.support.project import call, clone, dvc, env, experiments, git_commit, python_m, run, set_params

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def test_the_default_search_space_is_the_seed_tuners():
    tune_params = check_tune(load_params()["tune"])
    assert tune_params.space == {
        "lr": {"low": 0.001, "high": 0.1, "log": True},
        "batch_size": [16, 32, 64, 128, 256, 512],
        "epochs": {"low": 10, "high": 20},
    }
    assert tune_params.metric == "best/val_acc" and tune_params.direction == "maximize"


@pytest.mark.parametrize(
    "override,expected",
    [
        ({"metric": "test/accuracy"}, "never a test metric"),
        ({"direction": "up"}, "maximize or minimize"),
        ({"space": {}}, "tune.space={} is not allowed"),
        ({"space": {"train": {"lr": {"low": 0.1, "high": 0.01}}}}, "tune.space.train.lr"),
        ({"space": {"train": {"lr": {"low": 0, "high": 0.1, "log": True}}}}, "log: true only with low > 0"),
        ({"space": {"train": {"batch_size": []}}}, "tune.space.train.batch_size"),
        ({"space": {"train": {"epochs": 12}}}, "tune.space.train.epochs=12 is not allowed"),
        ({"pruner": "asha"}, "tune.pruner='asha' is not allowed: expected none | median | hyperband"),
        ({"direction": "minimize"}, "none when tune.direction is minimize"),
        ({"prune_warmup_epochs": -1}, "tune.prune_warmup_epochs=-1"),
    ],
)
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


def tune(project, *args, **kwargs):
    return run(python_m("binsight.tune.bayes_search", *args), project, **kwargs)


def study_of(project, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{project / 'tune' / f'{name}.db'}")


def workspace_state(project):
    """git status and the bytes of params and every output a trial would write in the workspace."""
    files = [
        "params.yaml",
        "dvc.lock",
        "metrics.json",
        "models/model.pt",
        "dvclive/train/metrics.json",
        "dvclive/evaluate/metrics.json",
        "data/predictions/test.csv",
    ]
    status = run(["git", "status", "--porcelain"], project).stdout
    return status, {f: hashlib.sha256((project / f).read_bytes()).hexdigest() for f in files}


def small_space(project, epochs=3, **tune_section):
    """Search lr and batch_size only, at a fixed number of epochs."""
    params = set_params(project, {"epochs": epochs, "tune": tune_section})
    params["tune"]["space"] = {"lr": {"low": 0.001, "high": 0.1, "log": True}, "batch_size": [16, 32]}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git_commit(project, "small search space")


def machine(frozen_project, path, origin, s3_url):
    """A clone of the frozen project with the small search space, the S3 DVC remote and the git remote."""
    project = clone(frozen_project, path)
    small_space(project, pruner="none")  # every trial runs to the end (still reporting each epoch)
    dvc(project, "remote", "add", "-d", "store", "s3://binsight-exps/store")
    dvc(project, "remote", "modify", "store", "endpointurl", s3_url)
    git_commit(project, "shared DVC remote")
    run(["git", "remote", "add", "origin", str(origin)], project)
    return project


@pytest.mark.e2e
@pytest.mark.first
def test_two_workers_then_a_second_machine_share_one_study_and_the_best_is_applied(frozen_project, tmp_path, s3_server):
    """README's recipe for several machines, on one study in a shared database: machine A runs two
    trials as two worker processes at once (two writers of the one SQLite file) and pushes its
    experiments (git refs to the git remote, outputs to the S3 DVC remote); machine B, a clone of the
    same commit, pulls them, continues the study (new draws, not a replay) and `--apply`s the best of
    all three, whichever machine ran it; A's trained outputs come back from the S3 remote."""
    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", str(origin)], tmp_path)
    admin_client(s3_server.url).create_bucket(Bucket="binsight-exps")
    a = machine(frozen_project, tmp_path / "a", origin, s3_server.url)
    run(["git", "push", "-q", "origin", "main"], a)
    b = clone(a, tmp_path / "b")  # the same commit and data on machine B
    db = f"sqlite:///{tmp_path / 'shared.db'}"

    before = workspace_state(a)
    out = tune(a, "--storage", db, "--study", "w", "--trials", "2", "--workers", "2").stdout
    threads = max(1, (os.cpu_count() or 1) // 2)  # tune runs pinned to the CPU here: its cores, split in two
    assert f"2 workers (CPU, {threads} thread{'s' if threads > 1 else ''} each)" in out, out
    assert "(2 finished of 2 trials)" in out, out
    assert {f"(worker {k})" for k in (1, 2)} <= set(re.findall(r"\(worker \d\)", out)), out
    for n in (1, 2):  # progress as trials finish, in whichever order
        assert re.search(
            rf"tune: trial {n}/2 w-trial-\d best/val_acc [0-9.]+ in \S+ \| best [0-9.]+ "
            rf"\(w-trial-\d\) \| ETA \S+",
            out,
        ), out
    exps = experiments(a)
    assert set(exps) == {"w-trial-1", "w-trial-2"}, exps.keys()
    assert len({(r["lr"], r["batch_size"]) for r in exps.values()}) == 2  # two distinct points
    for r in exps.values():
        assert r["batch_size"] in ("16", "32") and 0.001 <= float(r["lr"]) <= 0.1 and r["epochs"] == "3", r
    assert workspace_state(a) == before
    # One SQLite file, written by the tuner and by every trial's training process (its per-epoch val acc).
    study = optuna.load_study(study_name="w", storage=db)
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE and sorted(t.intermediate_values) == [0, 1, 2], t
        assert t.value == pytest.approx(float(exps[t.user_attrs["experiment"]]["val_acc"]), abs=1e-4)
    best = yaml.safe_load((a / "tune/best_params.yaml").read_text())
    assert best["value"] == pytest.approx(max(float(r["val_acc"]) for r in exps.values()), abs=1e-4)
    assert float(exps[best["experiment"]]["val_acc"]) == pytest.approx(best["value"], abs=1e-4)
    assert best["apply"] == f"dvc exp apply {best['experiment']}" and f"apply it with `{best['apply']}`" in out
    leaderboard = list(csv.DictReader(open(a / "tune/w.csv")))
    assert leaderboard[0]["experiment"] == best["experiment"] and len(leaderboard) == 2
    dvc(a, "exp", "push", "origin", "-A", **CREDS)

    dvc(b, "exp", "pull", "origin", "-A", **CREDS)
    assert set(experiments(b)) == set(exps)
    again = tune(b, "--storage", db, "--study", "w", "--trials", "1", "--apply", **CREDS).stdout
    assert "(continuing after 2 earlier trials)" in again and "w-trial-3" in again, again
    exps = experiments(b)
    assert set(exps) == {"w-trial-1", "w-trial-2", "w-trial-3"}, exps.keys()
    assert exps["w-trial-3"]["lr"] not in {exps[f"w-trial-{k}"]["lr"] for k in (1, 2)}, exps
    best = yaml.safe_load((b / "tune/best_params.yaml").read_text())
    assert best["value"] == pytest.approx(max(float(r["val_acc"]) for r in exps.values()), abs=1e-4)
    assert f"tune: applied {best['experiment']}" in again, again
    applied = yaml.safe_load((b / "params.yaml").read_text())
    assert {k: applied[k] for k in ("lr", "batch_size")} == best["params"]
    assert str(applied["lr"]) == exps[best["experiment"]]["lr"]
    dvc(b, "exp", "apply", "w-trial-1", **CREDS)  # one of A's, whichever was best: its model from the S3 remote
    status = dvc(b, "status").stdout  # matches dvc.lock; only the uncached HTML report is not restored
    assert "model.pt" not in status and "dvclive" not in status and "metrics.json" not in status, status


def train_processes(storage_path):
    """pids of the stages.train processes started for the study stored at `storage_path`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except (OSError, ValueError):
            continue
        if b"stages.train" in cmd and str(storage_path).encode() in environ:
            found.append(int(proc.name))
    return found


@pytest.mark.e2e
@pytest.mark.first
def test_a_worker_killed_mid_trial_leaves_a_failed_trial_and_the_rest_complete(frozen_project, clone_project):
    project = clone_project(frozen_project)
    small_space(project, epochs=12, pruner="none")  # long enough to be killed mid-way
    proc = subprocess.Popen(
        python_m("binsight.tune.bayes_search", "--trials", "2", "--workers", "2", "--study", "k"),
        cwd=project,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline, killed = time.time() + 300, None
    while killed is None and time.time() < deadline and proc.poll() is None:
        pids = train_processes(project / "tune" / "k.db")
        if pids:
            time.sleep(1)  # into its epochs
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.1)
    out, _ = proc.communicate(timeout=600)
    assert killed and proc.returncode == 0, out
    states = sorted(t.state.name for t in study_of(project, "k").trials)
    assert states == ["COMPLETE", "FAIL"], out
    failed = next(t for t in study_of(project, "k").trials if t.state.name == "FAIL")
    assert failed.user_attrs["experiment"] not in experiments(project)
    board = {r["experiment"]: r for r in csv.DictReader(open(project / "tune/k.csv"))}
    assert board[failed.user_attrs["experiment"]]["state"] == "failed" and len(board) == 2, board


@pytest.mark.e2e
@pytest.mark.first
def test_the_pruner_stops_a_trial_whose_lr_makes_it_diverge(frozen_project, clone_project):
    project = clone_project(frozen_project)
    small_space(project, epochs=6, pruner="median", prune_startup_trials=1, prune_warmup_epochs=2)
    (project / "tune").mkdir()
    study = optuna.create_study(study_name="p", storage=f"sqlite:///{project / 'tune/p.db'}", direction="maximize")
    study.enqueue_trial({"lr": 0.003, "batch_size": 16})  # learns
    study.enqueue_trial({"lr": 30.0, "batch_size": 16})  # diverges: the head's logits blow up, val predictions collapse
    out = tune(project, "--trials", "2", "--study", "p").stdout
    good, bad = study_of(project, "p").trials
    assert good.state.name == "COMPLETE" and good.params["lr"] == 0.003, out
    assert bad.state.name == "PRUNED" and bad.user_attrs["pruned_at_epoch"] == 3, out
    assert max(bad.intermediate_values) == 2  # reported epochs 1..3, then stopped
    assert "p-trial-2 pruned at epoch 3" in out, out
    assert "p-trial-2" not in experiments(project) and "p-trial-1" in experiments(project)
    board = {r["experiment"]: r["state"] for r in csv.DictReader(open(project / "tune/p.csv"))}
    assert board == {"p-trial-1": "complete", "p-trial-2": "pruned at epoch 3"}


def test_workers_get_gpus_round_robin_or_an_even_share_of_the_cpu():
    from binsight.tune.trial_runs import visible_gpus, worker_env

    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,5"}) == ["2", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == [] and visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert [worker_env(k, 3, ["2", "5"], 16)["CUDA_VISIBLE_DEVICES"] for k in range(3)] == ["2", "5", "2"]
    cpu = [worker_env(k, 2, [], 8) for k in range(2)]
    assert all(e == {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"} for e in cpu)
    assert worker_env(0, 4, [], 2)["OMP_NUM_THREADS"] == "1"  # never zero threads


@pytest.mark.slow
def test_a_storage_that_cannot_be_opened_is_a_one_line_error(tmp_path):
    from tests.support.project import make_project

    project = make_project(tmp_path / "proj")
    for url, reason in (
        ("nonsense://x", "Can't load plugin"),
        (f"sqlite:///{tmp_path}/no/such/dir/t.db", "unable to open"),
    ):
        proc = call("binsight.tune.bayes_search", "--trials", "1", "--storage", url, cwd=project, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"error: --storage {url}: cannot open it") and reason in lines[0], lines
