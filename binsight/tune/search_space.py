"""The `tune:` section of params.yaml (search space, objective, pruner) and the study's leaderboard."""

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from binsight.errors import ConfigError
from binsight.params import TuneParams, is_number, parse, require
from binsight.tune.trial_runs import cli_value


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
            raise ConfigError(
                f"tune.space.{name}={value!r} is not allowed: expected a list of choices or {{low, high[, log]}}"
            )
    return flat


def check_tune(raw: Mapping[str, Any] | None) -> TuneParams:
    """The tune: section, checked, its space flattened to {"train.lr": spec, ...} with every spec checked."""
    p = parse(TuneParams, raw)
    space = flatten_space(p.space)
    for name, spec in space.items():
        key = f"tune.space.{name}"
        if isinstance(spec, list):
            require(
                spec and all(isinstance(c, (bool, int, float, str)) for c in spec),
                key,
                spec,
                "a non-empty list of numbers or strings",
            )
            continue
        low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
        require(
            set(spec) <= {"low", "high", "log"} and is_number(low) and is_number(high) and low <= high,
            key,
            spec,
            "{low, high[, log]} with low <= high",
        )
        require(isinstance(log, bool) and (not log or low > 0), key, spec, "log: true only with low > 0")
    return p.replace(space=space)


def suggest(trial, name, spec):
    if isinstance(spec, list):
        return trial.suggest_categorical(name, spec)
    log = spec.get("log", False)
    if isinstance(spec["low"], int) and isinstance(spec["high"], int):
        return trial.suggest_int(name, spec["low"], spec["high"], log=log)
    return trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=log)


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


def leaderboard(study, names, metric):
    """Every trial as a row: finished ones best first, then the pruned (with the epoch they
    stopped at), the failed and the running ones."""
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    done.sort(key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
    rest = [t for t in study.trials if t.state != TrialState.COMPLETE]
    rows = []
    for rank, t in enumerate(done + rest, 1):
        row = {
            "rank": rank if t.state == TrialState.COMPLETE else "-",
            "experiment": t.user_attrs.get("experiment", f"trial-{t.number + 1}"),
        }
        row.update({n: cli_value(t.params[n]) if n in t.params else "" for n in names})
        row[metric] = f"{t.value:.4f}" if t.state == TrialState.COMPLETE else ""
        row["state"] = state_text(t)
        row["seconds"] = f"{t.user_attrs.get('seconds', 0):.0f}"
        rows.append(row)
    return rows


def state_text(trial):
    if trial.state == TrialState.PRUNED:
        return f"pruned at epoch {trial.user_attrs.get('pruned_at_epoch', '?')}"
    return {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed", TrialState.RUNNING: "running"}.get(
        trial.state, trial.state.name.lower()
    )


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
