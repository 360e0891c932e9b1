"""`binsight predict`: files, folders and stdin, text and JSON lines, bad input, and different answers
for different photos (a model that gives every photo the same count is broken)."""

import csv
import json

import pytest

from tests.support.bucket import admin_client
from tests.support.project import REPO, call
from tests.support.serving import png_bytes, untrained_model
from tests.support.synthetic import make_bins


def predict(*args, stdin=None):
    return call("binsight.serve.predict_command", *args, cwd=REPO, check=False, stdin=stdin)


def json_lines(proc):
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return untrained_model(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three JPEGs, a PNG and a text file."""
    root = tmp_path_factory.mktemp("images")
    bins = list(make_bins(1, seed=5).items())
    for bin_id, (_, jpeg, _) in bins[:3]:
        (root / f"{bin_id}.jpg").write_bytes(jpeg)
    bin_id, (_, jpeg, _) = bins[3]
    (root / f"{bin_id}.PNG").write_bytes(png_bytes(jpeg))
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.mark.slow
def test_predictions_over_the_test_split_are_not_constant(trained_project):
    """A broken model gives every image the same answer; one above chance must not."""
    accuracy = json.loads((trained_project / "dvclive/evaluate/metrics.json").read_text())["test"]["accuracy"]
    assert accuracy > 0.2, "the trained test model is no better than chance; this check needs one that is"
    rows = list(csv.DictReader(open(trained_project / "data/split/test.csv")))
    paths = [trained_project / f"data/raw/images/{r['id']}.jpg" for r in rows]
    proc = predict("--json", "--batch-size", 16, "--model", trained_project / "models/model.pt", *paths)
    assert proc.returncode == 0, proc.stderr
    out = json_lines(proc)
    assert [o["path"] for o in out] == [str(p) for p in paths]
    counts = [o["count"] for o in out]
    assert len(set(counts)) > 1, f"every test image got count {counts[0]}"
    # And they are the counts that score the evaluate stage's accuracy.
    hits = sum(c == int(r["label"]) for c, r in zip(counts, rows))
    assert hits / len(rows) == pytest.approx(accuracy, abs=1e-9)


@pytest.fixture(scope="module")
def folder_answers(model, folder):
    """`predict --json` over the folder: its output, and the answer per path (what the stdin and
    text-output tests compare with: one image a batch, as they predict it, so the floats match)."""
    proc = predict("--json", "--batch-size", 1, "--model", model, folder)
    assert proc.returncode == 0, proc.stderr
    return proc, {o["path"]: o for o in json_lines(proc)}


def test_a_folder_means_its_images_and_json_lines_carry_the_distribution(folder, folder_answers):
    out = json_lines(folder_answers[0])
    expected = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    assert [o["path"] for o in out] == expected
    for o in out:
        assert o["count"] in (1, 2, 3, 4, 5)
        assert list(o["probabilities"]) == ["1", "2", "3", "4", "5"]
        assert sum(o["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert o["probability"] == max(o["probabilities"].values())
        assert len(o["model"]) == 12


def test_stdin_bytes_get_the_same_answer_as_the_file(model, folder, folder_answers):
    path = sorted(folder.glob("*.jpg"))[0]
    from_file = folder_answers[1][str(path)]
    from_stdin = predict("--json", "--model", model, "-", stdin=path.read_bytes())
    assert from_stdin.returncode == 0, from_stdin.stderr
    got = json_lines(from_stdin)[0]
    assert got["path"] == "-"
    assert got["count"] == from_file["count"] and got["probabilities"] == from_file["probabilities"]


def test_text_output_shows_count_probability_and_every_score(model, folder, folder_answers):
    path = sorted(folder.glob("*.jpg"))[0]
    res = folder_answers[1][str(path)]
    proc = predict("--model", model, path)
    assert proc.returncode == 0
    line = proc.stdout.strip()
    scores = ", ".join(f"{c}: {p:.3f}" for c, p in res["probabilities"].items())
    assert line == f"{path}: {res['count']} (p={res['probability']:.3f})  [{scores}]"


def test_unreadable_images_are_named_and_the_rest_still_counted(model, folder, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    good = sorted(folder.glob("*.jpg"))
    proc = predict("--json", "--batch-size", 2, "--model", model, good[0], bad, good[1])
    assert proc.returncode == 2
    assert [o["path"] for o in json_lines(proc)] == [str(good[0]), str(good[1])]
    err = proc.stderr.strip().splitlines()
    assert err == [f"error: {bad}: not a JPEG or PNG image", "error: 1 of 3 images could not be read"]


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--model", "{tmp}/missing.pt", "{img}"], "missing.pt not found: train a model first"),
        (["--model", "{model}", "{tmp}/nothing.jpg"], "nothing.jpg not found"),
        (["--model", "{model}", "--device", "gpu", "{img}"], "is not a device"),
        (["--model", "{model}", "{tmp}"], "no .jpg, .jpeg or .png images"),
    ],
)
def test_user_mistakes_are_one_line_errors(model, folder, tmp_path, args, expected):
    img = sorted(folder.glob("*.jpg"))[0]
    proc = predict(*[a.format(tmp=tmp_path, model=model, img=img) for a in args])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr


def test_help_explains_the_inputs():
    proc = call("binsight.serve.predict_command", "--help", cwd=REPO)
    for words in ("--json", "--batch-size", "stdin", "folder"):
        assert words in proc.stdout


def test_a_bucket_prefix_is_scored_to_a_file_and_a_rerun_resumes_it(model, abid_bucket, tmp_path):
    out = tmp_path / "counts.jsonl"
    prefix = f"s3://{abid_bucket.name}/bin-images/"
    first = predict(prefix, "--model", model, "--out", out, "--endpoint-url", abid_bucket.url, "--batch-size", "16")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    unreadable = {i for i, reason in abid_bucket.expected_bad.items() if reason == "corrupt_image"}
    listed = admin_client(abid_bucket.url).list_objects_v2(Bucket=abid_bucket.name, Prefix="bin-images/")
    readable = {f"s3://{abid_bucket.name}/{o['Key']}" for o in listed["Contents"]} - {
        f"{prefix}{i}.jpg" for i in unreadable
    }
    assert {line["path"] for line in lines} == readable  # every image under the prefix but the truncated one
    assert first.returncode == 2 and all(f"{prefix}{i}.jpg" in first.stderr for i in unreadable)
    assert all(set(line) >= {"path", "count", "class", "probability", "probabilities", "model"} for line in lines)
    # a run killed mid-way: half the lines and a torn one are left; the rerun scores only the rest
    kept = lines[: len(lines) // 2]
    out.write_text("".join(json.dumps(line) + "\n" for line in kept) + '{"path": "s3://')
    again = predict(prefix, "--model", model, "--out", out, "--endpoint-url", abid_bucket.url)
    assert f"({len(kept)} there before)" in again.stdout
    resumed = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["path"] for line in resumed) == sorted(line["path"] for line in lines)
    assert resumed[: len(kept)] == kept


def test_a_shard_set_is_scored_to_csv(model, tmp_path):
    from binsight.data.training_shards import pack_splits

    images, metadata = tmp_path / "images", tmp_path / "metadata"
    images.mkdir()
    metadata.mkdir()
    rows = []
    for bin_id, (label, jpeg, meta) in make_bins(3, seed=2).items():
        (images / f"{bin_id}.jpg").write_bytes(jpeg)
        (metadata / f"{bin_id}.json").write_bytes(meta)
        rows.append((bin_id, label, label))
    pack_splits({"test": rows}, images, metadata, tmp_path / "shards", 64, shard_size=4)
    ran = predict(tmp_path / "shards", "--model", model, "--out", tmp_path / "counts.csv")
    assert ran.returncode == 0, ran.stderr
    table = list(csv.DictReader(open(tmp_path / "counts.csv")))
    assert sorted(r["path"].split("/")[-1] for r in table) == sorted(f"{i}.jpg" for i, _, _ in rows)
    assert all(abs(sum(float(r[f"p_{c}"]) for c in "12345") - 1) < 1e-3 for r in table)
