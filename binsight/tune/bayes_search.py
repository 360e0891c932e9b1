"""Bayesian hyper-parameter search (Optuna TPE): every trial a real DVC experiment, N at a time.

    binsight tune --trials 20                       # search the `tune:` space of params.yaml
    binsight tune --trials 16 --workers 4           # 4 trials at once, one GPU each (round-robin)
    binsight tune --trials 10                       # again: 10 more trials of the same study
    binsight tune --trials 8 --storage postgresql://user:pw@db/optuna    # one study, many machines
    dvc exp show --sort-by val_acc                  # all trials side by side
    dvc exp apply tune-trial-7                      # take the best one into the workspace (or --apply)

Trial k runs `dvc exp run --temp -n <study>-trial-<k> -S lr=... ...`: its own temp copy of the
repo, so the workspace is never touched and workers do not collide. DVC's cache still skips every
stage a trial does not change (fetch, split, featurize). Each worker owns one GPU of
CUDA_VISIBLE_DEVICES (round-robin); without GPUs the CPU threads are split between the workers.
The objective is `tune.metric` from the experiment's dvclive/train/metrics.json: a validation
number, never the test set. The train stage reports every epoch's val accuracy to the study, and
the pruner (`tune.pruner`) stops trials that trail. A trial whose run dies (killed, out of memory)
is marked failed and the study goes on. The study lives in `--storage` (default: an SQLite file in
tune/), so a second run, or another machine on the same database, continues it. At the end: a
leaderboard, tune/<study>.csv, tune/best_params.yaml and the `dvc exp apply` command of the best.
"""

import argparse
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import sqlalchemy
import yaml

from binsight.errors import BinsightError, ConfigError, one_line_errors
from binsight.files import atomic_write_text
from binsight.params import is_number, load_params
from binsight.tables import write_csv
from binsight.tune.pruning import link_env, make_pruner, open_storage, trial_user_attrs
from binsight.tune.search_space import (
    check_tune,
    cli_value,
    duration,
    format_table,
    leaderboard,
    lookup,
    nested,
    suggest,
)
from binsight.tune.trial_runs import experiment_commit, experiment_metrics, run_experiment, visible_gpus, worker_env


