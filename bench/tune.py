"""Benchmark: tuning trials per hour, one worker against `--workers N`, side by side in one run.

Builds one small DVC project on generated bins served by a local S3 server (fetch -> split ->
featurize -> train -> evaluate, frozen backbone, so every trial fits the head on cached
embeddings), then runs `binsight tune` twice on it with the same trial count and search space:
`--workers 1` and `--workers N` (pruner off, so both sides do the same work). Prints each side's
wall time, trials per hour and the ratio.

    python -m bench.tune [--trials 6] [--workers 2] [--bins-per-class 80] [--epochs 10]
"""

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tests.support.bucket import build_bucket
from tests.support.project import dvc, git_commit, make_project, run
from tests.support.s3server import MotoS3
from tests.support.tuning import FROZEN_MODEL, FROZEN_TRAIN


def build(root, s3_url, bins_per_class, epochs, size):
    """A committed project whose pipeline has run once on a bucket at `s3_url`, tuning lr and batch_size."""
    bucket = build_bucket(s3_url, n_per_class=bins_per_class)
    project = make_project(
        root / "proj",
        commit=False,
        params={
            "fetch": {"endpoint_url": bucket.url},
            "model": {**FROZEN_MODEL, "width": 1.0},  # the whole resnet18, as docs/benchmarks.md measured it
            "train": {**FROZEN_TRAIN, "image_size": size},
            "epochs": epochs,
        },
    )
    bucket.write_file_list(project / "file_list.json", bucket.clean)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tune"].update(
        pruner="none", space={"lr": {"low": 0.001, "high": 0.1, "log": True}, "batch_size": [16, 32, 64]}
    )
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git_commit(project, "bench project")
    dvc(project, "repro", gpu=True)
    git_commit(project, "repro")
    return project


def tune(project, trials, workers):
    """One `binsight tune` run -> (wall seconds, per-trial seconds)."""
    study = f"w{workers}"
    start = time.perf_counter()
    run(
        [
            sys.executable,
            "-m",
            "binsight.tune.bayes_search",
            "--trials",
            str(trials),
            "--workers",
            str(workers),
            "--study",
            study,
        ],
        project,
        timeout=7200,
        gpu=True,
    )
    wall = time.perf_counter() - start
    rows = list(csv.DictReader(open(project / "tune" / f"{study}.csv")))
    if sum(r["state"] == "complete" for r in rows) != trials:
        raise SystemExit(f"bench/tune: not every trial finished: {rows}")
    return wall, [float(r["seconds"]) for r in rows]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6, help="trials per side (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the parallel side (default: %(default)s)")
    parser.add_argument(
        "--bins-per-class", type=int, default=80, help="generated bins per count (default: %(default)s)"
    )
    parser.add_argument("--epochs", type=int, default=10, help="head-training epochs per trial (default: %(default)s)")
    parser.add_argument("--size", type=int, default=64, help="image size in px (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, MotoS3() as server:
        start = time.perf_counter()
        project = build(Path(tmp), server.url, args.bins_per_class, args.epochs, args.size)
        print(
            f"bench/tune: {5 * args.bins_per_class} generated bins, frozen resnet18 at {args.size} px, cached "
            f"embeddings, {args.epochs} epochs a trial, {args.trials} trials a side, {os.cpu_count()} CPUs "
            f"(project built in {time.perf_counter() - start:.0f}s)",
            flush=True,
        )
        sides = {}
        for workers in (1, args.workers):
            wall, seconds = tune(project, args.trials, workers)
            sides[workers] = wall
            print(
                f"--workers {workers}: {wall:6.1f}s for {args.trials} trials = {3600 * args.trials / wall:6.0f} "
                f"trials/hour (median trial {statistics.median(seconds):.1f}s)",
                flush=True,
            )
        print(f"speed-up of --workers {args.workers}: {sides[1] / sides[args.workers]:.2f}x trials/hour", flush=True)


if __name__ == "__main__":
    main()
