import os

import pytest

from binsight.testing.bucket import build_bucket
from binsight.testing.dataset import SMALL_MODEL, SMALL_TRAIN
from binsight.testing.project import clone, dvc, env, git_commit, make_project
from binsight.testing.s3server import MotoS3
from binsight.testing.shared import built_once
from binsight.testing.tuning import FROZEN_MODEL, FROZEN_TRAIN
from binsight.testing.units import unit_of, unit_rank
from binsight.testing.warm_python import started as warm_python_started


@pytest.fixture(scope="session", autouse=True)
def warm_python(tmp_path_factory):
    """This worker's warm interpreter for the stages its tests' dvc commands start (2.5-3.5 CPU-seconds
    of imports and teardown each, 0.1 s warm): binsight/testing/warm_python.py says how and what stays cold.
    BINSIGHT_WARM=0 runs every stage cold."""
    if os.environ.get("BINSIGHT_WARM") == "0":
        yield {}
        return
    with warm_python_started(tmp_path_factory.mktemp("warm"), env()) as variables:
        os.environ.update(variables)
        yield variables
        for name in variables:
            os.environ.pop(name, None)


@pytest.fixture(scope="session")
def s3_server():
    with MotoS3() as server:
        yield server


@pytest.fixture(scope="session")
def abid_bucket(s3_server):
    """The ABID bucket on the local S3 server: 80 generated bins per class, planted faults, real samples."""
    return build_bucket(s3_server.url, n_per_class=80)


def reproduced(request, model, train, cold):
    """-> build(path): a project with these model and train params, its file list the bucket's clean
    bins, committed after `dvc repro`. `cold`: every stage starts in a new interpreter, as a user's
    would, not forked from this worker's warm one. The bucket is built only on the worker that builds
    this, and `fetch.endpoint_url` names that worker's S3 server: a test that changes what fetch
    depends on in a copy must point it at its own (`abid_bucket.url`)."""
    def build(project):
        bucket = request.getfixturevalue("abid_bucket")
        make_project(project, commit=False, params={"fetch": {"endpoint_url": bucket.url}, "model": model, "train": train})
        bucket.write_file_list(project / "file_list.json", bucket.clean)
        git_commit(project, "pipeline")
        dvc(project, "repro", **({"BINSIGHT_WARM_PYTHON": ""} if cold else {}))
        git_commit(project, "repro")
    return build


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory, request):
    """A project that ran the whole pipeline (`dvc repro`) on the generated bins with a small
    resnet18 (64 px, no pretrained weights), built once per run, every stage cold (the featurize
    tests start the frozen backbone's featurize cold). Read-only: copy it with `clone_project` to
    change it."""
    return built_once(tmp_path_factory, "trained", reproduced(request, SMALL_MODEL, SMALL_TRAIN, cold=True))


@pytest.fixture(scope="session")
def frozen_project(tmp_path_factory, request):
    """A project with a frozen backbone: fetch (80 generated bins per class) -> split -> featurize ->
    train -> evaluate, committed, built once per run, for the featurize, queue and tune tests (on
    cached embeddings each experiment takes seconds). Read-only: copy it with `clone_project`."""
    return built_once(tmp_path_factory, "frozen", reproduced(request, FROZEN_MODEL, FROZEN_TRAIN, cold=False))


@pytest.fixture
def clone_project(tmp_path):
    """clone_project(src) -> a copy of the built project `src` in this test's temp folder."""
    return lambda src: clone(src, tmp_path / "clone")


# `make test` runs on several workers (pytest-xdist). The shared projects above are built once per
# run, whichever worker asks first, so the scheduler below is free to spread the tests that use
# them; it sends the longest units first (binsight/testing/units.py says which and why). Each worker
# gets its share of the cores, so N workers' torch threads do not fight over them.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    THREADS = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(THREADS)  # the stages the tests start, and this worker's torch
    import torch
    torch.set_num_threads(THREADS)


def pytest_collection_modifyitems(items):
    """The longest units first, so that no worker starts a long one when the others are about to
    finish; within a unit the order stays (a stable sort)."""
    items.sort(key=lambda item: unit_rank(item.nodeid))


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling
    config.option.loadscopereorder = False  # keep the order above, not "most tests first"

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return unit_of(nodeid)

    return UnitScheduling(config, log)
