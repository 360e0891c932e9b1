"""fetch from a local copy of the bucket (`fetch.local_dir`): the objects of the listed bins on the
local S3 server are synced to a folder with boto3, as `aws s3 sync` would, and fetching from that
folder must give the same manifest and the same fault report as fetching from S3, with no S3 server
involved."""

import json
from pathlib import Path

import pytest

from binsight.data.download import local_folder
from binsight.errors import ConfigError
from tests.support.bucket import admin_client
from tests.support.project import call, git_commit, make_project, set_params

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("local_fetch")]


def sync_bucket(url, bucket, dest, bins):
    """Every object of `bucket` that belongs to one of `bins` (by id) to dest/<key>, like
    `aws s3 sync s3://bucket dest` with an --exclude for the others."""
    client = admin_client(url)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            if Path(obj["Key"]).stem not in bins:
                continue
            path = Path(dest) / obj["Key"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    return Path(dest)


def fetch(project, **fetch_params):
    set_params(project, {"fetch": {"file_list": "file_list.json", "max_bad_fraction": 0.2, **fetch_params}})
    return call("stages.fetch", "--no-progress", cwd=project)


@pytest.fixture(scope="module")
def both(tmp_path_factory, abid_bucket):
    tmp = tmp_path_factory.mktemp("local")
    b = abid_bucket
    clean = dict(sorted(b.clean.items())[:60])  # every fault and real sample, and 60 of the generated bins
    copy = sync_bucket(b.url, b.name, tmp / "abid-copy", {*clean, *b.faults, *b.real})
    projects = {}
    for name in ("s3", "local"):
        project = make_project(tmp / name, commit=False)
        b.write_file_list(project / "file_list.json", clean, b.faults, b.real)
        git_commit(project, "fetch test")
        projects[name] = project
    out_s3 = fetch(projects["s3"], endpoint_url=b.url)
    # file:// form, and an endpoint that points nowhere: the local copy must not touch S3 at all
    out_local = fetch(projects["local"], local_dir=copy.as_uri(), endpoint_url="http://127.0.0.1:9")
    return projects, copy, out_s3.stdout, out_local.stdout, clean


def test_local_copy_gives_the_same_manifest_as_s3(both, abid_bucket):
    projects, copy, _, out_local, clean = both
    manifests = {name: (p / "data/raw/manifest.csv").read_text() for name, p in projects.items()}
    assert manifests["local"] == manifests["s3"]
    assert len(manifests["local"].splitlines()) == 1 + len(clean) + len(abid_bucket.real)
    assert f"from the local copy {copy}" in out_local


def test_local_copy_names_the_same_corrupt_and_missing_bins(both, abid_bucket):
    projects, *_ = both
    reports = {name: json.loads((p / "data/fetch_report.json").read_text()) for name, p in projects.items()}
    bad = {name: {r["id"]: r["reason"] for r in rep["bad_bins"]} for name, rep in reports.items()}
    assert bad["local"] == bad["s3"] == abid_bucket.expected_bad
    assert {"corrupt_image", "missing_image", "missing_metadata", "unreadable_metadata"} <= set(bad["local"].values())


def test_rerun_from_the_local_copy_copies_nothing_again(both):
    projects, copy, *_ = both
    out = fetch(projects["local"], local_dir=str(copy)).stdout  # a plain path works too
    report = json.loads((projects["local"] / "data/fetch_report.json").read_text())
    assert report["downloaded_objects"] == 0, out
    reasons = ", ".join(f"{reason}: {n}" for reason, n in report["bad_reasons"].items())
    assert f"fetch: {report['ok']} ok, {report['bad']} bad ({reasons}), 0 objects copied; report in" in out, out


def test_a_local_dir_that_is_not_a_folder_is_a_one_line_error(both, tmp_path):
    projects, *_ = both
    set_params(projects["local"], {"fetch": {"local_dir": str(tmp_path / "nowhere")}})
    proc = call("stages.fetch", "--no-progress", cwd=projects["local"], check=False)
    assert proc.returncode == 2 and "is not a folder" in proc.stderr and "Traceback" not in proc.stderr


def test_local_folder_accepts_paths_and_file_urls(tmp_path):
    assert local_folder(str(tmp_path)) == tmp_path
    assert local_folder(tmp_path.as_uri()) == tmp_path
    assert local_folder(None) is None
    with pytest.raises(ConfigError, match="not a folder path or file:// URL"):
        local_folder("s3://aft-vbi-pds")
