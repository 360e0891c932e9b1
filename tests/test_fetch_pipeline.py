"""fetch + split through the real `dvc repro`, against a real S3 server on loopback."""

import csv
import hashlib
import json
from pathlib import Path

import pytest

from tests.support.project import call, dvc, git_commit, kill_when, make_project, python_m, set_params
from tests.support.s3server import S3Proxy

pytestmark = pytest.mark.xdist_group("fetch")


def fetch_params(endpoint, **extra):
    return {"fetch": {"file_list": "file_list.json", "endpoint_url": endpoint, "max_bad_fraction": 0.1, **extra}}


def new_project(tmp_path, abid, endpoint, groups, **extra):
    project = make_project(tmp_path / "proj", params=fetch_params(endpoint, **extra), commit=False)
    abid.write_file_list(project / "file_list.json", *groups)
    git_commit(project, "fetch test project")
    return project


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def fetched(tmp_path_factory, abid_bucket):
    tmp = tmp_path_factory.mktemp("fetch")
    b = abid_bucket
    project = new_project(tmp, b, b.url, [b.clean, b.faults, b.real])
    out = dvc(project, "repro", "split")
    return project, out


@pytest.mark.e2e
def test_repro_fetches_verifies_and_reports(fetched, abid_bucket):
    project, out = fetched
    b = abid_bucket
    good = {**b.clean, **b.real}
    manifest = {r["id"]: r for r in read_rows(project / "data/raw/manifest.csv")}
    assert set(manifest) == set(good)
    for bin_id, row in manifest.items():
        assert int(row["label"]) == good[bin_id]
        image = (project / "data/raw/images" / f"{bin_id}.jpg").read_bytes()
        assert image == b.images[bin_id]
        assert row["sha256"] == hashlib.sha256(image).hexdigest() and int(row["bytes"]) == len(image)
        assert (project / "data/raw/metadata" / f"{bin_id}.json").exists()
    report = json.loads((project / "data/fetch_report.json").read_text())
    assert {r["id"]: r["reason"] for r in report["bad_bins"]} == b.expected_bad
    assert report["ok"] == len(good) and report["requested"] == len(good) + len(b.faults)
    assert f"fetch: {len(good)} ok, {len(b.faults)} bad (corrupt_image: 1, label_mismatch: 2, " in out.stdout
    # nothing bad was left under a final name
    for bin_id, reason in b.expected_bad.items():
        if reason in ("corrupt_image", "missing_image"):
            assert not (project / "data/raw/images" / f"{bin_id}.jpg").exists()
    assert not list((project / "data/raw/images").glob(".*"))


@pytest.mark.e2e
def test_real_sample_bins_keep_their_true_size(fetched, abid_bucket):
    project, _ = fetched
    assert abid_bucket.real, "the 27 real sample bins ship in tests/data/abid_sample"
    manifest = {r["id"]: r for r in read_rows(project / "data/raw/manifest.csv")}
    sizes = {(int(manifest[i]["width"]), int(manifest[i]["height"])) for i in abid_bucket.real}
    assert len(sizes) > 3 and max(w for w, _ in sizes) > 300  # real photos, sizes vary


@pytest.mark.e2e
def test_split_is_stratified_disjoint_and_stable(fetched):
    project, _ = fetched
    splits = {name: read_rows(project / f"data/split/{name}.csv") for name in ("train", "val", "test")}
    manifest = read_rows(project / "data/raw/manifest.csv")
    ids = [r["id"] for rows in splits.values() for r in rows]
    assert len(ids) == len(set(ids)) == len(manifest)
    for label in {r["label"] for r in manifest}:
        n = sum(r["label"] == label for r in manifest)
        for name, ratio in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
            assert abs(sum(r["label"] == label for r in splits[name]) - n * ratio) <= 1
    before = {name: (project / f"data/split/{name}.csv").read_bytes() for name in splits}
    status = dvc(project, "repro", "split")
    assert "didn't change, skipping" in status.stdout or "up to date" in status.stdout.lower()
    dvc(project, "repro", "-f", "-s", "split")
    assert before == {name: (project / f"data/split/{name}.csv").read_bytes() for name in splits}


@pytest.mark.e2e
def test_corrupted_local_file_is_fetched_again_and_nothing_else(fetched, abid_bucket):
    project, _ = fetched
    victim = sorted(abid_bucket.clean)[3]
    path = project / "data/raw/images" / f"{victim}.jpg"
    path.write_bytes(path.read_bytes()[:200])
    with S3Proxy(abid_bucket.url) as proxy:
        set_params(project, {"fetch": {"endpoint_url": proxy.url}})
        call("stages.fetch", "--no-progress", cwd=project)
        refetched = {Path(k).stem for k, n in proxy.gets.items() if k.endswith(".jpg")}
    # the victim, plus the planted bad images that never verified (they are tried again, by design)
    never_verified = {i for i, r in abid_bucket.expected_bad.items() if r in ("corrupt_image", "missing_image")}
    assert refetched == {victim} | never_verified
    assert path.read_bytes() == abid_bucket.images[victim]


