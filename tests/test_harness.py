"""The test helpers' own contract, where getting it wrong breaks the suite only on some machines, and the
warm interpreter's (binsight/testing/warm_python.py): a stage forked from it is a stage run cold."""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from binsight.testing.project import REPO, env, python_m, repo_pythonpath, run
from binsight.testing.warm_client import SOCKET_ENV
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


PROBE = '''import os, sys, time
warm = "torch" in sys.modules  # before this module imports anything: preloaded means forked warm
import binsight
print("warm" if warm else "cold", sys.argv[1:], os.getcwd(), os.environ.get("PROBE"), binsight.__file__)
print("to stderr", file=sys.stderr)
if sys.argv[1] == "threads":
    import torch
    print("threads", torch.get_num_threads())
if sys.argv[1] == "sleep":
    open("pid.tmp", "w").write(str(os.getpid()))
    os.replace("pid.tmp", "pid")  # whole when the test sees it
    time.sleep(60)
if sys.argv[1] == "raise":
    raise ValueError("boom")
if sys.argv[1] == "path":
    import probe_helper, yaml
    print("path", sys.path[1], probe_helper.WHERE, yaml.__file__)
sys.exit(int(sys.argv[1]) if sys.argv[1].isdigit() else sys.argv[1])
'''


@pytest.fixture
def probe_project(tmp_path):
    """A folder with a `stages/probe.py` and its own `binsight` package, as a test project has."""
    if not os.environ.get(SOCKET_ENV):
        pytest.skip("no warm interpreter in this run: BINSIGHT_WARM=0, or not Linux")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages/__init__.py").write_text("")
    (tmp_path / "stages/probe.py").write_text(PROBE)
    (tmp_path / "binsight").mkdir()
    (tmp_path / "binsight/__init__.py").write_text("")
    return tmp_path



def probe(project, *args, **env_extra):
    return run(python_m("stages.probe", *args), project, check=False, PROBE="p", **env_extra)


@pytest.mark.parametrize("arg,status,stderr_end", [("0", 0, "to stderr\n"), ("3", 3, "to stderr\n"),
                                                   ("stopped: why", 1, "to stderr\nstopped: why\n"),
                                                   ("raise", 1, "ValueError: boom\n")])
def test_a_warm_stage_answers_as_a_cold_one(probe_project, arg, status, stderr_end):
    """Forked from the warm interpreter or started cold: the same output, error stream, exit status,
    working directory, environment and project-local imports."""
    warm, cold = probe(probe_project, arg), probe(probe_project, arg, **{SOCKET_ENV: ""})
    assert warm.stdout.startswith("warm ") and cold.stdout.startswith("cold "), (warm.stdout, cold.stdout)
    assert warm.stdout[len("warm "):] == cold.stdout[len("cold "):]
    assert f"[{arg!r}] {probe_project} p " in warm.stdout and str(probe_project / "binsight") in warm.stdout
    assert warm.returncode == cold.returncode == status
    assert warm.stderr.endswith(stderr_end) and cold.stderr.endswith(stderr_end), (warm.stderr, cold.stderr)


def test_other_torch_threads_are_set_and_another_device_setting_runs_cold(probe_project):
    threads = str(int(os.environ.get("OMP_NUM_THREADS") or 1) + 1)  # not the warm interpreter's own
    warm = probe(probe_project, "threads", OMP_NUM_THREADS=threads)
    assert warm.stdout.startswith("warm ") and f"threads {threads}\n" in warm.stdout, warm.stdout
    other_gpus = probe(probe_project, "0", CUDA_VISIBLE_DEVICES="0")  # read when torch loads: never forked
    assert other_gpus.stdout.startswith("cold "), other_gpus.stdout


def test_pythonpath_may_put_folders_in_front_that_hold_none_of_the_warm_modules(probe_project):
    """The tests' servers run with this checkout in front of PYTHONPATH (repo_pythonpath): forked, such
    a folder comes right after the working directory on sys.path, as in a cold start. One that holds
    a module the warm interpreter has loaded (yaml here) runs cold, where that folder's copy wins."""
    extra = probe_project / "extra"
    extra.mkdir()
    (extra / "probe_helper.py").write_text("WHERE = 'extra'\n")
    pythonpath = os.pathsep.join(filter(None, [str(extra), os.environ.get("PYTHONPATH")]))
    warm = probe(probe_project, "path", PYTHONPATH=pythonpath)
    cold = probe(probe_project, "path", PYTHONPATH=pythonpath, **{SOCKET_ENV: ""})
    assert warm.stdout.startswith("warm ") and f"path {extra} extra " in warm.stdout, warm.stdout + warm.stderr
    assert warm.stdout[len("warm "):] == cold.stdout[len("cold "):]
    (extra / "yaml.py").write_text("")
    shadowed = probe(probe_project, "path", PYTHONPATH=pythonpath)
    assert shadowed.stdout.startswith("cold ") and f"extra {extra / 'yaml.py'}" in shadowed.stdout, shadowed.stdout


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_signal_to_the_stage_process_ends_its_warm_child(probe_project, sig):
    """Whoever started the stage (dvc, a test) holds the client: SIGTERM is passed on, and after
    kill -9 the child ends too; either way the caller sees death by that signal."""
    proc = subprocess.Popen(python_m("stages.probe", "sleep"), cwd=probe_project, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (probe_project / "pid").exists() and time.time() < deadline:
        time.sleep(0.02)
    child = int((probe_project / "pid").read_text())
    assert child != proc.pid  # forked by the server, not exec'd in the process we started
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == -sig
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        raise AssertionError(f"the warm child {child} outlived its client")
