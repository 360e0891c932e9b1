"""fetch.layout: shards: fetch straight into raw tar shards, against a real S3 server on loopback,
through the real `dvc repro`; the raw shards read back by every consumer of the fetched bins."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from binsight.data.download import BinRecord
from binsight.data.image_datasets import BinImages, eval_transform
from binsight.data.raw_bins import RAW_INDEX, RawBins
from binsight.data.raw_shards import pack, unpack
from tests.support.bucket import REAL_SAMPLE
from tests.support.project import call, dvc, kill_when, python_m, set_params
from tests.support.s3server import S3Proxy
from tests.test_fetch_pipeline import new_project, read_rows

pytestmark = pytest.mark.xdist_group("fetch")


def image_gets(proxy):
    return {Path(k).stem for k in proxy.gets if k.endswith(".jpg")}


def test_raw_bins_read_the_same_bytes_and_pixels_as_the_files(tmp_path):
    ids = sorted(p.stem for p in (REAL_SAMPLE / "bin-images").glob("*.jpg"))[:6]
    records = [BinRecord(id=i, label=1, ok=True) for i in ids]
    shard_dir = tmp_path / "images"
    shard_dir.mkdir()
    bins = pack(shard_dir / "raw-00000.tar", records, REAL_SAMPLE / "bin-images", REAL_SAMPLE / "metadata")
    index = {"format": "binsight-raw-shards", "shards": {"raw-00000.tar": {"bins": bins}}}
    (shard_dir / RAW_INDEX).write_text(json.dumps(index))
    raw = RawBins(shard_dir, tmp_path / "metadata")
    assert raw.sharded and raw.missing([*ids, "nope"]) == ["nope"]
    for i in ids:
        assert raw.image_bytes(i) == (REAL_SAMPLE / "bin-images" / f"{i}.jpg").read_bytes()
        assert raw.metadata_bytes(i) == (REAL_SAMPLE / "metadata" / f"{i}.json").read_bytes()
    rows = [(i, 1) for i in ids]
    from_files = BinImages(rows, REAL_SAMPLE / "bin-images", [1], eval_transform(32), 32)
    from_shards = BinImages(rows, shard_dir, [1], eval_transform(32), 32)
    for k in range(len(rows)):
        assert torch.equal(from_files[k][0], from_shards[k][0])
    out = tmp_path / "unpacked"
    out.mkdir()
    assert unpack(shard_dir / "raw-00000.tar", index["shards"]["raw-00000.tar"], set(ids[:2]), out, out) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{i}.{ext}" for i in ids[:2] for ext in ("jpg", "json"))


@pytest.mark.e2e
def test_fetch_into_raw_shards_tracks_few_files_and_feeds_the_shard_stage(tmp_path, abid_bucket):
    b = abid_bucket
    good = {**b.clean, **b.real}
    project = new_project(tmp_path, b, b.url, [b.clean, b.faults, b.real], layout="shards", shard_size=64)
    set_params(project, {"shard": {"pack": "always"}})  # the training shards too, though train.data is files
    dvc(project, "repro", "shard")
    images, metadata = project / "data/raw/images", project / "data/raw/metadata"
    tars = sorted(p.name for p in images.glob("raw-*.tar"))
    n_listed = len(good) + len(b.faults)
    assert len(tars) == -(-n_listed // 64)
    assert sorted(p.name for p in images.iterdir()) == sorted([*tars, RAW_INDEX])
    assert not list(metadata.iterdir())
    raw = RawBins(images, metadata)
    assert set(raw.where) == set(good)  # every good bin exactly once, no bad one
    for bin_id in good:
        assert raw.image_bytes(bin_id) == b.images[bin_id]
    manifest = {r["id"]: int(r["label"]) for r in read_rows(project / "data/raw/manifest.csv")}
    assert manifest == good
    report = json.loads((project / "data/fetch_report.json").read_text())
    assert {r["id"]: r["reason"] for r in report["bad_bins"]} == b.expected_bad
    # DVC tracks the shards, not two files a bin
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    outs = {o["path"]: o for o in lock["stages"]["fetch"]["outs"]}
    assert outs["data/raw/images"]["nfiles"] == len(tars) + 1 and outs["data/raw/metadata"]["nfiles"] == 0
    assert "explore" in yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    call("stages.explore", cwd=project)  # reads the metadata out of the raw shards
    assert json.loads((project / "data/explore/summary.json").read_text())

    # Back to one file a bin: nothing is downloaded but the bad bins, tried again; the training shards
    # packed from the files are byte for byte the ones packed from the raw shards.
    from_raw = {p.name: p.read_bytes() for p in (project / "data/shards").glob("*.tar")}
    with S3Proxy(b.url) as counting:
        set_params(project, {"fetch": {"endpoint_url": counting.url, "layout": "files"}})
        out = call("stages.fetch", "--no-progress", cwd=project)
        # the raw shards keep only good bins: each bad one is tried again, its image asked for once its
        # metadata parses (mislabelled bins too)
        tried = {i for i, r in b.expected_bad.items() if r in ("corrupt_image", "missing_image", "label_mismatch")}
        assert image_gets(counting) == tried
    assert f"{len(good)} bins taken out of the raw shards" in out.stdout
    assert not (images / RAW_INDEX).exists() and not list(images.glob("*.tar"))
    mislabelled = {i for i, r in b.expected_bad.items() if r == "label_mismatch"}  # kept as files, as ever
    assert {p.stem for p in images.glob("*.jpg")} == set(good) | mislabelled
    call("stages.shard", "--no-progress", "--out", "data/shards_from_files", cwd=project)
    from_files = {p.name: p.read_bytes() for p in (project / "data/shards_from_files").glob("*.tar")}
    assert from_files == from_raw and from_raw

    # ... and into shards again, with a shorter list: the bins come out of the files, none downloaded,
    # and the bins no longer listed leave the output.
    kept = dict(sorted(good.items())[: len(good) // 2])
    b.write_file_list(project / "file_list.json", kept)
    with S3Proxy(b.url) as counting:
        set_params(project, {"fetch": {"endpoint_url": counting.url, "layout": "shards"}})
        call("stages.fetch", "--no-progress", cwd=project)
        assert not counting.gets
    assert set(RawBins(images).where) == set(kept)
    assert not list(images.glob("*.jpg")) and not list(metadata.iterdir())


@pytest.mark.e2e
def test_killed_fetch_into_shards_resumes_without_downloading_verified_bins_again(tmp_path, abid_bucket):
    b = abid_bucket
    bins = dict(sorted(b.clean.items())[:120])
    with S3Proxy(b.url, delay=0.03) as slow:
        project = new_project(tmp_path, b, slow.url, [bins], concurrency=4, layout="shards", shard_size=20)
        images = project / "data/raw/images"
        # kill once a shard is packed and the next group is under way
        kill_when(
            python_m("stages.fetch", "--no-progress"),
            project,
            lambda: (images / RAW_INDEX).exists() and len(list(images.glob("*.jpg"))) >= 5,
            timeout=60,
            poll=0.02,
        )
    packed = set(RawBins(images).where)
    staged = {p.stem for p in images.glob("*.jpg")}
    done_before = packed | staged
    assert packed and staged and len(done_before) < len(bins), "the kill did not land mid-way"

    with S3Proxy(b.url) as counting:
        set_params(project, {"fetch": {"endpoint_url": counting.url}})
        call("stages.fetch", "--no-progress", cwd=project)
        fetched_again = image_gets(counting)
    assert not fetched_again & done_before, "verified images were downloaded again"
    assert fetched_again == set(bins) - done_before
    raw = RawBins(images)
    assert set(raw.where) == set(bins)
    assert all(raw.image_bytes(i) == b.images[i] for i in bins)
    assert not list(images.glob(".*")) and not list(images.glob("*.jpg"))
