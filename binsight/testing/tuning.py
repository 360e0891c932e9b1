"""A small DVC project with a frozen backbone, fetched and reproduced once per test session, for
the featurize, queue and tune tests (the cached-embedding path makes each experiment seconds)."""
import shutil

import pytest

from binsight.testing.project import dvc, git_commit, make_project

# tta: none, so each experiment's evaluate is one forward pass over the test split, not five (the
# trained project of tests/conftest.py keeps params.yaml's flips TTA)
FROZEN_MODEL = {"arch": "resnet18", "weights": "none", "freeze_backbone": True, "tta": "none",
                "head": {"hidden": [], "dropout": 0.0}}
FROZEN_TRAIN = {"epochs": 2, "batch_size": 16, "image_size": 64, "num_workers": 0, "lr": 0.01, "augment": "none"}

_built = {}  # the project is shared by every module that imports the fixture


@pytest.fixture(scope="session")
def frozen_project(tmp_path_factory, abid_bucket):
    """Read-only: fetch (80 generated bins per class) -> split -> featurize -> train -> evaluate,
    committed. Copy it with `clone_project` to change it."""
    if "project" not in _built:
        project = make_project(tmp_path_factory.mktemp("frozen") / "proj", commit=False, params={
            "fetch": {"endpoint_url": abid_bucket.url},
            "model": FROZEN_MODEL, "train": FROZEN_TRAIN})
        abid_bucket.write_file_list(project / "file_list.json", abid_bucket.clean)
        git_commit(project, "frozen pipeline")
        dvc(project, "repro")
        git_commit(project, "repro")
        _built["project"] = project
    return _built["project"]


def clone(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    return dst


def stages_run(output):
    """Names of the stages a `dvc repro` / `dvc exp run` log says it ran."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]
