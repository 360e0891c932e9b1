"""Named recipes: sets of params overrides that `binsight recipe NAME` turns into one
`dvc exp run -S ...` command, so each is one documented command and queued studies reuse them.

    notebook      the SageMaker notebook's recipe: frozen ImageNet ResNet50 + a new head, CE, Adam
    gpu           the params.yaml defaults (full fine-tuning of an ImageNet ResNet50, lower backbone lr)
    abid-full     all of ABID (run `binsight list s3://aft-vbi-pds/ --out abid/all_bins.json` first):
                  classes 0-5, fetched into raw tar shards, ImageNet ResNet50, tar shards streamed to
                  the GPU, batch 256 (docs/scale.md)
    cpu-scratch   the best from-scratch recipe of the study on real bins (docs/results.md),
                  sized for 2 CPU cores and no downloadable weights (12 bf16 epochs at 96 px; 8 fp32
                  epochs on a CPU without native bf16, which fit the bare loop's time there too)
"""

import argparse
import subprocess

# What every recipe pins about its data: `dvc exp run` applies the last experiment's params to the
# workspace, so a recipe that left these out would inherit another recipe's list or policy.
SUBSET_DATA = {
    "fetch.file_list": "abid/file_list.json",
    "classes.policy": "subset",
    "train.data": "files",
    "fetch.layout": "files",
}

NOTEBOOK = {
    **SUBSET_DATA,
    "model.arch": "resnet50",
    "model.weights": "IMAGENET1K_V1",
    "model.freeze_backbone": True,
    "model.width": 1.0,
    "model.head.hidden": [512],
    "model.head.dropout": 0.2,
    "model.tta": "none",
    "lr": 0.001,
    "batch_size": 64,
    "epochs": 10,
    "train.optimizer": "adam",
    "train.weight_decay": 0.0,
    "train.scheduler": "none",
    "train.warmup_epochs": 0,
    "train.loss": "ce",
    "train.balance": "none",
    "train.ema": 0.0,
    "train.aux_weight": 0.0,
    "train.augment": "none",
    "train.image_size": 224,
    "train.label_smoothing": 0.0,
    "train.patience": 5,
}

# The study's winner (docs/results.md): at the bare loop's wall time, 12 epochs at
# 96 px in bf16 beat 6 epochs at 112 px in fp32. bf16 pays only on a CPU with native bf16; on
# another, `binsight recipe cpu-scratch` runs FP32_EPOCHS instead, which take the same time.
CPU_SCRATCH: dict[str, object] = {
    **SUBSET_DATA,
    "model.arch": "resnet18",
    "model.weights": "none",
    "model.freeze_backbone": False,
    "model.width": 1.0,
    "model.head.hidden": [],
    "model.head.dropout": 0.0,
    "model.tta": "flips",
    "lr": 0.002,
    "batch_size": 32,
    "epochs": 12,
    "train.backbone_lr": None,
    "train.optimizer": "adamw",
    "train.weight_decay": 0.05,
    "train.scheduler": "cosine",
    "train.warmup_epochs": 1,
    # counts as well as ce and makes the better verifier: more right bins accepted at the same false-accept
    # rate (docs/verify.md)
    "train.loss": "ordinal",
    "train.balance": "none",
    "train.ema": 0.0,
    "train.aux_weight": 0.0,
    "train.augment": "flips",
    "train.label_smoothing": 0.0,
    "train.jpeg_draft": True,
    "train.image_size": 96,
    "train.amp": "bf16",
    "train.cache_images": True,
    # With train.data: shards, decode the small pre-resized JPEGs in the training process: on a CPU the
    # compute already uses every core, and loader processes would only compete with it.
    "train.num_workers": 0,
    "train.patience": 100,
}
FP32_EPOCHS = 8

