"""Benchmark: head-training epochs on cached embeddings vs. on images (frozen backbone, same data).

Runs the real code in this one process, side by side: `stages.featurize` once, then the train
stage's `fit` twice on the same generated bins with the same params, once with
train.use_features: auto (the head on data/features) and once with never (every image decoded,
resized and pushed through the frozen backbone each epoch). The epoch time is what fit spends in
train_one_epoch + evaluate_split (the train and val passes), so model building and logging are
left out of both sides. Prints both wall times and the ratio; a tuning trial pays the featurize
cost never (DVC's cache), a first run once.

    python -m bench.features [--epochs 3] [--bins 200] [--size 224] [--arch resnet18]
"""

import argparse
import contextlib
import io
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

import binsight.train.training_run as training
import stages.train as train_stage
from binsight.train.loops import evaluate_split, train_one_epoch
from stages import featurize
from tests.support.dataset import write_dataset

REPO = Path(__file__).resolve().parents[1]


class EpochClock:
    """Wall time spent inside the train stage's epoch functions, per epoch (train + val pass)."""

    def __init__(self):
        self.per_epoch = []

    @property
    def seconds(self):
        return sum(self.per_epoch)

    @property
    def median(self):
        return statistics.median(self.per_epoch) if self.per_epoch else 0.0

    def timed(self, fn, starts_epoch):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if starts_epoch or not self.per_epoch:
                    self.per_epoch.append(0.0)
                self.per_epoch[-1] += time.perf_counter() - start

        return wrapper


def fit(root, params_file, mode, quiet):
    """One run of the train stage; -> (EpochClock, whole-run seconds, its log)."""
    clock = EpochClock()
    # the names that binsight.train.training_run.fit (the train stage's loop) calls
    training.train_one_epoch = clock.timed(train_one_epoch, True)
    training.evaluate_split = clock.timed(evaluate_split, False)
    log = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log) if quiet else contextlib.nullcontext():
            train_stage.main(
                [
                    "--params",
                    str(params_file),
                    "--split",
                    str(root / "data/split"),
                    "--images",
                    str(root / "data/raw/images"),
                    "--features",
                    str(root / "data/features"),
                    "--model",
                    str(root / f"models/{mode}.pt"),
                    "--checkpoint",
                    str(root / f"models/{mode}.ckpt"),
                    "--live",
                    str(root / f"dvclive/{mode}"),
                ]
            )
    finally:
        training.train_one_epoch, training.evaluate_split = train_one_epoch, evaluate_split
    return clock, time.perf_counter() - start, log.getvalue()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="head-training epochs per side (default: %(default)s)")
    parser.add_argument("--bins", type=int, default=200, help="generated bins, 60/20/20 split (default: %(default)s)")
    parser.add_argument("--size", type=int, default=224, help="image size in px (default: %(default)s)")
    parser.add_argument("--arch", default="resnet18", help="frozen backbone (default: %(default)s)")
    parser.add_argument("--weights", default="none", help="none (random init: same cost) or imagenet")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="data loader processes for the image side (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the train stage's own log")
    args = parser.parse_args()
    logging.getLogger("dvclive").setLevel(logging.ERROR)  # "can't save experiment without a Git repo": by design

    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        # Run outside any git/DVC repo: dvclive would otherwise save each fit as an experiment of
        # the repo it finds from the working directory.
        root = Path(tmp)
        splits = write_dataset(root, n_per_class=max(1, args.bins // 5), seed=5)
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["model"].update(arch=args.arch, weights=args.weights, freeze_backbone=True)
        params.update(epochs=args.epochs, batch_size=args.batch_size)  # top level, as `dvc exp run -S` sets them
        params["train"].update(
            image_size=args.size,
            augment="none",
            num_workers=args.workers,
            patience=args.epochs,
            resume=False,
            profile=False,
        )
        files = {}
        for mode in ("auto", "never"):
            params["train"]["use_features"] = mode
            files[mode] = root / f"params_{mode}.yaml"
            files[mode].write_text(yaml.safe_dump(params, sort_keys=False))
        n = {name: len(rows) for name, rows in splits.items()}
        print(
            f"bench/features: frozen {args.arch} (weights {args.weights}) at {args.size} px, {sum(n.values())} "
            f"generated bins ({n['train']} train / {n['val']} val / {n['test']} test), batch {args.batch_size}, "
            f"{args.epochs} epochs, {args.workers} loader workers, {os.cpu_count()} CPUs, torch threads "
            f"{__import__('torch').get_num_threads()}",
            flush=True,
        )

        start = time.perf_counter()
        log = io.StringIO()
        with contextlib.redirect_stdout(log) if not args.verbose else contextlib.nullcontext():
            featurize.main(
                [
                    "--params",
                    str(files["auto"]),
                    "--split",
                    str(root / "data/split"),
                    "--images",
                    str(root / "data/raw/images"),
                    "--out",
                    str(root / "data/features"),
                ]
            )
        t_featurize = time.perf_counter() - start
        print(f"featurize (once, all {sum(n.values())} images): {t_featurize:.2f}s", flush=True)

        runs = {}
        for mode in ("auto", "never"):
            clock, total, out = fit(root, files[mode], mode, quiet=not args.verbose)
            path = "cached embeddings" if mode == "auto" else "images"
            expected = "train: head only on cached" if mode == "auto" else "train: images;"
            if not args.verbose and expected not in out:
                raise SystemExit(f"bench/features: the {path} run did not take that path:\n{out}")
            if len(clock.per_epoch) != args.epochs:  # the clock missed the loop: no ratio to print
                raise SystemExit(
                    f"bench/features: timed {len(clock.per_epoch)} of {args.epochs} epochs on {path}; "
                    "the train stage's loop functions have moved (see fit() here)"
                )
            runs[mode] = clock
            print(
                f"{len(clock.per_epoch)} epochs on {path:<17}: {clock.seconds:8.3f}s "
                f"(median {clock.median * 1000:.1f} ms/epoch; whole train stage {total:.1f}s)",
                flush=True,
            )
        ratio = runs["never"].seconds / max(runs["auto"].seconds, 1e-9)
        median_ratio = runs["never"].median / max(runs["auto"].median, 1e-9)
        first = runs["never"].seconds / (runs["auto"].seconds + t_featurize)
        print(
            f"speed-up of {args.epochs} epochs: {ratio:.0f}x (median epoch {median_ratio:.0f}x; target >= 20x); "
            f"a first run that also pays featurize once: {first:.1f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