@pytest.mark.e2e
def test_killed_fetch_resumes_without_downloading_verified_files_again(tmp_path, abid_bucket):
    b = abid_bucket
    bins = dict(sorted(b.clean.items())[:120])  # a third of the bucket: enough to kill mid-way
    with S3Proxy(b.url, delay=0.03) as slow:
        project = new_project(tmp_path, b, slow.url, [bins], concurrency=4)
        images = project / "data/raw/images"
        kill_when(
            python_m("stages.fetch", "--no-progress"),
            project,
            lambda: len(list(images.glob("*.jpg"))) >= len(bins) // 3,
            timeout=60,
            poll=0.05,
        )
    done_before = {p.stem: p.read_bytes() for p in images.glob("*.jpg")}
    assert 0 < len(done_before) < len(bins), "the kill did not land mid-way"

    with S3Proxy(b.url) as counting:
        set_params(project, {"fetch": {"endpoint_url": counting.url}})
        call("stages.fetch", "--no-progress", cwd=project)
        fetched_again = {Path(k).stem for k, n in counting.gets.items() if k.endswith(".jpg")}
    assert not fetched_again & set(done_before), "verified images were downloaded again"
    assert fetched_again == set(bins) - set(done_before)
    assert {r["id"] for r in read_rows(project / "data/raw/manifest.csv")} == set(bins)
    for bin_id, data in done_before.items():
        assert data == b.images[bin_id]
    assert not list(images.glob(".*"))  # the killed run's temp files are gone


@pytest.mark.slow
def test_transient_5xx_are_retried(tmp_path, abid_bucket):
    b = abid_bucket
    few = dict(sorted(b.clean.items())[:10])
    # once per object: botocore backs off from a 503 SlowDown for up to 2**attempt s, and a bin's two
    # objects come one after the other, so each more failure adds seconds of waiting to the test
    with S3Proxy(b.url, fail_first=1) as flaky:
        project = new_project(tmp_path, b, flaky.url, [few])
        call("stages.fetch", "--no-progress", cwd=project)
        assert flaky.failures >= 2 * len(few)  # every object (image, metadata) failed before it came through
    assert {r["id"] for r in read_rows(project / "data/raw/manifest.csv")} == set(few)


@pytest.mark.parametrize(
    "override,message",
    [
        ({"concurrency": 0}, "fetch.concurrency=0 is not allowed"),
        ({"layout": "tar"}, "fetch.layout='tar' is not allowed: expected files (one file a bin) or shards"),
        ({"layout": "shards", "shard_size": 0}, "fetch.shard_size=0 is not allowed"),
        ({"bucket": "no-such-bucket-here"}, "no-such-bucket-here"),
        ({"file_list": "missing.json"}, "missing.json is not a file"),
        # offline (a closed port on loopback): where to look, and the other way in (README: A local copy of
        # the bucket); one attempt, as botocore's backoff over the default 5 would only make the test wait
        (
            {"endpoint_url": "http://127.0.0.1:9", "retries": 1},
            "offline? check fetch.endpoint_url, or fetch from a local copy of the bucket: -S fetch.local_dir=",
        ),
    ],
)
@pytest.mark.slow
def test_bad_params_give_one_line_error(tmp_path, abid_bucket, override, message):
    b = abid_bucket
    project = new_project(tmp_path, b, b.url, [dict(sorted(b.clean.items())[:3])], **override)
    proc = call("stages.fetch", "--no-progress", cwd=project, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (project / "data/raw/manifest.csv").exists()


@pytest.mark.slow
def test_offline_file_list_url_fails_with_one_line(tmp_path, abid_bucket):
    project = new_project(tmp_path, abid_bucket, abid_bucket.url, [{}], file_list="http://127.0.0.1:9/file_list.json")
    proc = call("stages.fetch", cwd=project, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "set fetch.file_list to its path" in proc.stderr


@pytest.mark.slow
def test_too_many_bad_bins_fail_the_stage_but_keep_the_report(tmp_path, abid_bucket):
    b = abid_bucket
    project = new_project(tmp_path, b, b.url, [dict(sorted(b.clean.items())[:10]), b.faults], max_bad_fraction=0.01)
    proc = call("stages.fetch", "--no-progress", cwd=project, check=False)
    assert proc.returncode == 2 and "fetch.max_bad_fraction" in proc.stderr
    report = json.loads((project / "data/fetch_report.json").read_text())
    assert report["bad"] == len(b.faults) and report["ok"] == 10
