import os
import shutil
from pathlib import Path

import pytest

from binsight.testing.bucket import build_bucket
from binsight.testing.dataset import SMALL_MODEL, SMALL_TRAIN
from binsight.testing.project import dvc, git_commit, make_project
from binsight.testing.s3server import MotoS3
from binsight.testing.units import unit_of, unit_of_module, unit_rank


@pytest.fixture(scope="session")
def s3_server():
    with MotoS3() as server:
        yield server


@pytest.fixture(scope="session")
def abid_bucket(s3_server):
    """The ABID bucket on the local S3 server: 80 generated bins per class, planted faults, real samples."""
    return build_bucket(s3_server.url, n_per_class=80)


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory, abid_bucket):
    """A project copy that ran the whole pipeline (`dvc repro`) on the generated bins with a small
    resnet18 (64 px, no pretrained weights). Read-only: copy it with `clone_project` to change it."""
    project = make_project(tmp_path_factory.mktemp("trained") / "proj", commit=False, params={
        "fetch": {"endpoint_url": abid_bucket.url}, "model": SMALL_MODEL, "train": SMALL_TRAIN})
    abid_bucket.write_file_list(project / "file_list.json", abid_bucket.clean)
    git_commit(project, "small pipeline")
    dvc(project, "repro")
    git_commit(project, "repro")
    return project


@pytest.fixture
def clone_project(tmp_path):
    def clone(src):
        dst = tmp_path / "clone"
        shutil.copytree(src, dst, symlinks=True)
        return dst
    return clone


# `make test` runs on several workers (pytest-xdist). Each worker builds the session and module
# fixtures its tests use, so the tests that share an expensive one go to a worker together as one
# unit (binsight/testing/units.py says which, and how that changes with many workers). Each worker
# gets its share of the cores, so N workers' torch threads do not fight over them.
UNITS = unit_of_module(Path(__file__).parent.glob("test_*.py"))

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    THREADS = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(THREADS)  # the stages the tests start, and this worker's torch
    import torch
    torch.set_num_threads(THREADS)


def pytest_collection_modifyitems(items):
    """The units that share a built project first: they are the longest, so a worker that starts
    them last would leave the other workers idle at the end."""
    items.sort(key=lambda item: unit_rank(item.nodeid, UNITS))  # stable: the order within a unit stays


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling
    config.option.loadscopereorder = False  # keep the order above, not "most tests first"
    workers = len(config.option.tx or [])

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return unit_of(nodeid, UNITS, workers)

    return SharedFixtureScheduling(config, log)
