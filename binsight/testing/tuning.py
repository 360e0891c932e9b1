"""The frozen-backbone project's params (tests/conftest.py builds it: `frozen_project`) and helpers
of the featurize, queue and tune tests."""
import shutil

# tta: none, so each experiment's evaluate is one forward pass over the test split, not five (the
# trained project of tests/conftest.py keeps params.yaml's flips TTA)
FROZEN_MODEL = {"arch": "resnet18", "weights": "none", "freeze_backbone": True, "tta": "none",
                "head": {"hidden": [], "dropout": 0.0}}
FROZEN_TRAIN = {"epochs": 2, "batch_size": 16, "image_size": 64, "num_workers": 0, "lr": 0.01, "augment": "none"}


def clone(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    return dst


def stages_run(output):
    """Names of the stages a `dvc repro` / `dvc exp run` log says it ran."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]
