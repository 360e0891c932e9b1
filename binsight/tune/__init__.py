"""Tuning: `binsight tune` (Optuna over DVC experiments), its search space, trials and pruning, and the
named recipes of `binsight recipe`."""
