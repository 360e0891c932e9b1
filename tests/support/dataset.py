"""A fetched-and-split dataset written straight to disk, for tests of the stages after fetch."""

from pathlib import Path

from binsight.data.stratified_split import stratified_split
from tests.support.synthetic import make_bins

# Half the channels (model.width: 0.5): the stage tests train about a quarter of the compute and still
# count well above chance; width 1 is built by the frozen tests.
SMALL_MODEL = {
    "arch": "resnet18",
    "weights": "none",
    "freeze_backbone": False,
    "width": 0.5,
    "head": {"hidden": [], "dropout": 0.0},
}
# From scratch, so the backbone learns at the head's lr (backbone_lr: null), and one loss-agnostic setup
# whatever params.yaml's defaults are. 5 epochs are enough for the shared trained project (tests/conftest.py)
# to count most of its test bins right; the tests need better than chance.
SMALL_TRAIN = {"epochs": 5, "batch_size": 16, "image_size": 64, "num_workers": 0, "lr": 0.001, "backbone_lr": None}


def write_dataset(project, n_per_class=8, seed=0, classes=(1, 2, 3, 4, 5)):
    """Images in data/raw/images, metadata in data/raw/metadata and split CSVs in data/split, as fetch +
    split would leave them."""
    project = Path(project)
    images, metadata = project / "data/raw/images", project / "data/raw/metadata"
    images.mkdir(parents=True, exist_ok=True)
    metadata.mkdir(parents=True, exist_ok=True)
    labels = {}
    for bin_id, (label, jpeg, meta) in make_bins(n_per_class, seed=seed, classes=classes).items():
        (images / f"{bin_id}.jpg").write_bytes(jpeg)
        (metadata / f"{bin_id}.json").write_bytes(meta)
        labels[bin_id] = label
    splits = stratified_split(labels.items(), {"train": 0.6, "val": 0.2, "test": 0.2}, seed=1)
    (project / "data/split").mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        lines = ["id,label"] + [f"{i},{y}" for i, y in rows]
        (project / f"data/split/{name}.csv").write_text("\n".join(lines) + "\n")
    return splits
