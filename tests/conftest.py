import os
import shutil
from pathlib import Path

import pytest

from binsight.testing.bucket import build_bucket
from binsight.testing.dataset import SMALL_MODEL, SMALL_TRAIN
from binsight.testing.project import dvc, git_commit, make_project
from binsight.testing.s3server import MotoS3


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
# fixtures its tests use, so the tests that share an expensive one must run on one worker: a test
# module goes to a worker whole, and all modules that use trained_project (or frozen_project) go
# to the same worker as one unit. Each worker gets its share of the cores, so N workers' torch
# threads do not fight over them.
SHARED_FIXTURES = ("frozen_project", "trained_project")  # longest first
TESTS = Path(__file__).parent
UNIT_OF_MODULE = {f"tests/{p.name}": next((f for f in SHARED_FIXTURES if f in p.read_text()), f"tests/{p.name}")
                  for p in TESTS.glob("test_*.py")}

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    THREADS = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(THREADS)  # the stages the tests start, and this worker's torch
    import torch
    torch.set_num_threads(THREADS)


def pytest_collection_modifyitems(items):
    """The units that share a built project first: they are the longest, so a worker that starts
    them last would leave the other workers idle at the end."""
    def unit_rank(item):
        unit = UNIT_OF_MODULE.get(item.nodeid.split("::", 1)[0])
        return SHARED_FIXTURES.index(unit) if unit in SHARED_FIXTURES else len(SHARED_FIXTURES)
    items.sort(key=unit_rank)  # stable: the order within a unit stays


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling
    config.option.loadscopereorder = False  # keep the order above, not "most tests first"

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            module = nodeid.split("::", 1)[0]
            return UNIT_OF_MODULE.get(module, module)

    return SharedFixtureScheduling(config, log)
