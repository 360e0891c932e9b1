"""The whole pipeline through the real `dvc repro` on generated bins served by a local S3 server."""

import csv
import json
import re

import pytest
import yaml

from tests.support import browser
from tests.support.dataset import SMALL_TRAIN
from tests.support.project import REPO, call, dvc, experiments, in_terminal, run, set_params, stages_run

# one worker builds the shared trained project and reads it test after test, while the others start elsewhere;
# a minute or more in all, so handed out first
pytestmark = [pytest.mark.xdist_group("pipeline"), pytest.mark.first]


def load_json(path):
    return json.loads(path.read_text())


@pytest.mark.e2e
def test_model_counts_well_above_chance(trained_project):
    metrics = load_json(trained_project / "dvclive/evaluate/metrics.json")["test"]
    assert metrics["accuracy"] > 0.5, metrics  # chance is 0.2 on five counts
    assert metrics["off_by_one_accuracy"] >= metrics["accuracy"]
    test_rows = list(csv.DictReader(open(trained_project / "data/split/test.csv")))
    assert metrics["n"] == len(test_rows)
    predictions = list(csv.DictReader(open(trained_project / "data/predictions/test.csv")))
    assert [p["id"] for p in predictions] == [r["id"] for r in test_rows]
    assert len({p["pred"] for p in predictions}) > 1, "every bin got the same count (the notebook's bug)"
    hits = sum(p["pred"] == p["label"] for p in predictions) / len(predictions)
    assert abs(hits - metrics["accuracy"]) < 1e-9


@pytest.mark.e2e
def test_confusion_matrix_sums_to_the_test_size(trained_project):
    rows = load_json(trained_project / "dvclive/evaluate/plots/sklearn/confusion_matrix.json")
    rows = rows if isinstance(rows, list) else next(iter(rows.values()))
    test_size = sum(1 for _ in open(trained_project / "data/split/test.csv")) - 1
    assert len(rows) == test_size
    assert {r["actual"] for r in rows} == {"1", "2", "3", "4", "5"}
    per_class = load_json(trained_project / "dvclive/evaluate/plots/custom/per_class_accuracy.json")
    per_class = per_class if isinstance(per_class, list) else next(iter(per_class.values()))
    assert [p["count"] for p in per_class] == ["1", "2", "3", "4", "5"]
    images = list((trained_project / "dvclive/evaluate/plots/images/misclassified").glob("*_true*_pred*.jpg"))
    wrong = sum(r["actual"] != r["predicted"] for r in rows)
    assert len(images) == min(wrong, 12)


@pytest.mark.e2e
def test_training_curves_and_params_are_logged(trained_project):
    live = trained_project / "dvclive/train"
    for name in ("train/loss", "train/acc", "val/loss", "val/acc", "train/lr", "train/images_per_s"):
        rows = list(csv.DictReader(open(live / f"plots/metrics/{name}.tsv"), delimiter="\t"))
        assert [int(r["step"]) for r in rows] == list(range(1, SMALL_TRAIN["epochs"] + 1)), name
    logged = (live / "params.yaml").read_text()
    assert "resnet18" in logged and "lr: 0.001" in logged


