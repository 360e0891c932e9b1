"""The server locked down, over real HTTP: a bearer token (flag or environment), the buckets that
s3:// URLs may read, and a /health that tells the truth."""
import threading
import time

import httpx
import pytest
import uvicorn

from binsight.inference import BatchQueue, Predictor
from binsight.serve import Settings, create_app
from binsight.testing.bucket import admin_client, put
from binsight.testing.serving import Server, free_port, untrained_model

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
    with Server(model, tmp_path_factory.mktemp("locked") / "server.log", "--token", TOKEN,
                "--s3-endpoint", abid_bucket.url, as_tests_run=True) as srv:
        yield srv


def test_requests_without_the_token_get_401_and_health_stays_open(locked, abid_bucket):
    jpeg = next(iter(abid_bucket.images.values()))
    headers = {"Content-Type": "image/jpeg"}
    no_token = httpx.post(f"{locked.url}/predict", content=jpeg, headers=headers, timeout=60)
    assert no_token.status_code == 401 and "bearer token" in no_token.json()["error"]
    wrong = httpx.post(f"{locked.url}/predict", content=jpeg, headers={**headers, "Authorization": "Bearer nope"},
                       timeout=60)
    assert wrong.status_code == 401
    assert httpx.get(f"{locked.url}/metadata", timeout=60).status_code == 401
    right = httpx.post(f"{locked.url}/predict", content=jpeg,
                       headers={**headers, "Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert right.status_code == 200 and 1 <= right.json()["count"] <= 5
    assert httpx.get(f"{locked.url}/health", timeout=60).json()["status"] == "ok"


def test_token_from_the_environment(model, tmp_path):
    with Server(model, tmp_path / "server.log", env={"BINSIGHT_SERVE_TOKEN": "from-env"}, as_tests_run=True) as srv:
        assert httpx.get(f"{srv.url}/metadata", timeout=60).status_code == 401
        ok = httpx.get(f"{srv.url}/metadata", headers={"Authorization": "Bearer from-env"}, timeout=60)
        assert ok.status_code == 200 and ok.json()["classes"] == [1, 2, 3, 4, 5]


def test_urls_outside_the_allowed_buckets_get_403(locked, other_bucket):
    bucket, allowed_url = other_bucket
    auth = {"Authorization": f"Bearer {TOKEN}"}
    refused = httpx.post(f"{locked.url}/predict", json={"url": f"s3://{bucket}/photo.jpg"}, headers=auth, timeout=60)
    assert refused.status_code == 403 and f"bucket '{bucket}' is not allowed" in refused.json()["error"]
    assert httpx.post(f"{locked.url}/predict", json={"url": allowed_url}, headers=auth, timeout=60).status_code == 200


def test_allow_bucket_opens_another_bucket(model, abid_bucket, other_bucket, tmp_path):
    bucket, allowed_url = other_bucket
    with Server(model, tmp_path / "server.log", "--s3-endpoint", abid_bucket.url, "--allow-bucket", bucket,
                as_tests_run=True) as srv:
        mine = httpx.post(f"{srv.url}/predict", json={"url": f"s3://{bucket}/photo.jpg"}, timeout=60)
        assert mine.status_code == 200 and 1 <= mine.json()["count"] <= 5
        # naming a bucket replaces the default: the ABID bucket is now refused
        assert httpx.post(f"{srv.url}/predict", json={"url": allowed_url}, timeout=60).status_code == 403


def test_health_reports_a_dead_forward_pass_worker(model):
    """A real uvicorn on a free port whose batch worker has stopped: /health says so with a 503."""
    predictor = Predictor(model, device="cpu")
    batcher = BatchQueue(predictor.predict_tensors)
    app = create_app(predictor, batcher, Settings())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)
        assert alive.status_code == 200 and alive.json()["batch_worker_alive"] is True
        batcher.close()
        dead = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)
        assert dead.status_code == 503
        assert dead.json() | {} == {**dead.json(), "status": "unavailable", "model_loaded": True,
                                    "batch_worker_alive": False}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
