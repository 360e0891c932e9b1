"""Named recipes: sets of params overrides that `binsight recipe NAME` turns into one
`dvc exp run -S ...` command, so each is one documented command and queued studies reuse them.

    notebook      the SageMaker notebook's recipe: frozen ImageNet ResNet50 + a new head, CE, Adam
    gpu           the params.yaml defaults (full fine-tuning of an ImageNet ResNet50, lower backbone lr)
    cpu-scratch   the best from-scratch recipe of the study on real bins (README "Results on real bins"),
                  sized for 2 CPU cores and no downloadable weights: a half-width ResNet18 at 112 px for
                  16 fp32 epochs, in the time the bare loop spends on 6 epochs of the full-width one
"""
import argparse
import subprocess

NOTEBOOK = {
    "model.arch": "resnet50", "model.weights": "IMAGENET1K_V1", "model.freeze_backbone": True, "model.width": 1.0,
    "model.head.hidden": [512], "model.head.dropout": 0.2, "model.tta": "none",
    "lr": 0.001, "batch_size": 64, "epochs": 10,
    "train.optimizer": "adam", "train.weight_decay": 0.0, "train.scheduler": "none", "train.warmup_epochs": 0,
    "train.loss": "ce", "train.balance": "none", "train.ema": 0.0, "train.augment": "none",
    "train.image_size": 224, "train.label_smoothing": 0.0,
}

# The study's winner (README "Results on real bins"): a ResNet18 with half the channels costs about
# a quarter of the compute, so at the bare loop's wall time it trains 16 epochs at 112 px instead of 6.
CPU_SCRATCH = {
    "model.arch": "resnet18", "model.weights": "none", "model.freeze_backbone": False, "model.width": 0.5,
    "model.head.hidden": [], "model.head.dropout": 0.0, "model.tta": "flips",
    "lr": 0.002, "batch_size": 32, "epochs": 16, "train.backbone_lr": None,
    "train.optimizer": "adamw", "train.weight_decay": 0.05, "train.scheduler": "cosine", "train.warmup_epochs": 1,
    "train.loss": "ce", "train.balance": "none", "train.ema": 0.0, "train.augment": "flips",
    "train.image_size": 112, "train.amp": "off", "train.cache_images": True, "train.patience": 100,
}

RECIPES = {"notebook": NOTEBOOK, "gpu": {}, "cpu-scratch": CPU_SCRATCH}


def set_flags(overrides):
    """{key: value} -> ["-S", "key=value", ...] in the form `dvc exp run` parses (YAML values)."""
    flags = []
    for key, value in overrides.items():
        if value is None:
            text = "null"
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = "[" + ",".join(str(v) for v in value) + "]"
        else:
            text = str(value)
        flags += ["-S", f"{key}={text}"]
    return flags


def main(argv=None):
    """`binsight recipe NAME`: run (or queue, or print) `dvc exp run -n NAME -S ...` for a recipe."""
    parser = argparse.ArgumentParser(prog="binsight recipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(RECIPES), help="which recipe")
    parser.add_argument("--queue", action="store_true", help="queue it (`dvc queue start` runs it)")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    parser.add_argument("-n", "--name", dest="exp_name",
                        help="the experiment's name (default: the recipe's; DVC refuses a name that is taken, "
                             "so give each seed of a study its own)")
    parser.add_argument("-S", "--set-param", action="append", default=[], metavar="KEY=VALUE",
                        help="more overrides on top of the recipe, as for `dvc exp run -S`")
    args = parser.parse_args(argv)
    cmd = ["dvc", "exp", "run", *(["--queue"] if args.queue else []), "-n", args.exp_name or args.name,
           *set_flags(RECIPES[args.name]), *[flag for kv in args.set_param for flag in ("-S", kv)]]
    print(" ".join(cmd), flush=True)
    if args.dry_run:
        return 0
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    raise SystemExit(main())
