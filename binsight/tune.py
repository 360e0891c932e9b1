"""Bayesian hyper-parameter search (Optuna TPE) where every trial is a real DVC experiment.

    python -m binsight.tune --trials 20                # search the `tune:` space of params.yaml
    python -m binsight.tune --trials 10                # again: 10 more trials of the same study
    python -m binsight.tune --trials 8 --study bs      # another study (own journal, own experiment names)
    dvc exp show --sort-by val_acc                   # all trials side by side
    dvc exp apply tune-trial-7                       # take the best one into the workspace (or --apply)

Trial k runs `dvc exp run -n <study>-trial-<k> -S lr=... -S batch_size=... ...` in the
workspace, one after another, so DVC's cache skips every stage a trial does not touch (fetch,
split, featurize: with a frozen backbone each trial only fits the head on cached embeddings). The
objective is `tune.metric` from dvclive/train/metrics.json: a validation number, never the test set.
The study lives in tune/<study>.journal, so a second run continues it. At the end: a leaderboard,
tune/<study>.csv, tune/best_params.yaml and the `dvc exp apply` command of the best trial.
"""
import argparse
import json
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import optuna
import yaml

from binsight.errors import ConfigError, one_line_errors
from binsight.files import atomic_write_text
from binsight.params import is_number, load_params, require
from binsight.tables import write_csv

LIVE_METRICS = Path("dvclive/train/metrics.json")


def flatten_space(space, prefix=""):
    """{'train': {'x': {...}}} -> {'train.x': {...}}; a leaf is a list or a mapping with low/high."""
    flat = {}
    for key, value in space.items():
        name = f"{prefix}{key}"
        if isinstance(value, list) or (isinstance(value, dict) and "low" in value):
            flat[name] = value
        elif isinstance(value, dict) and value:
            flat.update(flatten_space(value, name + "."))
        else:
            raise ConfigError(f"tune.space.{name}={value!r} is not allowed: expected a list of choices or "
                              "{low, high[, log]}")
    return flat


def check_tune(p):
    p = {"metric": "best/val_acc", "direction": "maximize", "seed": 0, **(p or {})}
    require(isinstance(p["metric"], str) and p["metric"] and not p["metric"].startswith("test"), "tune.metric",
            p["metric"], "a key of dvclive/train/metrics.json such as best/val_acc (never a test metric)")
    require(p["direction"] in ("maximize", "minimize"), "tune.direction", p["direction"], "maximize or minimize")
    require(isinstance(p["seed"], int), "tune.seed", p["seed"], "an integer")
    require(isinstance(p.get("space"), dict) and p["space"], "tune.space", p.get("space"),
            "a mapping of params to search, e.g. {train: {lr: {low: 0.001, high: 0.1, log: true}}}")
    space = flatten_space(p["space"])
    for name, spec in space.items():
        key = f"tune.space.{name}"
        if isinstance(spec, list):
            require(spec and all(isinstance(c, (bool, int, float, str)) for c in spec), key, spec,
                    "a non-empty list of numbers or strings")
            continue
        low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
        require(set(spec) <= {"low", "high", "log"} and is_number(low) and is_number(high) and low <= high, key,
                spec, "{low, high[, log]} with low <= high")
        require(isinstance(log, bool) and (not log or low > 0), key, spec, "log: true only with low > 0")
    return {**p, "space": space}


def suggest(trial, name, spec):
    if isinstance(spec, list):
        return trial.suggest_categorical(name, spec)
    log = spec.get("log", False)
    if isinstance(spec["low"], int) and isinstance(spec["high"], int):
        return trial.suggest_int(name, spec["low"], spec["high"], log=log)
    return trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=log)


def cli_value(value):
    """A value as `-S` writes it into params.yaml: floats with 4 significant digits, never in
    exponent form (PyYAML would read `1e-05` back as a string)."""
    if isinstance(value, float):
        return format(Decimal(f"{value:.4g}"), "f")
    return str(value).lower() if isinstance(value, bool) else str(value)


def lookup(metrics, key):
    """`best/val_acc` as dvclive writes it: a top-level key, or nested by '/' (val/acc -> val.acc)."""
    if key in metrics:
        return metrics[key]
    node = metrics
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def duration(seconds):
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def run_trial(name, values, log_path):
    """`dvc exp run` of one trial in the workspace -> (ok, last output line worth showing)."""
    cmd = ["dvc", "exp", "run", "-n", name] + [arg for k, v in values.items() for arg in ("-S", f"{k}={cli_value(v)}")]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    lines = [line.strip() for line in log_path.read_text().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("ERROR", "error:"))]
    return proc.returncode == 0, (errors or lines or [""])[-1]


