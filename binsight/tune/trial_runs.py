"""One tuning trial = one `dvc exp run --temp`: its own temp copy of the repo, its own GPU (or its
share of the CPU threads), the workspace untouched. Used by binsight.tune.bayes_search's workers."""

import json
import os
import subprocess
from decimal import Decimal

import dvc.api
from dvc.exceptions import DvcException


def cli_value(value):
    """A value as `-S` writes it into params.yaml: floats with 4 significant digits, never in
    exponent form (PyYAML would read `1e-05` back as a string)."""
    if isinstance(value, float):
        return format(Decimal(f"{value:.4g}"), "f")
    return str(value).lower() if isinstance(value, bool) else str(value)


def visible_gpus(environ=None):
    """The GPU ids this process may hand out: CUDA_VISIBLE_DEVICES when set, else every CUDA device."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [g.strip() for g in environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_env(slot, workers, gpus, cpus):
    """Environment of worker `slot` (0..workers-1): one GPU, round-robin over `gpus`; without GPUs
    the CPU threads split evenly, so N workers do not oversubscribe the cores N-fold."""
    if gpus:
        return {"CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)]}
    threads = str(max(1, cpus // workers))
    return {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def run_experiment(name, values, log_path, env):
    """`dvc exp run --temp` of one trial -> (ok, the last output line worth showing). Waits for DVC's
    repo lock, which parallel runs take in turn while they start and save."""
    cmd = ["dvc", "--wait-for-lock", "exp", "run", "--temp", "-n", name]
    cmd += [arg for k, v in values.items() for arg in ("-S", f"{k}={cli_value(v)}")]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **env}
        )
    lines = [line.strip() for line in log_path.read_text().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("ERROR", "error:"))]
    return proc.returncode == 0, (errors or lines or [""])[-1]


def experiment_commit(baseline, name):
    """The commit DVC saved experiment `name` of `baseline` as, or None."""
    ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
    proc = subprocess.run(["git", "rev-parse", "--verify", "-q", ref], capture_output=True, text=True)
    return proc.stdout.strip() or None


def experiment_metrics(commit, path="dvclive/train/metrics.json"):
    """A metrics file of a saved experiment (from its commit and the DVC cache), or None."""
    try:
        return json.loads(dvc.api.read(path, rev=commit))
    except (DvcException, ValueError):
        return None
