import pytest

from tests.support.bucket import build_bucket
from tests.support.s3server import MotoS3


@pytest.fixture(scope="session")
def s3_server():
    with MotoS3() as server:
        yield server


@pytest.fixture(scope="session")
def abid_bucket(s3_server):
    """The ABID bucket on the local S3 server: 40 generated bins per class, planted faults, real samples."""
    return build_bucket(s3_server.url, n_per_class=40)
