"""The server locked down, over real HTTP: a bearer token (flag or environment), the buckets that
s3:// URLs may read, and a /health that tells the truth. The app is the one `binsight serve` builds from
the same flags, served in this process (tests/test_serve.py starts the command itself)."""

import httpx
import pytest

from tests.support.bucket import admin_client, put
from tests.support.serving import InProcessServer, untrained_model

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serve_security")]

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return untrained_model(tmp_path_factory.mktemp("secure") / "model.pt")


@pytest.fixture(scope="module")
def other_bucket(abid_bucket):
    """A second bucket on the same S3 server, with a real photo in it, that the server must not read."""
    client = admin_client(abid_bucket.url)
    client.create_bucket(Bucket="someone-elses-bucket")
    bin_id, jpeg = next(iter(abid_bucket.images.items()))
    put(client, "someone-elses-bucket", "photo.jpg", jpeg)
    return "someone-elses-bucket", f"s3://{abid_bucket.name}/bin-images/{bin_id}.jpg"


@pytest.fixture(scope="module")
def locked(model, abid_bucket, tmp_path_factory):
    with InProcessServer(
        "--model", model, "--device", "cpu", "--token", TOKEN, "--s3-endpoint", abid_bucket.url
    ) as srv:
        yield srv


def test_requests_without_the_token_get_401_and_health_stays_open(locked, abid_bucket):
    jpeg = next(iter(abid_bucket.images.values()))
    headers = {"Content-Type": "image/jpeg"}
    no_token = httpx.post(f"{locked.url}/predict", content=jpeg, headers=headers, timeout=60)
    assert no_token.status_code == 401 and "bearer token" in no_token.json()["error"]
    wrong = httpx.post(
        f"{locked.url}/predict", content=jpeg, headers={**headers, "Authorization": "Bearer nope"}, timeout=60
    )
    assert wrong.status_code == 401
    assert httpx.get(f"{locked.url}/metadata", timeout=60).status_code == 401
    right = httpx.post(
        f"{locked.url}/predict", content=jpeg, headers={**headers, "Authorization": f"Bearer {TOKEN}"}, timeout=60
    )
    assert right.status_code == 200 and 1 <= right.json()["count"] <= 5
    assert httpx.get(f"{locked.url}/health", timeout=60).json()["status"] == "ok"


def test_token_from_the_environment(model, monkeypatch):
    monkeypatch.setenv("BINSIGHT_SERVE_TOKEN", "from-env")
    with InProcessServer("--model", model, "--device", "cpu") as srv:
        assert httpx.get(f"{srv.url}/metadata", timeout=60).status_code == 401
        ok = httpx.get(f"{srv.url}/metadata", headers={"Authorization": "Bearer from-env"}, timeout=60)
        assert ok.status_code == 200 and ok.json()["classes"] == [1, 2, 3, 4, 5]


def test_urls_outside_the_allowed_buckets_get_403(locked, other_bucket):
    bucket, allowed_url = other_bucket
    auth = {"Authorization": f"Bearer {TOKEN}"}
    refused = httpx.post(f"{locked.url}/predict", json={"url": f"s3://{bucket}/photo.jpg"}, headers=auth, timeout=60)
    assert refused.status_code == 403 and f"bucket '{bucket}' is not allowed" in refused.json()["error"]
    assert httpx.post(f"{locked.url}/predict", json={"url": allowed_url}, headers=auth, timeout=60).status_code == 200


def test_allow_bucket_opens_another_bucket(model, abid_bucket, other_bucket):
    bucket, allowed_url = other_bucket
    with InProcessServer(
        "--model", model, "--device", "cpu", "--s3-endpoint", abid_bucket.url, "--allow-bucket", bucket
    ) as srv:
        mine = httpx.post(f"{srv.url}/predict", json={"url": f"s3://{bucket}/photo.jpg"}, timeout=60)
        assert mine.status_code == 200 and 1 <= mine.json()["count"] <= 5
        # naming a bucket replaces the default: the ABID bucket is now refused
        assert httpx.post(f"{srv.url}/predict", json={"url": allowed_url}, timeout=60).status_code == 403


def test_health_reports_a_dead_forward_pass_worker(model):
    """A server whose batch worker has stopped: /health says so with a 503."""
    with InProcessServer("--model", model, "--device", "cpu") as srv:
        alive = httpx.get(f"{srv.url}/health", timeout=30)
        assert alive.status_code == 200 and alive.json()["batch_worker_alive"] is True
        srv.batcher.close()
        dead = httpx.get(f"{srv.url}/health", timeout=30)
        assert dead.status_code == 503
        assert dead.json() | {} == {
            **dead.json(),
            "status": "unavailable",
            "model_loaded": True,
            "batch_worker_alive": False,
        }