@pytest.mark.e2e
def test_dvc_metrics_exp_and_plots_show_the_results(trained_project, clone_project, tmp_path):
    project = clone_project(trained_project)  # dvc writes its temp files there: never in the shared one
    headline = load_json(trained_project / "metrics.json")
    evaluated = load_json(trained_project / "dvclive/evaluate/metrics.json")
    assert headline == {
        "test_acc": evaluated["test"]["accuracy"],
        "val_acc": load_json(trained_project / "dvclive/train/metrics.json")["best/val_acc"],
        "test_ece": evaluated["test"]["calibration"]["after"]["ece"],
        "test_coverage": evaluated["test"]["count_sets"]["coverage"],
    }
    shown = dvc(project, "metrics", "show").stdout
    assert "test_acc" in shown and "val_acc" in shown and "n_bins" not in shown, shown
    # the rest is one command away
    shown = dvc(project, "metrics", "show", "dvclive/evaluate/metrics.json", "dvclive/train/metrics.json").stdout
    for key in ("balanced_accuracy", "macro_f1", "rmse", "off_by_one_accuracy", "best/val_acc"):
        assert key in shown, shown
    exp = dvc(project, "exp", "show", "--csv", "--no-pager").stdout
    header = exp.splitlines()[0].split(",")
    assert {"test_acc", "test_ece", "test_coverage", "lr"} <= set(header) and "n_bins" not in header, header
    dvc(project, "plots", "show", "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "confusion" in html.lower() and "per_class_accuracy" in html
    assert "reliability" in html and "verify_tradeoff" in html


@pytest.mark.e2e
@pytest.mark.skipif(browser.find_chromium() is None, reason="chromium is not installed (`make test` installs it)")
def test_dvc_plots_show_draws_every_chart_offline(trained_project, clone_project, tmp_path):
    """DVC's own page loads vega from a CDN, so offline its charts stay blank; the project's template
    (.dvc/plots.html) carries vega inlined. Loaded in headless Chromium, every chart is drawn."""
    project = clone_project(trained_project)
    dvc(project, "plots", "show", "-o", str(tmp_path / "plots"))
    page = tmp_path / "plots" / "index.html"
    html = page.read_text()
    charts = html.count("vegaEmbed(")
    assert charts >= 10 and "cdn.jsdelivr.net" not in html and "<script src=" not in html
    drawn = browser.load(page).dom.count('class="marks"')  # vega-embed's canvas, once per chart drawn
    assert drawn == charts, (drawn, charts)


@pytest.mark.e2e
def test_user_commands_set_the_notebooks_hyperparameters_as_written_and_rerun_only_what_they_change(
    trained_project, clone_project
):
    """`dvc repro` again does nothing. `dvc exp run -S lr=0.01 -S batch_size=... -S epochs=...`: the
    three tuned hyperparameters are top-level params, only train, evaluate and report rerun,
    and training uses them (dvclive logs the train section it ran with). Then `dvc exp show`, as a
    120-column terminal shows it, has them beside the headline metrics; new verify targets recalibrate
    without retraining."""
    import torch

    project = clone_project(trained_project)
    again = dvc(project, "repro").stdout
    assert "Running stage" not in again, again
    ran = dvc(
        project, "exp", "run", "-n", "as-written-lr-0.01", "-S", "lr=0.01", "-S", "batch_size=8", "-S", "epochs=1"
    )
    out = ran.stdout
    assert stages_run(out) == ["train", "evaluate", "report"], out  # the report shows the new metrics
    # after `make repro` every output has its hash in dvc.lock, so DVC's restore before an experiment is quiet
    # (before any run it warns "No file hash info found" once per output: README, "Experiments")
    assert "No file hash info" not in out + ran.stderr and "WARNING" not in ran.stderr, ran.stderr
    logged = yaml.safe_load((project / "dvclive/train/params.yaml").read_text())
    assert logged["train"]["lr"] == 0.01 and logged["train"]["batch_size"] == 8 and logged["train"]["epochs"] == 1
    exps = experiments(project)
    mine = exps.get("as-written-lr-0.01")
    assert mine and float(mine["lr"]) == 0.01 and mine["epochs"] == "1", exps

    screen = in_terminal(["dvc", "exp", "show"], project, columns=120)
    header = next(line for line in screen if "Experiment" in line)
    columns = [
        "Experiment",
        "Created",
        "test_acc",
        "val_acc",
        "test_ece",
        "test_coverage",
        "lr",
        "batch_size",
        "epochs",
    ]
    # the pager's first screen ends inside `epochs`; the arrow keys scroll on
    assert header.split()[:8] == columns[:8], screen
    row = next(line for line in screen if "[as-written-lr-0.01]" in line).split("]", 1)[1].split()
    created = next(k for k, token in enumerate(row) if token in ("AM", "PM"))  # "06:20 PM"
    metrics = load_json(project / "metrics.json")
    shown = [metrics[k] for k in ("test_acc", "val_acc", "test_ece", "test_coverage")] + [0.01, 8, 1]
    assert [float(v) for v in row[created + 1 : created + 7]] == pytest.approx(shown[:6], abs=1e-4), screen
    # Without a pager (piped, in CI, `--no-pager`) DVC fits all ~120 columns into the width and every cell
    # reads "…": `make exps` (README) keeps the metrics and the params that differ, every cell whole.
    hidden = re.search(r"^EXP_HIDDEN := (.*)$", (REPO / "Makefile").read_text(), re.M)[1].replace("$$", "$")
    plain = in_terminal(["dvc", "exp", "show", "--no-pager", "--only-changed", "--drop", hidden], project, columns=120)
    assert not any("…" in line for line in plain), "\n".join(plain)
    header = next(line for line in plain if "Experiment" in line)
    assert header.split() == ["Experiment", *columns[2:]], plain
    row = next(line for line in plain if "[as-written-lr-0.01]" in line).split("]", 1)[1].split()
    assert [float(v) for v in row] == pytest.approx(shown, abs=1e-4)
    # What `dvc status` says a change would rerun: training, never the download or the split.
    set_params(project, {"lr": 0.002})
    status = dvc(project, "status").stdout
    assert "train" in status and "fetch" not in status.replace("data/fetch", "") and "split:" not in status, status

    # New decision targets are fitted on val by evaluate: DVC marks evaluate changed, never train, and the
    # model file carries the new thresholds beside the same temperature. The stage runs in this process (it
    # has torch loaded already); what `dvc repro` would rerun is what `dvc status` says, before and after.
    before = torch.load(project / "models/model.pt", weights_only=False)["calibration"]
    set_params(project, {"lr": 0.01, "verify": {"max_false_accept": 0.01, "coverage": 0.95}})
    status = dvc(project, "status").stdout
    assert "evaluate:" in status and re.search(r"modified: +verify", status) and "train:" not in status, status
    call("stages.evaluate", cwd=project)
    status = dvc(project, "status").stdout  # evaluate's new outputs: the report is next, training still not
    assert "report:" in status and "train:" not in status, status
    after = torch.load(project / "models/model.pt", weights_only=False)["calibration"]
    assert after["scale"] == before["scale"] and after["max_false_accept"] == 0.01 and after["coverage"] == 0.95
    assert after["accept_threshold"] >= before["accept_threshold"] and after["set_threshold"] >= before["set_threshold"]
    metrics = load_json(project / "dvclive/evaluate/metrics.json")["test"]
    assert metrics["verify"]["threshold"] == after["accept_threshold"]
    assert metrics["count_sets"]["mean_set_size"] >= 1


def test_a_hyperparameter_set_twice_is_refused_with_the_fix(tmp_path):
    from binsight.errors import ConfigError
    from binsight.params import load_params, train_section

    params = load_params(REPO / "params.yaml")
    assert train_section(params).lr == params["lr"]
    with pytest.raises(ConfigError, match=r"lr is set twice.*keep the top-level one \(`dvc exp run -S lr=...`\)"):
        train_section({**params, "train": {**params["train"], "lr": params["lr"] * 2}})


@pytest.mark.e2e
def test_the_model_is_a_dvc_artifact_that_artifacts_get_fetches(trained_project, clone_project, tmp_path):
    """dvc.yaml declares models/model.pt as the model artifact `bin-counter`; a version tag (what
    `gto register` writes) lets `dvc artifacts get REPO bin-counter` fetch that version's file."""
    project = clone_project(trained_project)
    declared = yaml.safe_load((project / "dvc.yaml").read_text())["artifacts"]["bin-counter"]
    assert declared["path"] == "models/model.pt" and declared["type"] == "model" and declared["labels"]
    run(["git", "tag", "-a", "bin-counter@v0.1.0", "-m", "Registering artifact bin-counter version v0.1.0"], project)
    out = tmp_path / "fetched.pt"
    run(["dvc", "artifacts", "get", str(project), "bin-counter", "-o", str(out)], tmp_path)
    assert out.read_bytes() == (project / "models/model.pt").read_bytes()