def leaderboard(study, names, metric):
    """Finished trials, best first, as rows of a table."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    done.sort(key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
    rows = []
    for rank, t in enumerate(done, 1):
        row = {"rank": rank, "experiment": t.user_attrs.get("experiment", f"trial-{t.number + 1}")}
        row.update({n: cli_value(t.params[n]) for n in names if n in t.params})
        row[metric] = f"{t.value:.4f}"
        row["seconds"] = f"{t.user_attrs.get('seconds', 0):.0f}"
        rows.append(row)
    return rows


def format_table(rows):
    if not rows:
        return "(no finished trials)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def nested(dotted):
    out = {}
    for key, value in dotted.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="binsight tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="trials to run now (default: %(default)s)")
    parser.add_argument("--study", default="tune", help="study name, the prefix of the experiment names; an "
                        "existing study gets more trials (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=None, help="start no trial after this many seconds")
    parser.add_argument("--out", default="tune", help="journal, logs, leaderboard, best_params.yaml "
                        "(default: %(default)s)")
    parser.add_argument("--apply", action="store_true", help="`dvc exp apply` the best trial at the end")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be >= 1")
    if not args.study.replace("-", "").replace("_", "").isalnum():
        parser.error(f"--study {args.study!r}: use letters, digits, - and _ (it names git refs)")
    return args


def open_study(args, tune_params):
    """The study in <out>/<study>.journal, created or continued."""
    if subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True).returncode != 0:
        raise ConfigError("tune runs DVC experiments, which need a git repository with a commit: "
                          "`git add -A && git commit -m baseline` first")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / f"{args.study}.journal")))
    study = optuna.create_study(study_name=args.study, storage=storage, direction=tune_params["direction"],
                                load_if_exists=True)
    # Reproducible, yet a continued study must not replay the random start-up trials of its first run.
    study.sampler = optuna.samplers.TPESampler(seed=tune_params["seed"] + len(study.trials))
    return study, out


def one_trial(study, trial, tune_params, exp, logs):
    """Run one trial as a DVC experiment and tell the study its value -> (status text, seconds)."""
    metric = tune_params["metric"]
    values = {name: suggest(trial, name, spec) for name, spec in tune_params["space"].items()}
    print(f"tune: {exp}: {' '.join(f'{k}={cli_value(v)}' for k, v in values.items())} ...", flush=True)
    t0 = time.perf_counter()
    ok, last = run_trial(exp, values, logs / f"{exp}.log")
    seconds = time.perf_counter() - t0
    trial.set_user_attr("experiment", exp)
    trial.set_user_attr("seconds", seconds)
    value = lookup(json.loads(LIVE_METRICS.read_text()), metric) if ok and LIVE_METRICS.exists() else None
    if is_number(value):
        study.tell(trial, float(value))
        return f"{metric} {value:.4f}", seconds
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    if "already exists" in last or "conflicts with existing experiment" in last:
        raise ConfigError(f"experiment {exp} already exists: pick another --study, or `dvc exp remove {exp}`")
    return f"failed ({last or f'no {metric} in {LIVE_METRICS}'}; log: {logs / f'{exp}.log'})", seconds


def best_so_far(study):
    try:
        return f"best {study.best_value:.4f} ({study.best_trial.user_attrs['experiment']})"
    except ValueError:
        return "no finished trial yet"


def run_trials(study, args, tune_params, out):
    """Ask, run and tell `args.trials` trials, printing progress with an ETA."""
    start, durations = time.perf_counter(), []
    for n in range(1, args.trials + 1):
        if args.timeout is not None and time.perf_counter() - start > args.timeout:
            print(f"tune: --timeout {args.timeout:g}s reached, stopping after {n - 1} trials", flush=True)
            return
        trial = study.ask()
        exp = f"{args.study}-trial-{trial.number + 1}"
        try:
            status, seconds = one_trial(study, trial, tune_params, exp, out / "logs")
        except KeyboardInterrupt:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            print(f"\ntune: interrupted in trial {n}; the results so far:", flush=True)
            return
        durations.append(seconds)
        eta = sum(durations) / len(durations) * (args.trials - n)
        if args.timeout is not None:
            eta = min(eta, max(args.timeout - (time.perf_counter() - start), 0))
        print(f"tune: trial {n}/{args.trials} {exp} {status} in {duration(seconds)} | {best_so_far(study)} | "
              f"ETA {duration(eta)}", flush=True)


def report(study, args, tune_params, out):
    """Leaderboard, <study>.csv and best_params.yaml; apply the best experiment when asked."""
    names, metric = list(tune_params["space"]), tune_params["metric"]
    rows = leaderboard(study, names, metric)
    print(f"\ntune: leaderboard of study {args.study!r} ({len(rows)} finished of {len(study.trials)} trials)")
    print(format_table(rows), flush=True)
    if not rows:
        raise ConfigError(f"no trial finished: see the logs in {out / 'logs'}")
    write_csv(out / f"{args.study}.csv", rows, list(rows[0]))
    best = study.best_trial
    name = best.user_attrs["experiment"]
    result = {"study": args.study, "experiment": name, "apply": f"dvc exp apply {name}", "metric": metric,
              "direction": tune_params["direction"], "value": best.value, "trials": len(rows),
              "params": nested({k: yaml.safe_load(cli_value(v)) for k, v in best.params.items()})}
    atomic_write_text(out / "best_params.yaml", yaml.safe_dump(result, sort_keys=False))
    print(f"\ntune: best {metric} {best.value:.4f} by {name} -> {out / 'best_params.yaml'}")
    if args.apply:
        subprocess.run(["dvc", "exp", "apply", name], check=True)
        print(f"tune: applied {name} to the workspace (`git diff params.yaml` shows it)")
    else:
        print(f"tune: apply it with `dvc exp apply {name}`; compare all with `dvc exp show --sort-by val_acc`")


@one_line_errors
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tune_params = check_tune(load_params().get("tune"))
    study, out = open_study(args, tune_params)
    names = list(tune_params["space"])
    print(f"tune: study {args.study!r}, {args.trials} trial{'s' if args.trials > 1 else ''} of {', '.join(names)} "
          f"by {tune_params['direction']} {tune_params['metric']}"
          f"{f' (continuing after {len(study.trials)} earlier trials)' if study.trials else ''}", flush=True)
    run_trials(study, args, tune_params, out)
    report(study, args, tune_params, out)


if __name__ == "__main__":
    main()
