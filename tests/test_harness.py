"""The test helpers' own contract, where getting it wrong breaks the suite only on some machines."""
import os
from pathlib import Path

from binsight.testing.project import REPO, repo_pythonpath
from binsight.testing.units import LONGEST_FIRST, unit_of, unit_rank


def test_subprocesses_get_the_repo_on_top_of_the_callers_pythonpath(monkeypatch, tmp_path):
    # a machine whose packages were installed with `pip install --target` finds them through
    # PYTHONPATH only: a server or report subprocess that replaced it could not import uvicorn
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert repo_pythonpath().split(os.pathsep) == [str(REPO), str(tmp_path)]
    monkeypatch.delenv("PYTHONPATH")
    assert repo_pythonpath() == str(REPO)


def test_units_are_modules_or_single_tests_and_the_longest_go_first():
    assert unit_of("tests/test_serve.py::test_x") == unit_of("tests/test_serve.py::test_y") == "tests/test_serve.py"
    pruner = "tests/test_tune.py::test_the_pruner_stops_a_trial_whose_lr_makes_it_diverge"
    assert unit_of(pruner) == pruner
    fit = "tests/test_losses.py::test_each_loss_fits_generated_bins_better_than_chance"
    assert unit_of(fit + "[ce]") == fit + "[ce]" != unit_of(fit + "[ordinal]")
    ids = ["tests/test_metrics.py::a", "tests/test_serve.py::b", pruner, fit + "[ordinal]", "tests/test_abid.py::d",
           "tests/test_tune.py::test_two_workers_then_a_second_machine_share_one_study_and_the_best_is_applied"]
    assert sorted(ids, key=unit_rank) == [ids[5], ids[2], ids[1], ids[3], ids[0], ids[4]]


def test_every_unit_named_longest_first_exists():
    """A renamed test would silently lose its place in the order."""
    collected = {}
    for path in Path(REPO, "tests").glob("test_*.py"):
        text = path.read_text()
        collected[f"tests/{path.name}"] = {line.split("(")[0][len("def "):] for line in text.splitlines()
                                           if line.startswith("def test_")}
    for entry in LONGEST_FIRST:
        module, _, test = entry.partition("::")
        assert module in collected and (not test or test in collected[module]), entry
