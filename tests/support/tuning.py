"""The frozen-backbone project's params (tests/conftest.py builds it: `frozen_project`; bench/tune.py
uses them too)."""

# tta: none, so each experiment's evaluate is one forward pass over the test split, not five (the
# trained project of tests/conftest.py keeps params.yaml's flips TTA). Half the width: every experiment
# writes the whole model twice (models/trained.pt, then models/model.pt with its calibration), caches both
# and copies them into its temp folder, 11 MB a file instead of 45.
FROZEN_MODEL = {
    "arch": "resnet18",
    "weights": "none",
    "freeze_backbone": True,
    "width": 0.5,
    "tta": "none",
    "head": {"hidden": [], "dropout": 0.0},
}
FROZEN_TRAIN = {"epochs": 2, "batch_size": 16, "image_size": 64, "num_workers": 0, "lr": 0.01, "augment": "none"}
