"""The test helpers' own contract, where getting it wrong breaks the suite only on some machines."""
import os
from pathlib import Path

from binsight.testing.project import REPO, repo_pythonpath
from binsight.testing.units import unit_of, unit_of_module, unit_rank


def test_subprocesses_get_the_repo_on_top_of_the_callers_pythonpath(monkeypatch, tmp_path):
    # a machine whose packages were installed with `pip install --target` finds them through
    # PYTHONPATH only: a server or report subprocess that replaced it could not import uvicorn
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert repo_pythonpath().split(os.pathsep) == [str(REPO), str(tmp_path)]
    monkeypatch.delenv("PYTHONPATH")
    assert repo_pythonpath() == str(REPO)


def test_shared_project_units_stay_whole_on_few_workers_and_split_on_many():
    units = unit_of_module(Path(REPO, "tests").glob("test_*.py"))
    tune, queue = "tests/test_tune.py::test_the_pruner_stops", "tests/test_queue.py::test_queued_grid"
    assert units["tests/test_tune.py"] == units["tests/test_queue.py"] == "frozen_project"
    assert units["tests/test_serve.py"] == "trained_project" and units["tests/test_metrics.py"] == "tests/test_metrics.py"
    for workers in (1, 2, 4):  # one build of each project: a 2-core machine's best
        assert unit_of(tune, units, workers) == unit_of(queue, units, workers) == "frozen_project"
        assert unit_of("tests/test_serve.py::test_x", units, workers) == "trained_project"
    for workers in (8, 16):  # the long tests side by side, each worker building its own project
        assert unit_of(tune, units, workers) == tune
        assert unit_of(tune + "x", units, workers) == tune + "x"
        assert unit_of(queue, units, workers) == "tests/test_queue.py"
        assert unit_of("tests/test_serve.py::test_x", units, workers) == "tests/test_serve.py"
    for workers in (2, 8):  # the other modules are their own units either way
        assert unit_of("tests/test_metrics.py::test_x", units, workers) == "tests/test_metrics.py"
    ids = ["tests/test_metrics.py::a", "tests/test_serve.py::b", "tests/test_tune.py::c", "tests/test_abid.py::d"]
    assert sorted(ids, key=lambda i: unit_rank(i, units)) == [ids[2], ids[1], ids[0], ids[3]]
