"""A 2x2 grid through the real DVC 3 queue: `dvc exp run --queue -S ... -S ...` queues four
experiments, `dvc exp show --csv` lists them with their params, `dvc queue remove` drops three, `dvc queue start`
runs the one left, and `dvc exp show --csv` shows its metrics. (One run shows what four would: each
queued run is a whole `dvc exp run` in a temp workspace.)"""

import subprocess
import time

import pytest

from tests.support.project import dvc, env, experiment_refs, experiments, stages_run

pytestmark = pytest.mark.e2e

QUEUE_TIMEOUT = 300


def idle(status):
    return not any(word in status for word in ("Queued", "Running"))


def wait_for_queue(project, names, timeout=QUEUE_TIMEOUT):
    """Wait until the queue has run `names` and is idle; return the last `dvc queue status`. Each
    `dvc` call is a whole process, seconds of the CPU that the queued runs need: so the wait watches
    git refs every second, and asks `dvc queue status` every 20 s (a failed run makes no ref) or, once
    every ref is there, every second until its task has ended."""
    deadline = time.monotonic() + timeout
    next_status = time.monotonic() + 20
    while True:
        made = set(names) <= experiment_refs(project)
        if made or time.monotonic() > next_status:
            status = dvc(project, "queue", "status").stdout
            if idle(status):
                return status
            next_status = time.monotonic() + 20
        if time.monotonic() > deadline:
            raise AssertionError(f"queue not done after {timeout}s:\n{dvc(project, 'queue', 'status').stdout}")
        time.sleep(1)


def start_queue(project, log):
    """`dvc queue start -j 1`, its output in the file `log`. The queue's worker keeps the caller's
    stdout and stderr until it exits, 10 s after the queue is empty (DVC's idle timeout): read
    through pipes, the call would not return before then."""
    with open(log, "w") as out:
        proc = subprocess.run(
            ["dvc", "queue", "start", "-j", "1"],
            cwd=project,
            env=env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    assert proc.returncode == 0, log.read_text()


@pytest.mark.first
def test_queued_grid_expands_to_four_and_runs_what_is_left_with_metrics(frozen_project, clone_project, tmp_path):
    project = clone_project(frozen_project)
    queued = dvc(project, "exp", "run", "--queue", "-S", "lr=0.001,0.01", "-S", "batch_size=16,32")
    assert queued.stdout.count("Queued experiment") == 4, queued.stdout
    exps = experiments(project)
    grid = {(float(r["lr"]), int(r["batch_size"])): name for name, r in exps.items() if r["State"] == "Queued"}
    assert set(grid) == {(0.001, 16), (0.001, 32), (0.01, 16), (0.01, 32)}, exps
    dropped = [grid[(0.001, 16)], grid[(0.001, 32)], grid[(0.01, 16)]]
    dvc(project, "queue", "remove", *dropped)
    try:
        start_queue(project, tmp_path / "queue-start.log")
        status = wait_for_queue(project, [grid[(0.01, 32)]])
    finally:
        dvc(project, "queue", "stop", check=False)
    assert status.count("Success") == 1, status
    # Every queued run (an lr and batch_size change) found featurize's output in the DVC cache and
    # trained the head on the cached features.
    names = [line.split()[1] for line in status.splitlines()[1:] if line.endswith("Success")]
    assert names == [grid[(0.01, 32)]], status
    for name in names:
        log = dvc(project, "queue", "logs", name).stdout
        assert "Running stage 'featurize'" not in log and "Stage 'featurize' didn't change" in log, log
        assert "train: head only on cached 256-d features" in log, log
        ran = stages_run(log)
        assert ran[:2] == ["train", "evaluate"] and set(ran) <= {"train", "evaluate", "report"}, log

    exps = experiments(project)
    assert {(float(r["lr"]), int(r["batch_size"])) for r in exps.values()} == {(0.01, 32)}, exps
    for r in exps.values():
        assert r["State"] == "Success", r
        assert 0 <= float(r["val_acc"]) <= 1 and 0 <= float(r["test_acc"]) <= 1, r
        assert r["epochs"] == "2" and r["model.freeze_backbone"] == "True", r
