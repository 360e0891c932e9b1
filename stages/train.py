"""Stage `train`: fit the counting model on data/split/train.csv, pick the best epoch on val.

    python -m stages.train                                # what `dvc repro train` runs
    torchrun --nproc_per_node=4 -m stages.train           # DDP by hand (or set train.distributed)

Outputs: models/model.pt (best val accuracy: weights + what rebuilds them), models/checkpoint.pt
(last epoch, to resume a killed run), dvclive/train/ (params, per-epoch metrics and plots).
The steps are in binsight/train/training_run.py.
"""

import argparse
import os
import sys

from binsight.data.split_files import read_split
from binsight.errors import ConfigError, one_line_errors
from binsight.model.aux_targets import read_aux_targets
from binsight.params import ModelParams, check_train_with_model, load_params, section, train_section
from binsight.train.run_paths import Paths
from binsight.tune.pruning import TrialLink


def parse_args(argv):
    defaults = Paths()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", default=defaults.split, help="folder with train.csv and val.csv")
    parser.add_argument("--images", default=defaults.images)
    parser.add_argument(
        "--metadata",
        default=defaults.metadata,
        help="folder with <id>.json, read for the metadata targets when train.aux_weight > 0 (default: %(default)s)",
    )
    parser.add_argument("--model", default=defaults.model, help="best model (default: %(default)s)")
    parser.add_argument("--checkpoint", default=defaults.checkpoint, help="resumable state (default: %(default)s)")
    parser.add_argument("--live", default=defaults.live, help="dvclive folder (default: %(default)s)")
    parser.add_argument(
        "--features",
        default=defaults.features,
        help="featurize's cached embeddings, used when valid and train.use_features is auto (default: %(default)s)",
    )
    return parser.parse_args(argv)


def relaunch_distributed(dist_params, argv):
    """Several processes asked for and not under torchrun yet: start torchrun in our place."""
    if dist_params.nnodes > 1:
        raise ConfigError(
            f"train.distributed.nnodes={dist_params.nnodes}: start `torchrun "
            f"--nnodes={dist_params.nnodes} --nproc_per_node={dist_params.nproc_per_node} "
            "--rdzv-backend=c10d --rdzv-endpoint=HOST:29400 -m stages.train` on every node"
        )
    if dist_params.nproc_per_node > 1:
        from binsight.train.distributed import torchrun_command

        cmd = torchrun_command(dist_params.nproc_per_node, "stages.train", argv)
        print(f"train: launching {dist_params.nproc_per_node} processes: {' '.join(cmd[1:])}", flush=True)
        os.execv(sys.executable, cmd)


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    params = load_params(args.params)
    model_params = section(params, ModelParams)
    train_params = check_train_with_model(model_params, train_section(params))
    # an empty split, a missing image or (with train.aux_weight) missing metadata too; training reads them again
    train_rows = read_split(args.split, "train", args.images)
    read_split(args.split, "val", args.images)
    if train_params.aux_weight:
        read_aux_targets(train_rows, args.metadata, args.images)
    # torch takes seconds to import: only now, so a bad param or path is reported at once
    from binsight.train.distributed import init_world, under_torchrun
    from binsight.train.training_run import fit

    if not under_torchrun():
        relaunch_distributed(train_params.distributed, argv)
    world = init_world(train_params.distributed.backend)
    paths = Paths(
        split=args.split,
        images=args.images,
        metadata=args.metadata,
        model=args.model,
        checkpoint=args.checkpoint,
        live=args.live,
        features=args.features,
    )
    # set by `binsight tune` for its trials: their pruner hears every epoch's val accuracy
    reporter = TrialLink.from_env() if world.is_main and not world.enabled else None
    try:
        fit(paths, model_params, train_params, world, reporter)
    finally:
        world.close()


if __name__ == "__main__":
    main()
