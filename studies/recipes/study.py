"""The recipe study on real bins: each training option against the plain-CE baseline at the same
budget, from scratch, with several seeds, as queued DVC experiments; then one table.

Run inside a project whose fetch and split are done (docs/results.md, "Setup for every rebuild"):

    python -m studies.recipes.study queue --seeds 0 1     # `dvc exp run --queue` for every variant x seed
    dvc queue start -j 1                        # one worker: a run uses both cores
    python -m studies.recipes.study bare --seeds 0 1   # the bare PyTorch loop on the same split: the budget
    python -m studies.recipes.study table       # mean ± spread per variant (every experiment's dvclive metrics)

Every variant is the study's base recipe (STUDY_BASE: resnet18 from scratch, 112 px, 6 epochs,
fp32) with one change; the winner became `binsight recipe cpu-scratch`. Each run reports
its test metrics with TTA (the recipe's flips) and with a single view, so TTA is compared in
every row at no extra training.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import dvc.api
from dvc.exceptions import PathMissingError

from binsight.tune.recipes import CPU_SCRATCH, set_flags

# The recipe the study started from: full-width ResNet18, 112 px, 6 epochs (the bare loop's setting).
STUDY_BASE = {**CPU_SCRATCH, "model.width": 1.0, "train.image_size": 112, "epochs": 6, "train.amp": "auto"}
VARIANTS = {
    "cpu-scratch (ce)": {},
    "neighbour": {"train.loss": "neighbour"},
    "ordinal": {"train.loss": "ordinal"},
    "regression": {"train.loss": "regression"},
    "weighted loss": {"train.balance": "weighted_loss"},
    "ema": {"train.ema": 0.99},
    "no warmup": {"train.warmup_epochs": 0},
    # the same budget spent on more epochs: bf16 autocast is faster on a CPU with native bf16
    "bf16, 9 epochs": {"train.amp": "bf16", "epochs": 9},
    # the same budget on more, smaller images: 96 px is 0.73x the pixels of 112, and bf16
    "96 px, bf16, 12 epochs": {"train.image_size": 96, "train.amp": "bf16", "epochs": 12},
    "96 px, bf16, 10 epochs": {"train.image_size": 96, "train.amp": "bf16", "epochs": 10},
    "80 px, bf16, 16 epochs": {"train.image_size": 80, "train.amp": "bf16", "epochs": 16},
    # a second head on the metadata's products listed, total volume and weight
    # (studies/recipes/scratch_map.py --grid aux)
    "96 px, bf16, 12 epochs, aux targets x1": {
        "train.image_size": 96,
        "train.amp": "bf16",
        "epochs": 12,
        "train.aux_weight": 1.0,
    },
    "96 px, bf16, 12 epochs, label smoothing 0.1": {
        "train.image_size": 96,
        "train.amp": "bf16",
        "epochs": 12,
        "train.label_smoothing": 0.1,
    },
    # regularised rather than longer: CE with label smoothing, bf16 to afford 9 epochs
    "label smoothing 0.1, bf16, 9 epochs": {"train.label_smoothing": 0.1, "train.amp": "bf16", "epochs": 9},
    # the same budget on a cheaper network: half the channels, ~1/4 of the compute, so 16 epochs
    "half width, 16 epochs": {"model.width": 0.5, "epochs": 16, "train.amp": "off"},
    # the recipe the product had before the study: strong augmentation, MLP head, Adam, no warmup
    "previous recipe": {
        "train.augment": "full",
        "model.head.hidden": [512],
        "model.head.dropout": 0.2,
        "train.optimizer": "adam",
        "train.warmup_epochs": 0,
        "lr": 0.001,
        "model.tta": "none",
    },
}
BARE_LOG = Path("study/bare_loop.jsonl")
COLUMNS = (
    ("test/accuracy", "acc"),
    ("test/single_view/accuracy", "acc 1 view"),
    ("test/balanced_accuracy", "balanced"),
    ("test/rmse", "RMSE"),
    ("test/mae", "MAE"),
    ("test/off_by_one_accuracy", "off-by-one"),
    ("run_seconds", "train s"),
)


def exp_name(variant, seed):
    return f"{variant.replace(', ', '-').replace(' ', '-').replace('(', '').replace(')', '')}-s{seed}"


def queue(seeds, variants):
    for variant in variants:
        for seed in seeds:
            overrides = {**STUDY_BASE, **VARIANTS[variant], "train.seed": seed}
            cmd = ["dvc", "exp", "run", "--queue", "-n", exp_name(variant, seed), *set_flags(overrides)]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)


def bare(seeds):
    BARE_LOG.parent.mkdir(exist_ok=True)
    for seed in seeds:
        out = subprocess.run(
            [sys.executable, "-m", "studies.recipes.bare_loop", "--seed", str(seed)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(result), flush=True)
        with open(BARE_LOG, "a") as f:
            f.write(json.dumps(result) + "\n")


def flat(tree, prefix=""):
    out = {}
    for key, value in (tree or {}).items():
        name = f"{prefix}{key}"
        out.update(flat(value, name + "/") if isinstance(value, dict) else {name: value})
    return out


def experiments(shown):
    """{name: commit} of the finished experiments in `dvc exp show --json` (DVC 3's nested layout)."""
    found = {}

    def walk(node):
        if isinstance(node, dict):
            name, data = node.get("name"), node.get("data")
            # a running experiment shows as rev "workspace" with another run's metrics: skip it
            if name and isinstance(data, dict) and data.get("metrics") and data.get("rev") != "workspace":
                found[name] = data["rev"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(shown)
    return found


def run_metrics(rev):
    """Every metric of one experiment: dvclive's files, read from its commit and the DVC cache
    (only the headline metrics.json is declared, so `dvc exp show` has just test_acc and val_acc)."""
    metrics = {}
    for path in ("dvclive/train/metrics.json", "dvclive/evaluate/metrics.json"):
        try:
            metrics.update(flat(json.loads(dvc.api.read(path, rev=rev))))
        except PathMissingError:  # a commit without a finished run (e.g. the baseline)
            return {}
    return metrics


def mean_spread(values):
    if not values:
        return "-"
    mean = statistics.mean(values)
    spread = (max(values) - min(values)) / 2 if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {spread:.3f}"


def table():
    shown = json.loads(
        subprocess.run(
            ["dvc", "exp", "show", "--all-commits", "--json", "--no-pager"], check=True, capture_output=True, text=True
        ).stdout
    )
    exps = {name: run_metrics(rev) for name, rev in experiments(shown).items() if name.rsplit("-s", 1)[-1].isdigit()}
    lines = [
        "| recipe | seeds | " + " | ".join(label for _, label in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    if BARE_LOG.exists():
        runs = [json.loads(line) for line in BARE_LOG.read_text().splitlines() if line.strip()]
        lines.append(
            f"| bare PyTorch loop | {len(runs)} | {mean_spread([r['test_accuracy'] for r in runs])} | "
            + " | ".join("-" for _ in COLUMNS[1:-1])
            + f" | {mean_spread([r['seconds'] for r in runs])} |"
        )
    for variant in VARIANTS:
        runs = [m for name, m in exps.items() if name.rsplit("-s", 1)[0] == exp_name(variant, 0).rsplit("-s", 1)[0]]
        if not runs:
            continue
        cells = [mean_spread([r[key] for r in runs if key in r]) for key, _ in COLUMNS]
        lines.append(f"| {variant} | {len(runs)} | " + " | ".join(cells) + " |")
    print("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("queue", "bare", "table"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)
    if args.action == "queue":
        queue(args.seeds, args.variants)
    elif args.action == "bare":
        bare(args.seeds)
    else:
        table()


if __name__ == "__main__":
    main()
