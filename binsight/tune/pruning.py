"""The link from a training run back to the `binsight tune` trial that started it.

`binsight tune` starts each trial's `dvc exp run` with BINSIGHT_TUNE_TRIAL set (the study's storage
URL, its name, the trial and the pruner). The train stage then reports every epoch's val accuracy
to that trial, and stops when the study's pruner says the trial trails the others. Without the
variable (every run you start yourself) nothing is reported and nothing is stopped, and optuna
and SQLAlchemy are never imported: every train stage imports this module, and they would add
~0.15 s to each start.
"""

import json
import os
import random
import time
import warnings

ENV = "BINSIGHT_TUNE_TRIAL"


def make_pruner(kind, warmup_epochs=0, startup_trials=0):
    """Optuna's pruner for `tune.pruner`; steps are 0-based epochs."""
    import optuna

    if kind == "median":  # stop when the best val acc so far is below the median of finished trials at this epoch
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, warmup_epochs))
    return optuna.pruners.NopPruner()


def open_storage(url, heartbeat=True):
    """Optuna's relational storage (SQLite, PostgreSQL, MySQL). With a heartbeat, a trial whose tune
    process died without a word (kill -9, a lost machine) is marked failed by the next `tune` on the
    study. SQLite waits up to a minute for a lock: workers and their training runs share the file."""
    import optuna
    import sqlalchemy

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    beat = {"heartbeat_interval": 10, "grace_period": 60} if heartbeat else {}
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **beat)
        except sqlalchemy.exc.DBAPIError:
            # two machines creating the tables of a new database at once: one wins, the other retries
            if attempt == 4:
                raise
            time.sleep(0.2 + random.random())


def trial_id(storage, study, number):
    """The storage's id of trial `number` of `study`, through optuna's public storage API."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study), number)


def trial_user_attrs(url, study, number):
    """A trial's user attributes as stored now (its training run may have added some)."""
    storage = open_storage(url, heartbeat=False)
    return storage.get_trial_user_attrs(trial_id(storage, study, number))


def link_env(storage, study, trial_number, pruner):
    """{ENV: ...} for a trial's subprocess. `pruner`: {kind, warmup_epochs, startup_trials}."""
    return {ENV: json.dumps({"storage": storage, "study": study, "trial_number": trial_number, "pruner": pruner})}


class TrialLink:
    """A trial of a study in shared storage, seen from the training process."""

    def __init__(self, storage, study, trial_number, pruner):
        import optuna

        rdb = open_storage(storage, heartbeat=False)
        self.study = optuna.load_study(study_name=study, storage=rdb, pruner=make_pruner(**pruner))
        self.trial = optuna.trial.Trial(self.study, trial_id(rdb, study, trial_number))

    @classmethod
    def from_env(cls, environ=None):
        spec = (os.environ if environ is None else environ).get(ENV)
        return cls(**json.loads(spec)) if spec else None

    def report(self, val_acc, epoch):
        """Report one epoch (0-based); -> True when the pruner says stop. The trial is marked with the
        epoch it stopped at, which the tuner shows on its leaderboard."""
        self.trial.report(float(val_acc), epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_epoch", epoch + 1)
            return True
        return False
