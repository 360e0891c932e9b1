"""`binsight verify`: a file of (image, expected quantity) -> accept or review, on the calibrated model of a
project that ran the whole pipeline; photos on disk (JPEG and PNG) and s3:// URLs of the local S3 server, and
every kind of bad row named while the others are still checked."""

import json

import pytest

from binsight.serve.predictor import Predictor
from tests.support.bucket import admin_client, put
from tests.support.project import REPO, call
from tests.support.serving import png_bytes, untrained_model

pytestmark = pytest.mark.slow


def verify(*args):
    return call("binsight.serve.verify_command", *args, cwd=REPO, check=False)


@pytest.fixture(scope="module")
def checks(trained_project, abid_bucket, tmp_path_factory):
    """Four photos with their true counts, two on disk (JPEG, PNG), two in the bucket (JPEG, PNG)."""
    root = tmp_path_factory.mktemp("verify")
    ids = sorted(abid_bucket.clean)[:4]
    labels = [abid_bucket.clean[i] for i in ids]
    (root / "a.jpg").write_bytes(abid_bucket.images[ids[0]])
    (root / "b.png").write_bytes(png_bytes(abid_bucket.images[ids[1]]))
    put(admin_client(abid_bucket.url), abid_bucket.name, f"checks/{ids[3]}.png", png_bytes(abid_bucket.images[ids[3]]))
    images = [
        "a.jpg",
        "b.png",
        f"s3://{abid_bucket.name}/bin-images/{ids[2]}.jpg",
        f"s3://{abid_bucket.name}/checks/{ids[3]}.png",
    ]
    return root, images, labels


def test_a_csv_of_photos_and_s3_urls_gets_a_verdict_per_row(trained_project, abid_bucket, checks):
    root, images, labels = checks
    model = trained_project / "models/model.pt"
    rows = ["image,expected", *(f"{img},{label}" for img, label in zip(images, labels)), f"{images[0]},7"]
    (root / "checks.csv").write_text("\n".join(rows) + "\n")
    proc = verify(root / "checks.csv", "--model", model, "--json", "--endpoint-url", abid_bucket.url, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(out) == 5 and [o["expected"] for o in out] == [*labels, 7]
    predictor = Predictor(model, "cpu")
    threshold = predictor.calibration.accept_threshold
    for o in out[:4]:
        assert o["verdict"] == ("accept" if o["p_expected"] >= threshold else "review"), o
        assert o["count_set"] and o["count"] in o["count_set"]
    # the same answer as scoring the bytes here: local paths resolved against the file's folder, PNG as JPEG
    direct = predictor.predict_bytes([abid_bucket.images[sorted(abid_bucket.clean)[0]]])[0]
    assert out[0]["p_expected"] == pytest.approx(direct["probabilities"][str(labels[0])], abs=1e-4)
    assert out[4]["verdict"] == "review" and "outside the counts this model knows (1-5)" in out[4]["reason"]


def test_bad_rows_are_named_and_the_rest_still_checked(trained_project, abid_bucket, checks):
    root, images, labels = checks
    rows = [
        {"image": images[0], "expected": labels[0]},
        {"image": images[1], "expected": 2.5},
        {"image": images[1], "expected": -1},
        {"image": images[1]},
        {"image": "missing.jpg", "expected": 3},
        {"expected": 3},
        {"image": images[2], "expected": "three"},
        {"image": images[3], "expected": labels[3]},
    ]
    (root / "checks.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\nnot json\n")
    proc = verify(
        root / "checks.jsonl", "--model", trained_project / "models/model.pt", "--endpoint-url", abid_bucket.url
    )
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(root / images[0])) and lines[1].startswith(images[3])
    err = proc.stderr
    for line, words in [
        (2, "2.5 is not a whole number"),
        (3, "-1 is negative"),
        (4, "no expected quantity"),
        (5, "missing.jpg"),
        (6, "no image"),
        (7, "'three' is not a whole number"),
        (9, "not a JSON object"),
    ]:
        assert f"checks.jsonl:{line}: " in err and words in err, (line, words, err)
    assert "error: 7 of 9 rows could not be checked" in err


def test_tighter_targets_move_the_thresholds(trained_project, checks):
    root, images, labels = checks
    (root / "one.csv").write_text(f"image,expected\n{images[0]},{labels[0]}\n")
    model = trained_project / "models/model.pt"
    loose = json.loads(verify(root / "one.csv", "--model", model, "--json", "--max-false-accept", "0.5").stdout)
    strict = json.loads(verify(root / "one.csv", "--model", model, "--json", "--max-false-accept", "0.001").stdout)
    assert loose["p_expected"] == strict["p_expected"]
    assert float(loose["reason"].split("threshold ")[1]) <= float(strict["reason"].split("threshold ")[1])


def test_an_uncalibrated_model_or_a_bad_file_is_one_line(tmp_path, checks):
    root, images, labels = checks
    (root / "one.csv").write_text(f"image,expected\n{images[0]},{labels[0]}\n")
    trained = untrained_model(tmp_path / "trained.pt")
    proc = verify(root / "one.csv", "--model", trained)
    assert proc.returncode == 2, proc.stderr
    assert "is not calibrated: use models/model.pt, which `dvc repro evaluate` writes" in proc.stderr
    (tmp_path / "bad.csv").write_text("photo,count\na.jpg,3\n")
    proc = verify(tmp_path / "bad.csv", "--model", trained)
    assert proc.returncode == 2 and "the header must name the columns image and expected" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_server_says_an_uncalibrated_model_cannot_verify(tmp_path):
    import httpx

    from tests.support.serving import InProcessServer

    trained = untrained_model(tmp_path / "trained.pt")
    with InProcessServer("--model", trained, "--device", "cpu") as server:
        resp = httpx.post(
            f"{server.url}/verify",
            params={"expected": 3},
            content=b"x",
            timeout=30,
            headers={"Content-Type": "image/jpeg"},
        )
    assert resp.status_code == 409 and "is not calibrated" in resp.json()["error"]