# params.yaml's defaults (tests/test_recipes.py keeps the two equal), written out so that `binsight recipe gpu`
# gives them even after `dvc exp run` has applied another experiment's params to the workspace.
GPU = {
    **SUBSET_DATA,
    "model.arch": "resnet50",
    "model.weights": "imagenet",
    "model.freeze_backbone": False,
    "model.width": 1.0,
    "model.head.hidden": [],
    "model.head.dropout": 0.2,
    "model.tta": "flips",
    "lr": 0.001,
    "batch_size": 64,
    "epochs": 15,
    "train.backbone_lr": 0.0001,
    "train.optimizer": "adamw",
    "train.weight_decay": 0.05,
    "train.scheduler": "cosine",
    "train.warmup_epochs": 1,
    "train.loss": "neighbour",
    "train.neighbour_weight": 0.2,
    "train.balance": "none",
    "train.ema": 0.0,
    "train.aux_weight": 0.0,
    "train.augment": "flips",
    "train.label_smoothing": 0.0,
    "train.jpeg_draft": True,
    "train.image_size": 224,
    "train.amp": "auto",
    "train.patience": 5,
}

# All of ABID (~535k bins) on one or more GPUs: the anchors' classes 0-5, ImageNet ResNet50 fine-tuned,
# streamed from tar shards. Needs the list first: `binsight list s3://aft-vbi-pds/ --out abid/all_bins.json`.
# Batch 256 is where one H200 runs ResNet50 fastest (docs/scale.md); the lrs are the gpu recipe's x2
# (square-root scaling for 4x the batch, AdamW).
ABID_FULL = {
    **GPU,
    "fetch.file_list": "abid/all_bins.json",
    "classes.policy": "anchors",
    "fetch.layout": "shards",  # raw tar shards: DVC tracks ~535 files, not ~1.07M (docs/scale.md)
    "train.data": "shards",
    "batch_size": 256,
    "lr": 0.002,
    "train.backbone_lr": 0.0002,
    "epochs": 10,
    "train.patience": 3,
    "train.num_workers": 12,
    "train.cache_images": False,  # ~80 GB at 224 px: the loader workers decode the pre-resized shards instead
}

RECIPES = {"notebook": NOTEBOOK, "gpu": GPU, "cpu-scratch": CPU_SCRATCH, "abid-full": ABID_FULL}


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


def overrides(name, native_bf16=None):
    """The recipe's overrides on this machine: cpu-scratch trades its bf16 epochs for FP32_EPOCHS
    where the CPU has no native bf16 (autocast would then run in fp32 anyway)."""
    recipe = dict(RECIPES[name])
    if name == "cpu-scratch":
        if native_bf16 is None:
            from binsight.train.loops import cpu_has_bf16

            native_bf16 = cpu_has_bf16()
        if not native_bf16:
            recipe["epochs"] = FP32_EPOCHS
    return recipe


def main(argv: list[str] | None = None) -> int:
    """`binsight recipe NAME`: run (or queue, or print) `dvc exp run -n NAME -S ...` for a recipe."""
    parser = argparse.ArgumentParser(
        prog="binsight recipe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", choices=sorted(RECIPES), help="which recipe")
    parser.add_argument("--queue", action="store_true", help="queue it (`dvc queue start` runs it)")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    parser.add_argument(
        "-n",
        "--name",
        dest="exp_name",
        help="the experiment's name (default: the recipe's; DVC refuses a name that is taken, "
        "so give each seed of a study its own)",
    )
    parser.add_argument(
        "-S",
        "--set-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="more overrides on top of the recipe, as for `dvc exp run -S`",
    )
    args = parser.parse_args(argv)
    cmd = [
        "dvc",
        "exp",
        "run",
        *(["--queue"] if args.queue else []),
        "-n",
        args.exp_name or args.name,
        *set_flags(overrides(args.name)),
        *[flag for kv in args.set_param for flag in ("-S", kv)],
    ]
    print(" ".join(cmd), flush=True)
    if args.dry_run:
        return 0
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    raise SystemExit(main())
