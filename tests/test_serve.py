"""The real server (`python -m binsight.serve.http_server`, uvicorn) in a subprocess on 127.0.0.1, serving the model
the pipeline test trained, asked over real HTTP; s3:// URLs read from the local S3 server."""

import csv
import hashlib
import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from tests.support.project import REPO, call
from tests.support.serving import Server, png_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("serve")]

MAX_BODY_MB = 1


@pytest.fixture(scope="module")
def server(trained_project, abid_bucket, tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    # --device cpu: the answers are compared with evaluate's, which ran on the CPU (tests.support.project.env)
    with Server(
        trained_project / "models/model.pt",
        work / "server.log",
        "--device",
        "cpu",
        "--max-body-mb",
        MAX_BODY_MB,
        "--s3-endpoint",
        abid_bucket.url,
        "--dvc-lock",
        trained_project / "dvc.lock",
        cwd=work,
        as_tests_run=True,
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def test_rows(trained_project):
    """Rows of evaluate's data/predictions/test.csv (id, label, pred, prob, p1..p5), reordered so
    that neighbours have different predicted counts (the file is sorted by label): a mix-up
    between the answers of images in one batch cannot go unnoticed."""
    rows = list(csv.DictReader(open(trained_project / "data/predictions/test.csv")))
    by_pred = {}
    for row in rows:
        by_pred.setdefault(row["pred"], []).append(row)
    assert len(by_pred) > 1, "the trained test model predicts one count only"
    groups = list(by_pred.values())
    return [g[i] for i in range(max(map(len, groups))) for g in groups if i < len(g)]


def image(project, bin_id):
    return (project / f"data/raw/images/{bin_id}.jpg").read_bytes()


def post_image(client, data, kind="image/jpeg"):
    return client.post("/predict", content=data, headers={"Content-Type": kind})


def assert_prediction(body, version):
    assert set(body) >= {"count", "probability", "probabilities", "model"}
    probs = body["probabilities"]
    assert list(probs) == ["1", "2", "3", "4", "5"]
    assert sum(probs.values()) == pytest.approx(1, abs=1e-4)
    assert body["count"] == int(max(probs, key=probs.get))
    assert body["probability"] == probs[str(body["count"])]
    assert body["model"] == version


def model_version(project):
    return hashlib.sha256((project / "models/model.pt").read_bytes()).hexdigest()[:12]


def test_health_says_the_model_is_loaded_and_where(client, trained_project):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["model_loaded"] is True
    assert body["device"] == "cpu"
    assert body["model"] == model_version(trained_project)


def test_metadata_describes_the_loaded_model_and_its_metrics(client, trained_project):
    body = client.get("/metadata").json()
    assert body["classes"] == [1, 2, 3, 4, 5]
    assert body["arch"] == "resnet18" and body["image_size"] == 64
    assert body["params"]["head"] == {"hidden": [], "dropout": 0.0}
    assert 0 < body["training"]["val_acc"] <= 1
    summary = json.loads((trained_project / "dvclive/train/metrics.json").read_text())
    assert body["training"]["epoch"] == summary["best/epoch"]  # one epoch numbering: the log's, from 1
    assert body["training"]["val_acc"] == summary["best/val_acc"]
    evaluate = json.loads((trained_project / "dvclive/evaluate/metrics.json").read_text())
    assert body["metrics"]["dvclive/evaluate"]["test"]["accuracy"] == evaluate["test"]["accuracy"]
    assert body["serving"]["max_body_mb"] == MAX_BODY_MB


def test_jpeg_body_gets_the_count_that_evaluate_predicted(client, trained_project, test_rows):
    version = model_version(trained_project)
    for row in test_rows[:10]:
        resp = post_image(client, image(trained_project, row["id"]))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert_prediction(body, version)
        assert body["count"] == int(row["pred"])
        assert body["probabilities"] == pytest.approx({c: float(row[f"p{c}"]) for c in "12345"}, abs=1e-3)


def test_png_of_the_same_photo_gets_the_same_answer(client, trained_project, test_rows):
    jpeg = image(trained_project, test_rows[0]["id"])
    as_jpeg, as_png = post_image(client, jpeg).json(), post_image(client, png_bytes(jpeg), "image/png").json()
    assert_prediction(as_png, model_version(trained_project))
    assert as_png["count"] == as_jpeg["count"]
    assert as_png["probabilities"] == pytest.approx(as_jpeg["probabilities"], abs=1e-4)


def gif_bytes():
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(buf, format="GIF")
    return buf.getvalue()


def chunks(data, size=64 * 1024):
    for i in range(0, len(data), size):
        yield data[i : i + size]


BAD_REQUESTS = {
    # name: (request kwargs from a good JPEG, expected status, words in the error)
    "garbage": (
        lambda j: {"content": b"\x00garbage" * 100, "headers": {"Content-Type": "image/jpeg"}},
        400,
        "not a JPEG or PNG",
    ),
    "empty": (lambda j: {"content": b"", "headers": {"Content-Type": "image/jpeg"}}, 400, "empty"),
    "truncated jpeg": (
        lambda j: {"content": j[: len(j) * 2 // 3], "headers": {"Content-Type": "image/jpeg"}},
        400,
        "truncated",
    ),
    "gif": (lambda j: {"content": gif_bytes(), "headers": {"Content-Type": "image/png"}}, 400, "not a JPEG or PNG"),
    "text/plain": (
        lambda j: {"content": j, "headers": {"Content-Type": "text/plain"}},
        415,
        "text/plain is not accepted",
    ),
    "no content type": (lambda j: {"content": j}, 415, "(none) is not accepted"),
    "huge": (
        lambda j: {"content": b"\xff" * (MAX_BODY_MB * 2**20 + 1), "headers": {"Content-Type": "image/jpeg"}},
        413,
        "larger than the 1 MB limit",
    ),
    "huge chunked": (
        lambda j: {"content": chunks(b"\xff" * (3 * MAX_BODY_MB * 2**20)), "headers": {"Content-Type": "image/jpeg"}},
        413,
        "larger than the 1 MB limit",
    ),
    "bad json": (
        lambda j: {"content": b"{nope", "headers": {"Content-Type": "application/json"}},
        400,
        "not valid JSON",
    ),
    "json without url": (lambda j: {"json": {"image": "x"}}, 400, 'expected {"url"'),
    "http url": (lambda j: {"json": {"url": "http://169.254.169.254/latest"}}, 400, "expected an s3://bucket/key URL"),
    "missing s3 key": (lambda j: {"json": {"url": "s3://aft-vbi-pds/bin-images/nope.jpg"}}, 404, "not found"),
    "form-urlencoded": (lambda j: {"data": {"x": "1"}}, 415, "application/x-www-form-urlencoded is not accepted"),
    "multipart without files": (lambda j: {"files": {"x": (None, b"1")}}, 400, "no image files"),
    "multipart form, no image": (
        lambda j: {"files": {"note": ("n.txt", b"x", "text/plain")}, "data": {"a": "b"}},
        400,
        "not a JPEG or PNG",
    ),
    "batch with a bad image": (
        lambda j: {"files": [("image", ("a.jpg", j)), ("image", ("b.jpg", b"junk"))]},
        400,
        "image 2: not a JPEG or PNG",
    ),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_input_gets_a_4xx_json_error_and_the_server_keeps_serving(server, client, trained_project, test_rows, name):
    make, status, words = BAD_REQUESTS[name]
    good = image(trained_project, test_rows[0]["id"])
    resp = client.post("/predict", **make(good))
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert words in resp.json()["error"]
    assert server.alive()
    after = post_image(client, good)
    assert after.status_code == 200 and after.json()["count"] == int(test_rows[0]["pred"])


def test_s3_url_gets_the_same_answer_as_the_image_bytes(client, abid_bucket):
    bin_id = sorted(abid_bucket.clean)[0]
    by_url = client.post("/predict", json={"url": f"s3://{abid_bucket.name}/bin-images/{bin_id}.jpg"})
    assert by_url.status_code == 200, by_url.text
    by_bytes = post_image(client, abid_bucket.images[bin_id]).json()
    assert by_url.json()["count"] == by_bytes["count"]
    assert by_url.json()["probabilities"] == pytest.approx(by_bytes["probabilities"], abs=1e-4)


def test_a_list_of_s3_urls_is_a_batch(client, abid_bucket):
    ids = sorted(abid_bucket.clean)[:4]
    urls = [f"s3://{abid_bucket.name}/bin-images/{i}.jpg" for i in ids]
    resp = client.post("/predict", json={"urls": urls})
    assert resp.status_code == 200, resp.text
    preds = resp.json()["predictions"]
    assert [p["url"] for p in preds] == urls
    for i, p in zip(ids, preds):
        assert p["count"] == post_image(client, abid_bucket.images[i]).json()["count"]


def test_multipart_batch_answers_every_image_in_order(client, trained_project, test_rows):
    rows = test_rows[:12]
    files = [("image", (f"{r['id']}.jpg", image(trained_project, r["id"]), "image/jpeg")) for r in rows]
    files[3] = ("image", (f"{rows[3]['id']}.png", png_bytes(image(trained_project, rows[3]["id"])), "image/png"))
    resp = client.post("/predict", files=files)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == model_version(trained_project)
    assert [p["filename"] for p in body["predictions"]] == [f[1][0] for f in files]
    assert [p["count"] for p in body["predictions"]] == [int(r["pred"]) for r in rows]


def test_concurrent_requests_each_get_their_own_answer(client, trained_project, test_rows):
    rows = test_rows[:8]
    images = [image(trained_project, r["id"]) for r in rows]
    expected = [int(r["pred"]) for r in rows]

    def ask(i):
        resp = post_image(client, images[i % len(images)])
        return i, resp.status_code, resp.json().get("count")

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(64)))
    assert all(status == 200 for _, status, _ in answers)
    assert [count for _, _, count in answers] == [expected[i % len(images)] for i, _, _ in answers]


def test_cli_prints_what_the_server_answers(server, client, trained_project, test_rows, tmp_path):
    ids = [r["id"] for r in test_rows[:5]]
    paths = [str(trained_project / f"data/raw/images/{i}.jpg") for i in ids]
    # --device cpu, like the server: on a GPU box predict would pick CUDA and its reduced precision
    proc = call(
        "binsight.serve.predict_command",
        "--json",
        "--device",
        "cpu",
        "--model",
        trained_project / "models/model.pt",
        *paths,
        cwd=REPO,
    )
    cli = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [c["path"] for c in cli] == paths
    for path, c in zip(paths, cli):
        s = post_image(client, open(path, "rb").read()).json()
        assert c["count"] == s["count"] and c["model"] == s["model"]
        assert c["probabilities"] == pytest.approx(s["probabilities"], abs=1e-4)


def test_verify_answers_a_verdict_for_each_way_of_sending_a_check(client, trained_project, abid_bucket, test_rows):
    row = test_rows[0]
    jpeg, label = image(trained_project, row["id"]), int(row["label"])
    predicted = post_image(client, jpeg).json()
    one = client.post("/verify", params={"expected": label}, content=jpeg, headers={"Content-Type": "image/jpeg"})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["expected"] == label and body["verdict"] in ("accept", "review") and body["model"]
    assert body["p_expected"] == pytest.approx(predicted["probabilities"][str(label)], abs=1e-4)
    assert body["count_set"] == predicted["count_set"] and body["count"] in body["count_set"]
    threshold = client.get("/metadata").json()["calibration"]["accept_threshold"]
    assert body["verdict"] == ("accept" if body["p_expected"] >= threshold else "review")
    ids = sorted(abid_bucket.clean)[:2]
    checks = [{"url": f"s3://{abid_bucket.name}/bin-images/{i}.jpg", "expected": abid_bucket.clean[i]} for i in ids]
    batch = client.post("/verify", json={"checks": [*checks, {"url": checks[0]["url"], "expected": 9}]})
    assert batch.status_code == 200, batch.text
    verdicts = batch.json()["verdicts"]
    assert [v["url"] for v in verdicts] == [c["url"] for c in checks] + [checks[0]["url"]]
    assert verdicts[2]["verdict"] == "review" and "outside the counts" in verdicts[2]["reason"]
    form = client.post("/verify", files=[("image", ("a.png", png_bytes(jpeg)))], data={"expected": str(label)})
    assert form.status_code == 200 and form.json()["verdicts"][0]["p_expected"] == pytest.approx(
        body["p_expected"], abs=1e-3
    )


@pytest.mark.parametrize(
    "request_kwargs,status,words",
    [
        ({"params": {"expected": "2.5"}}, 400, "?expected=: expected quantity '2.5' is not a whole number"),
        ({"params": {"expected": "-3"}}, 400, "is negative"),
        ({}, 400, "?expected=: no expected quantity"),
        ({"json": {"url": "s3://aft-vbi-pds/bin-images/1.jpg"}}, 400, "body expected: no expected quantity"),
        ({"json": {"checks": [{"url": "s3://x/y.jpg", "expected": "many"}]}}, 400, "check 1 expected"),
        ({"json": {"expected": 3}}, 400, 'expected {"url": "s3://bucket/key", "expected": N}'),
        ({"files": [("image", ("a.jpg", b"x"))], "data": {}}, 400, "1 images and 0 expected fields"),
        ({"content": b"x", "headers": {"Content-Type": "text/plain"}}, 415, "?expected=N"),
    ],
)
def test_a_bad_verify_request_is_a_4xx_json_error(
    server, client, trained_project, test_rows, request_kwargs, status, words
):
    kwargs = dict(request_kwargs)
    if not {"json", "files", "content"} & set(kwargs):
        kwargs.update(content=image(trained_project, test_rows[0]["id"]), headers={"Content-Type": "image/jpeg"})
    resp = client.post("/verify", **kwargs)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["error"]
    assert server.alive()


def test_load_from_a_second_process_has_no_errors(server, client, trained_project, test_rows, capsys):
    """500 requests at concurrency 16 from another process; reports p50/p99 latency."""
    passes_before = client.get("/health").json()["forward_passes"]
    paths = [str(trained_project / f"data/raw/images/{r['id']}.jpg") for r in test_rows[:20]]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.http_load",
            server.url,
            *paths,
            "--requests",
            "500",
            "--concurrency",
            "16",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["ok"] == 500 and stats["errors"] == {}, stats
    passes = client.get("/health").json()["forward_passes"] - passes_before
    assert passes < 500, "no request shared a forward pass with another"
    with capsys.disabled():
        print(
            f"\n[serve load] 500 requests, concurrency 16: {stats['requests_per_s']} req/s, "
            f"p50 {stats['p50_ms']} ms, p99 {stats['p99_ms']} ms, {passes} forward passes"
        )
    assert server.alive()


def test_a_missing_model_stops_the_server_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "binsight.serve.http_server", "--model", str(tmp_path / "none.pt")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'none.pt'} not found: train a model first (`dvc repro train`)"
    ]


def test_help_gives_the_command_and_the_limits():
    out = call("binsight.serve.http_server", "--help", cwd=REPO).stdout
    for words in (
        "python -m binsight.serve.http_server --model models/model.pt",
        "--max-body-mb",
        "413",
        "415",
        "s3://",
    ):
        assert words in out