class TrialFailed(BinsightError):
    """A trial's `dvc exp run` failed: the study records it as failed and goes on."""


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="binsight tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--trials", type=int, default=20, help="trials to run now, on this machine (default: %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="trials at once on this machine, each on its own GPU "
        "(round-robin) or its share of the CPU threads (default: %(default)s)",
    )
    parser.add_argument(
        "--study",
        default="tune",
        help="study name, the prefix of the experiment names; an "
        "existing study gets more trials (default: %(default)s)",
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL shared by every machine of the study, "
        "e.g. postgresql://user:pw@host/db or sqlite:////shared/tune.db "
        "(default: sqlite:///<out>/<study>.db)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="start no trial after this many seconds")
    parser.add_argument(
        "--out", default="tune", help="default storage, logs, leaderboard, best_params.yaml (default: %(default)s)"
    )
    parser.add_argument("--apply", action="store_true", help="`dvc exp apply` the best trial at the end")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.workers < 1:
        parser.error("--trials and --workers must be >= 1")
    if not args.study.replace("-", "").replace("_", "").isalnum():
        parser.error(f"--study {args.study!r}: use letters, digits, - and _ (it names git refs)")
    return args


def storage_url(args, out):
    """The storage URL as every process of the study opens it: a relative SQLite path made absolute,
    because each trial runs in its own temp directory."""
    url = args.storage or f"sqlite:///{out.resolve() / f'{args.study}.db'}"
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = f"sqlite:///{Path(url[len('sqlite:///') :]).resolve()}"
    return url


def open_study(args, tune_params):
    """The study in `--storage`, created or continued; -> (study, out dir, storage URL, baseline commit)."""
    head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        raise ConfigError(
            "tune runs DVC experiments, which need a git repository with a commit: "
            "`git add -A && git commit -m baseline` first"
        )
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(args, out)
    try:
        study = optuna.create_study(
            study_name=args.study,
            storage=open_storage(url),
            load_if_exists=True,
            direction=tune_params.direction,
            pruner=make_pruner(**pruner_of(tune_params)),
        )
    except (ImportError, ValueError, RuntimeError, sqlalchemy.exc.SQLAlchemyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"--storage {url}: cannot open it ({reason}); check the URL, that the database is "
            "reachable, and its driver (PostgreSQL: pip install psycopg2-binary)"
        ) from None
    # Reproducible, yet a continued study must not replay the random start-up trials of its first run;
    # constant_liar keeps parallel workers from sampling the same point.
    study.sampler = optuna.samplers.TPESampler(seed=tune_params.seed + len(study.trials), constant_liar=True)
    return study, out, url, head.stdout.strip()


def pruner_of(tune_params):
    """`tune.pruner` and its settings as make_pruner takes them (and link_env passes them on)."""
    return {
        "kind": tune_params.pruner,
        "warmup_epochs": tune_params.prune_warmup_epochs,
        "startup_trials": tune_params.prune_startup_trials,
    }


class Workers:
    """Worker slots (one GPU or CPU share each) and the progress lines of the trials they finish."""

    def __init__(self, n, trials, timeout):
        self.n, self.trials, self.timeout = n, trials, timeout
        self.gpus, self.cpus = visible_gpus(), os.cpu_count() or 1
        self.slots = queue.Queue()
        for slot in range(n):
            self.slots.put(slot)
        self.lock, self.finished, self.durations, self.start = threading.Lock(), 0, [], time.perf_counter()

    def where(self):
        if self.gpus:
            return f"GPUs {','.join(self.gpus)}"
        threads = int(worker_env(0, self.n, self.gpus, self.cpus)["OMP_NUM_THREADS"])
        return f"CPU, {threads} thread{'s' if threads > 1 else ''} each"

    def done(self, study, trial):
        with self.lock:
            self.finished += 1
            seconds = trial.user_attrs.get("seconds", 0.0)
            self.durations.append(seconds)
            left = self.trials - self.finished
            eta = sum(self.durations) / len(self.durations) * left / self.n
            if self.timeout is not None:
                eta = min(eta, max(self.timeout - (time.perf_counter() - self.start), 0))
            print(
                f"tune: trial {self.finished}/{self.trials} {trial.user_attrs.get('experiment', '?')} "
                f"{trial.user_attrs.get('status', trial.state.name.lower())} in {duration(seconds)} | "
                f"{best_so_far(study)} | ETA {duration(eta)}",
                flush=True,
            )


def objective(study, trial, tune_params, ctx):
    """One trial: a worker slot, `dvc exp run --temp`, and the metric of the experiment it saved."""
    workers, out, url, baseline, prefix = ctx
    metric = tune_params.metric
    exp = f"{prefix}-trial-{trial.number + 1}"
    trial.set_user_attr("experiment", exp)
    values = {name: suggest(trial, name, spec) for name, spec in tune_params.space.items()}
    slot = workers.slots.get()
    try:
        print(
            f"tune: {exp}: {' '.join(f'{k}={cli_value(v)}' for k, v in values.items())} (worker {slot + 1}) ...",
            flush=True,
        )
        env = {
            **worker_env(slot, workers.n, workers.gpus, workers.cpus),
            **link_env(url, study.study_name, trial.number, pruner_of(tune_params)),
        }
        t0 = time.perf_counter()
        ok, last = run_experiment(exp, values, out / "logs" / f"{exp}.log", env)
        trial.set_user_attr("seconds", time.perf_counter() - t0)
    finally:
        workers.slots.put(slot)
    pruned = trial_user_attrs(url, study.study_name, trial.number).get("pruned_at_epoch")
    if pruned is not None:
        trial.set_user_attr("status", f"pruned at epoch {pruned}")
        raise optuna.TrialPruned(f"pruned at epoch {pruned}")
    if not ok:
        if "already exists" in last or "conflicts with existing experiment" in last:
            raise ConfigError(f"experiment {exp} already exists: pick another --study, or `dvc exp remove {exp}`")
        trial.set_user_attr("status", f"failed ({last}; log: {out / 'logs' / f'{exp}.log'})")
        raise TrialFailed(last)
    commit = experiment_commit(baseline, exp)
    value = lookup(experiment_metrics(commit) or {}, metric) if commit else None
    if not is_number(value):
        trial.set_user_attr("status", f"failed (no {metric} in {exp}'s dvclive/train/metrics.json)")
        raise TrialFailed(f"no {metric}")
    trial.set_user_attr("status", f"{metric} {value:.4f}")
    return float(value)


def best_so_far(study):
    try:
        return f"best {study.best_value:.4f} ({study.best_trial.user_attrs['experiment']})"
    except ValueError:
        return "no finished trial yet"


def report(study, args, tune_params, out):
    """Leaderboard, <study>.csv and best_params.yaml; apply the best experiment when asked."""
    names, metric = list(tune_params.space), tune_params.metric
    rows = leaderboard(study, names, metric)
    finished = sum(1 for r in rows if r["rank"] != "-")
    print(f"\ntune: leaderboard of study {args.study!r} ({finished} finished of {len(study.trials)} trials)")
    print(format_table(rows), flush=True)
    if rows:
        write_csv(out / f"{args.study}.csv", rows, list(rows[0]))
    if not finished:
        raise ConfigError(f"no trial finished: see the logs in {out / 'logs'}")
    best = study.best_trial
    name = best.user_attrs["experiment"]
    result = {
        "study": args.study,
        "experiment": name,
        "apply": f"dvc exp apply {name}",
        "metric": metric,
        "direction": tune_params.direction,
        "value": best.value,
        "trials": finished,
        "params": nested({k: yaml.safe_load(cli_value(v)) for k, v in best.params.items()}),
    }
    atomic_write_text(out / "best_params.yaml", yaml.safe_dump(result, sort_keys=False))
    print(f"\ntune: best {metric} {best.value:.4f} by {name} -> {out / 'best_params.yaml'}")
    if args.apply:
        subprocess.run(["dvc", "exp", "apply", name], check=True)
        print(f"tune: applied {name} to the workspace (`git diff params.yaml` shows it)")
    else:
        print(f"tune: apply it with `dvc exp apply {name}`; compare all with `dvc exp show --sort-by val_acc`")


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tune_params = check_tune(load_params().get("tune"))
    study, out, url, baseline = open_study(args, tune_params)
    workers = Workers(args.workers, args.trials, args.timeout)
    earlier = len(study.trials)
    print(
        f"tune: study {args.study!r} in {url.split('@')[-1]}, {args.trials} trial{'s' if args.trials > 1 else ''} "
        f"of {', '.join(tune_params.space)} by {tune_params.direction} {tune_params.metric}, "
        f"{args.workers} worker{'s' if args.workers > 1 else ''} ({workers.where()}), pruner {tune_params.pruner}"
        f"{f' (continuing after {earlier} earlier trials)' if earlier else ''}",
        flush=True,
    )
    ctx = (workers, out, url, baseline, args.study)
    try:
        study.optimize(
            lambda trial: objective(study, trial, tune_params, ctx),
            n_trials=args.trials,
            n_jobs=args.workers,
            timeout=args.timeout,
            catch=(TrialFailed,),
            callbacks=[workers.done],
            gc_after_trial=False,
        )
    except KeyboardInterrupt:
        print("\ntune: interrupted; the results so far:", flush=True)
    report(study, args, tune_params, out)


if __name__ == "__main__":
    main()
