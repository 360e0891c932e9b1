"""The type check (mypy, configured in pyproject.toml: the library and the stages) as a test, so that `make
test` runs it on one worker beside the other tests instead of before them. `make lint` runs the same check."""

import pytest
from mypy import api

from tests.support.project import REPO


@pytest.mark.slow
def test_the_library_and_the_stages_type_check(monkeypatch):
    monkeypatch.chdir(REPO)  # mypy reads its files and settings from pyproject.toml there
    stdout, stderr, status = api.run([])
    assert status == 0, stdout + stderr
    assert "Success: no issues found" in stdout
