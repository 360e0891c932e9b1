import shutil

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
