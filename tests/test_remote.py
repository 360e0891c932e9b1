"""`dvc push` / `dvc pull` through dvc-s3 to a real S3 server on loopback."""

import hashlib
import shutil

import pytest

from tests.support.bucket import admin_client
from tests.support.project import dvc

pytestmark = pytest.mark.e2e

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
OUTPUTS = [
    "data/raw",
    "data/split",
    "data/shards",
    "data/fetch_report.json",
    "data/predictions",
    "models/trained.pt",
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


def test_push_delete_pull_restores_identical_outputs(trained_project, clone_project, s3_server):
    project = clone_project(trained_project)
    admin_client(s3_server.url).create_bucket(Bucket="binsight-remote")
    dvc(project, "remote", "add", "-d", "store", "s3://binsight-remote/dvcstore")
    dvc(project, "remote", "modify", "store", "endpointurl", s3_server.url)
    before = digests(project)
    assert len(before) > 400  # images, metadata, splits, model, metrics

    pushed = dvc(project, "push", **CREDS)
    assert "pushed" in pushed.stdout.lower() or "files pushed" in pushed.stdout.lower(), pushed.stdout
    listed = admin_client(s3_server.url).list_objects_v2(Bucket="binsight-remote", Prefix="dvcstore/")
    assert listed["KeyCount"] > 0

    shutil.rmtree(project / ".dvc" / "cache")
    for rel in OUTPUTS:
        path = project / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert not (project / "models/model.pt").exists()

    dvc(project, "pull", **CREDS)
    assert digests(project) == before
    again = dvc(project, "repro", **CREDS).stdout
    assert "Running stage" not in again, again
