import itertools
import os

# The test process runs stages in-process and compares their numbers exactly, so it stays on the CPU:
# the GPUs are hidden before torch loads. Subprocesses started with env(gpu=True) (tests/test_gpu.py)
# get the caller's setting back (tests/support/project.py: CALLER_GPUS); pytest-xdist's workers inherit both.
os.environ.setdefault("BINSIGHT_TEST_CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "all"))
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["DVC_NO_ANALYTICS"] = "1"  # dvclive, in-process too

import pytest  # noqa: E402

from tests.support.bucket import build_bucket  # noqa: E402
from tests.support.dataset import SMALL_MODEL, SMALL_TRAIN  # noqa: E402
from tests.support.project import clone, dvc, git_commit, make_project  # noqa: E402
from tests.support.s3server import MotoS3  # noqa: E402
from tests.support.shared import built_once  # noqa: E402
from tests.support.tuning import FROZEN_MODEL, FROZEN_TRAIN  # noqa: E402

# Under pytest-xdist each worker gets its share of the cores, so the workers' torch threads (and
# those of the stages they start) do not fight over them.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    THREADS = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    import torch

    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def s3_server():
    with MotoS3() as server:
        yield server


@pytest.fixture(scope="session")
def abid_bucket(s3_server):
    """The ABID bucket on the local S3 server: 80 generated bins per class, planted faults, real samples."""
    return build_bucket(s3_server.url, n_per_class=80)


def reproduced(request, model, train):
    """-> build(path): a project with these model and train params, its file list the bucket's clean
    bins, committed after `dvc repro` (every stage a new interpreter, as a user's). The bucket is built
    only on the worker that builds this, and `fetch.endpoint_url` names that worker's S3 server: a
    test that changes what fetch depends on in a copy must point it at its own (`abid_bucket.url`)."""

    def build(project):
        bucket = request.getfixturevalue("abid_bucket")
        params = {"fetch": {"endpoint_url": bucket.url}, "model": model, "train": train}
        make_project(project, commit=False, params=params)
        bucket.write_file_list(project / "file_list.json", bucket.clean)
        git_commit(project, "pipeline")
        dvc(project, "repro")
        git_commit(project, "repro")

    return build


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory, request):
    """A project that ran the whole pipeline (`dvc repro`) on the generated bins with a small
    resnet18 (64 px, no pretrained weights), built once per run. Read-only: copy it with
    `clone_project` to change it."""
    return built_once(tmp_path_factory, "trained", reproduced(request, SMALL_MODEL, SMALL_TRAIN))


@pytest.fixture(scope="session")
def frozen_project(tmp_path_factory, request):
    """A project with a frozen backbone: fetch (80 generated bins per class) -> split -> featurize ->
    train -> evaluate, committed, built once per run, for the featurize, queue and tune tests (on
    cached embeddings each experiment takes seconds). Read-only: copy it with `clone_project`."""
    return built_once(tmp_path_factory, "frozen", reproduced(request, FROZEN_MODEL, FROZEN_TRAIN))


@pytest.fixture
def clone_project(tmp_path):
    """clone_project(src) -> a copy of the built project `src` in this test's temp folder."""
    return lambda src: clone(src, tmp_path / "clone")


SHARED_BUILDS = ("frozen_project", "trained_project")


def shared_build(item):
    """The project built once per run that `item` waits for ("" for none)."""
    return next((name for name in SHARED_BUILDS if name in item.fixturenames), "")


def pytest_collection_modifyitems(items):
    """The long tests (marked `first`: several DVC experiments, or a module of them sharing a project) go
    first, then the other end-to-end tests, then the other slow ones: under `make test`'s workers the long
    runs start early, so no worker is handed one while the others are about to finish (a stable sort:
    within a tier, the order of the files). The `first` tests take turns by the shared project they wait
    for (frozen, trained, none), so the first two workers build both projects side by side (a third, where
    there is one, runs a test on its own data) instead of all but one worker waiting for the same build."""

    def tier(item):
        if item.get_closest_marker("first"):
            return 0
        return 1 if item.get_closest_marker("e2e") else 2 if item.get_closest_marker("slow") else 3

    items.sort(key=tier)
    first = [item for item in items if tier(item) == 0]
    by_build = {}
    for item in first:
        by_build.setdefault(shared_build(item), []).append(item)
    turns = [item for turn in itertools.zip_longest(*by_build.values()) for item in turn if item is not None]
    items[: len(first)] = turns
