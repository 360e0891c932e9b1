"""`dvc push` / `dvc pull` through dvc-s3 to a real S3 server on loopback. The raw copy (data/raw/images,
data/raw/metadata: two files a bin) stays out of the DVC cache: pull restores everything else, and
`dvc repro` fetches the raw copy again from the bucket without rerunning any stage after fetch."""

import hashlib
import shutil

import pytest

from tests.support.bucket import admin_client
from tests.support.project import dvc, set_params

pytestmark = pytest.mark.e2e

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
RAW = ["data/raw/images", "data/raw/metadata"]
OUTPUTS = [
    "data/raw/manifest.csv",
    "data/split",
    "data/shards",
    "data/fetch_report.json",
    "data/predictions",
    "models/model.pt",
    "dvclive/train",
    "dvclive/evaluate",
]


def digests(project):
    out = {}
    for rel in OUTPUTS:
        root = project / rel
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f.relative_to(project))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def test_push_delete_pull_restores_identical_outputs(trained_project, clone_project, s3_server, abid_bucket):
    project = clone_project(trained_project)
    admin_client(s3_server.url).create_bucket(Bucket="binsight-remote")
    dvc(project, "remote", "add", "-d", "store", "s3://binsight-remote/dvcstore")
    dvc(project, "remote", "modify", "store", "endpointurl", s3_server.url)
    before = digests(project)
    assert len(before) > 10  # manifest, splits, shards, model, metrics
    raw_before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for rel in RAW for p in (project / rel).iterdir()}

    pushed = dvc(project, "push", **CREDS)
    assert "pushed" in pushed.stdout.lower() or "files pushed" in pushed.stdout.lower(), pushed.stdout
    listed = admin_client(s3_server.url).list_objects_v2(Bucket="binsight-remote", Prefix="dvcstore/", MaxKeys=1000)
    assert 0 < listed["KeyCount"] < len(raw_before) // 2  # shards and outputs, not two objects a bin

    shutil.rmtree(project / ".dvc" / "cache")
    for rel in OUTPUTS + RAW:
        path = project / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert not (project / "models/model.pt").exists()

    dvc(project, "pull", **CREDS)
    assert digests(project) == before
    assert not any((project / rel).exists() and any((project / rel).iterdir()) for rel in RAW)
    # The raw copy comes from the bucket again (this worker's server holds the same bins), and only fetch runs.
    set_params(project, {"fetch": {"endpoint_url": abid_bucket.url}})
    again = dvc(project, "repro", **CREDS).stdout
    assert "Running stage 'fetch'" in again
    assert [line for line in again.splitlines() if line.startswith("Running stage") and "'fetch'" not in line] == []
    raw_after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for rel in RAW for p in (project / rel).iterdir()}
    assert raw_after == raw_before
