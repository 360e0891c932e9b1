"""The frozen-backbone project's params (tests/conftest.py builds it: `frozen_project`; bench/tune.py
uses them too)."""

# tta: none, so each experiment's evaluate is one forward pass over the test split, not five (the
# trained project of tests/conftest.py keeps params.yaml's flips TTA)
FROZEN_MODEL = {
    "arch": "resnet18",
    "weights": "none",
    "freeze_backbone": True,
    "tta": "none",
    "head": {"hidden": [], "dropout": 0.0},
}
FROZEN_TRAIN = {"epochs": 2, "batch_size": 16, "image_size": 64, "num_workers": 0, "lr": 0.01, "augment": "none"}
