"""The test helpers' own contract: a stage called in-process (`call`) answers as the same stage started
as a process, and leaves the test process as it found it; subprocesses keep the caller's PYTHONPATH."""

import os
import sys

import pytest

from tests.support.project import REPO, call, python_m, repo_pythonpath, run

PROBE = """import os, sys


def main(argv):
    print("args", argv, os.getcwd(), os.environ.get("PROBE"))
    print("to stderr", file=sys.stderr)
    if argv[0] == "stdin":
        print("read", sys.stdin.buffer.read())
    if argv[0] == "raise":
        raise ValueError("boom")
    if argv[0].isdigit():
        sys.exit(int(argv[0]))
    if argv[0] == "return":
        return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def probe_folder(tmp_path, monkeypatch):
    """A folder with a module `binsight_probe` that both ways of running can import."""
    (tmp_path / "binsight_probe.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("arg,status", [("0", 0), ("2", 2), ("return", 3)])
def test_a_stage_called_in_process_answers_as_a_started_one(probe_folder, arg, status):
    inside = call("binsight_probe", arg, cwd=probe_folder, check=False, PROBE="p")
    started = run(python_m("binsight_probe", arg), probe_folder, check=False, PROBE="p")
    assert inside.returncode == started.returncode == status
    assert inside.stdout == started.stdout == f"args [{arg!r}] {probe_folder} p\n"
    assert inside.stderr == started.stderr == "to stderr\n"


def test_a_call_leaves_the_directory_the_environment_and_stdin_as_they_were(probe_folder):
    cwd, stdin = os.getcwd(), sys.stdin
    assert "PROBE" not in os.environ
    assert call("binsight_probe", "stdin", cwd=probe_folder, stdin=b"bytes", PROBE="p").stdout.endswith(
        "read b'bytes'\n"
    )
    with pytest.raises(ValueError, match="boom"):  # a crash is the test's to see, with its traceback
        call("binsight_probe", "raise", cwd=probe_folder)
    assert os.getcwd() == cwd and sys.stdin is stdin and "PROBE" not in os.environ


def test_an_unexpected_status_fails_with_the_output(probe_folder):
    with pytest.raises(AssertionError, match="binsight_probe 2 exited 2(.|\n)*to stderr"):
        call("binsight_probe", "2", cwd=probe_folder)


def test_subprocesses_get_the_repo_on_top_of_the_callers_pythonpath(monkeypatch, tmp_path):
    # a machine whose packages were installed with `pip install --target` finds them through
    # PYTHONPATH only: a server or report subprocess that replaced it could not import uvicorn
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert repo_pythonpath().split(os.pathsep) == [str(REPO), str(tmp_path)]
    monkeypatch.delenv("PYTHONPATH")
    assert repo_pythonpath() == str(REPO)
