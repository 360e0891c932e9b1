"""The test helpers' own contract, where getting it wrong breaks the suite only on some machines."""
import os

from binsight.testing.project import REPO, repo_pythonpath


def test_subprocesses_get_the_repo_on_top_of_the_callers_pythonpath(monkeypatch, tmp_path):
    # a machine whose packages were installed with `pip install --target` finds them through
    # PYTHONPATH only: a server or report subprocess that replaced it could not import uvicorn
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert repo_pythonpath().split(os.pathsep) == [str(REPO), str(tmp_path)]
    monkeypatch.delenv("PYTHONPATH")
    assert repo_pythonpath() == str(REPO)
