"""Tar shards: the shard stage's round trip, a corrupt member, resume; the streaming path under torchrun
(gloo, 2 processes), training and evaluate on shards, kill -9 and resume."""

import csv
import io
import json
import os
import shutil
import sys
import tarfile

import pytest
import torch

from binsight.data.shard_stream import ShardBatches, ShardSet, ShardStream, cache_decision, deal, steps_per_epoch
from binsight.data.training_shards import read_index, verify_shards
from binsight.errors import DataError
from binsight.params import TrainParams
from tests.support.bucket import REPO, admin_client
from tests.support.dataset import SMALL_MODEL, SMALL_TRAIN, write_dataset
from tests.support.project import call, git_commit, kill_when_written, make_project, python_m, run, set_params
from tests.test_remote import CREDS

# one worker packs the shards and trains on them test after test (a minute or more in all, so handed out
# first: its data is its own, so it runs while other workers build the shared projects)
pytestmark = [pytest.mark.xdist_group("shards"), pytest.mark.first]
COUNTS = (0, 1, 2, 3, 4, 5, 6, 7)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A project whose split holds counts 0-7, packed into shards of 7 bins."""
    project = make_project(
        tmp_path_factory.mktemp("shards") / "proj",
        commit=False,
        params={
            "model": SMALL_MODEL,
            "train": {**SMALL_TRAIN, "epochs": 3, "data": "shards", "num_workers": 2},
            "shard": {"size": 7, "quality": 95, "seed": 0},
        },
    )
    splits = write_dataset(project, n_per_class=6, classes=COUNTS)
    ran = call("stages.shard", "--no-progress", cwd=project)
    git_commit(project, "sharded project")
    return project, splits, ran


def test_nothing_is_packed_for_a_run_on_files_unless_asked(tmp_path):
    project = make_project(tmp_path / "proj", commit=False, params={"train": {"data": "files"}})
    write_dataset(project, n_per_class=6, classes=(1, 2))
    out = call("stages.shard", "--no-progress", cwd=project).stdout
    assert "nothing to pack" in out
    assert [p.name for p in (project / "data/shards").iterdir()] == ["NOT_PACKED.txt"]
    set_params(project, {"shard": {"pack": "always"}})
    call("stages.shard", "--no-progress", cwd=project)
    assert ShardSet(project / "data/shards").entries("train")


def test_every_bin_lands_in_exactly_one_shard_with_its_label(sharded):
    project, splits, ran = sharded
    shards = ShardSet(project / "data/shards")
    assert shards.index["image_size"] == SMALL_TRAIN["image_size"]
    for name, rows in splits.items():
        entries = shards.entries(name)
        assert all(e["bins"] <= 7 for e in entries)
        stream = ShardStream(shards, name, list(COUNTS), workers=2)
        batches = ShardBatches(stream, 5, torch.device("cpu"), workers=2)
        targets = torch.cat([y for _, y in batches])
        order = batches.order()
        ids = [i for e in entries for i in e["ids"]]
        assert sorted(order.tolist()) == list(range(len(rows)))  # every bin once, none lost
        assert sorted(ids) == sorted(i for i, _ in rows)
        labels = dict(rows)
        assert [COUNTS[t] for t in targets.tolist()] == [labels[ids[p]] for p in order]
    assert verify_shards(project / "data/shards") == []
    assert f"{sum(len(r) for r in splits.values())} bins in" in ran.stdout


def test_a_corrupt_member_is_named_and_a_rerun_rebuilds_only_its_shard(sharded, tmp_path):
    project, splits, _ = sharded
    copy = tmp_path / "proj"
    shutil.copytree(project, copy)
    index = read_index(copy / "data/shards")
    victim = index["splits"]["train"][1]
    path = copy / "data/shards" / victim["file"]
    members = []
    with tarfile.open(path) as tar:
        for m in tar:
            members.append((m.name, tar.extractfile(m).read()))
    bad_id = victim["ids"][2]
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            data = data[:200] + b"\x00" * 50 if name == f"{bad_id}.jpg" else data
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    problems = verify_shards(copy / "data/shards")
    assert any(f"member {bad_id}.jpg does not decode" in p and victim["file"] in p for p in problems)
    stream = ShardStream(ShardSet(copy / "data/shards"), "train", list(COUNTS))
    with pytest.raises(DataError, match=rf"{victim['file']}: member {bad_id}.jpg does not decode"):
        list(stream)
    ran = call("stages.shard", "--no-progress", cwd=copy)
    kept = sum(len(e) for e in index["splits"].values()) - 1
    assert f"({kept} already whole and kept)" in ran.stdout
    assert verify_shards(copy / "data/shards") == []
    assert read_index(copy / "data/shards")["splits"]["train"][1]["sha256"] == victim["sha256"]  # the same bytes again


def test_ranks_and_workers_get_disjoint_shards_and_the_same_steps():
    entries = [{"file": f"s{i}", "bins": b} for i, b in enumerate((10, 10, 10, 3, 10))]
    groups = [g for rank in range(2) for g in deal(entries, rank, 2, 2)]
    files = [e["file"] for g in groups for e in g]
    assert sorted(files) == sorted(e["file"] for e in entries)  # each shard to one (rank, worker)
    # rank 0: s0+s4 | s2 -> 2+1 batches of 4; rank 1: s1 | s3 -> 2+0: every rank runs the smaller
    assert steps_per_epoch(entries, 2, 2, 4) == 2


class CountingShards(ShardSet):
    """The real shard folder, counting how often each tar is opened."""

    def __init__(self, location):
        super().__init__(location)
        self.opened = 0

    def open(self, name):
        self.opened += 1
        return super().open(name)


def test_cached_shards_give_the_uncached_order_and_read_each_tar_once(sharded):
    project, _, _ = sharded
    plain, counted = ShardSet(project / "data/shards"), CountingShards(project / "data/shards")
    kwargs = dict(shuffle=True, buffer=10, seed=5)
    uncached = ShardStream(plain, "train", list(COUNTS), **kwargs)
    cached = ShardStream(counted, "train", list(COUNTS), cache=True, **kwargs)
    for epoch in range(3):
        uncached.set_epoch(epoch)
        cached.set_epoch(epoch)
        want = [(x, y, p) for x, y, p in uncached]
        got = [(x, y, p) for x, y, p in cached]
        assert [(y, p) for _, y, p in got] == [(y, p) for _, y, p in want]
        assert all(torch.equal(a[0], b[0]) for a, b in zip(got, want))
    assert epoch > 0 and [p for _, _, p in want] != sorted(p for _, _, p in want)  # shuffled, not trivially equal
    assert counted.opened == len(plain.entries("train"))  # epochs 2 and 3 came from memory


def test_shard_images_are_cached_only_in_process_and_when_they_fit():
    train = TrainParams(image_size=64, cache_images=True, decode="cpu")
    need = 100 * 3 * 64 * 64
    assert cache_decision(train, 0, 100, free_bytes=4 * need)[0]
    assert not cache_decision(train, 0, 100, free_bytes=need)[0]  # more than half the free memory
    assert not cache_decision(train, 2, 100, free_bytes=4 * need)[0]  # loader workers
    assert not cache_decision(train.replace(decode="gpu"), 0, 100, free_bytes=4 * need)[0]
    assert not cache_decision(train.replace(cache_images=False), 0, 100, free_bytes=4 * need)[0]
    with pytest.raises(ValueError, match="in-process"):
        ShardStream(None, "train", [], workers=2, cache=True)


@pytest.mark.e2e
def test_torchrun_two_processes_stream_disjoint_shards_with_equal_steps(sharded, tmp_path):
    project, splits, _ = sharded
    script = "tests/support/shard_ranks.py"
    run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(REPO / script),
            str(project / "data/shards"),
            str(tmp_path),
            "4",
            "2",
        ],
        cwd=project,
        timeout=300,
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    entries = ShardSet(project / "data/shards").entries("train")
    steps = steps_per_epoch(entries, 2, 2, 4)
    for epoch in (0, 1):
        seen = [set(r["epochs"][epoch]["positions"]) for r in ranks]
        assert [r["epochs"][epoch]["steps"] for r in ranks] == [steps, steps]
        assert not seen[0] & seen[1]  # disjoint
        assert len(seen[0]) == len(seen[1]) == steps * 4
    # a new order every epoch, from the same shards
    assert ranks[0]["epochs"][0]["positions"] != ranks[0]["epochs"][1]["positions"]


@pytest.mark.e2e
def test_training_on_shards_resumes_after_kill_9_and_evaluate_reads_the_test_shards(sharded, tmp_path):
    project, splits, _ = sharded
    copy = tmp_path / "proj"
    shutil.copytree(project, copy)
    status = kill_when_written(python_m("stages.train"), copy, copy / "models/checkpoint.pt")
    assert status == -9
    ran = run(python_m("stages.train"), copy)
    assert "resuming at epoch 2/3" in ran.stdout and "streaming" in ran.stdout
    rows = list(csv.DictReader(open(copy / "dvclive/train/plots/metrics/train/acc.tsv"), delimiter="\t"))
    assert [int(float(r["step"])) for r in rows] == [1, 2, 3]
    call("stages.evaluate", cwd=copy)
    predicted = list(csv.DictReader(open(copy / "data/predictions/test.csv")))
    assert sorted(r["id"] for r in predicted) == sorted(i for i, _ in splits["test"])
    assert {r["id"]: int(r["label"]) for r in predicted} == dict(splits["test"])
    headline = json.loads((copy / "metrics.json").read_text())
    evaluated = json.loads((copy / "dvclive/evaluate/metrics.json").read_text())["test"]
    assert evaluated["counts_1to5"]["n"] == sum(1 for _, c in splits["test"] if 1 <= c <= 5)
    assert headline["test_acc_1to5"] == evaluated["counts_1to5"]["accuracy"]


def test_shards_stream_from_s3_as_from_disk_and_train_reads_them_there(sharded, s3_server, tmp_path, monkeypatch):
    project, splits, _ = sharded
    client = admin_client(s3_server.url)
    client.create_bucket(Bucket="shard-store")
    for path in (project / "data/shards").iterdir():  # what `aws s3 sync data/shards s3://shard-store/v1/` does
        client.put_object(Bucket="shard-store", Key=f"v1/{path.name}", Body=path.read_bytes())
    env = {**CREDS, "AWS_ENDPOINT_URL": s3_server.url}
    local = [(y, p) for _, y, p in ShardStream(ShardSet(project / "data/shards"), "val", list(COUNTS))]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    remote = ShardSet("s3://shard-store/v1")
    streamed = [(y, p) for _, y, p in ShardStream(remote, "val", list(COUNTS))]
    assert remote.s3 and streamed == local
    copy = tmp_path / "proj"
    shutil.copytree(project, copy)
    shutil.rmtree(copy / "data/shards")  # nothing local: every batch comes from the bucket
    set_params(copy, {"train": {"shards": "s3://shard-store/v1/", "epochs": 2, "num_workers": 0, "cache_images": True}})
    ran = call("stages.train", cwd=copy)
    n_train = len(read_index(project / "data/shards")["splits"]["train"])
    assert f"streaming {n_train} train shards from s3://shard-store/v1/" in ran.stdout
    assert "decoded images kept in memory after the first epoch" in ran.stdout  # epoch 2 from memory
    assert (copy / "models/trained.pt").exists()


def test_the_jpeg_bytes_path_decodes_on_the_batch_device_like_the_workers_do(sharded):
    """decode: gpu hands JPEG bytes to torchvision.io.decode_jpeg on the batch's device; here that device is
    the CPU (tests/test_gpu.py runs it with nvJPEG), and the pixels match the workers' PIL decode."""
    project, _, _ = sharded
    shards = ShardSet(project / "data/shards")
    cpu = ShardBatches(ShardStream(shards, "val", list(COUNTS)), 8, torch.device("cpu"))
    raw = ShardBatches(ShardStream(shards, "val", list(COUNTS), decode="gpu"), 8, torch.device("cpu"))
    for (a, ya), (b, yb) in zip(cpu, raw, strict=True):
        assert torch.equal(ya, yb) and a.shape == b.shape
        assert (a - b).abs().mean() < 0.05  # normalised units: a few levels of 255 at most


@pytest.mark.e2e
def test_ddp_training_on_shards_runs_equal_steps_on_both_ranks(sharded, tmp_path):
    project, _, _ = sharded
    copy = tmp_path / "proj"
    shutil.copytree(project, copy)
    batch = 4  # per process: ~29 train bins in shards of 7 make 2 x 2 loader workers' batches
    set_params(
        copy, {"batch_size": batch, "train": {"epochs": 2, "distributed": {"nproc_per_node": 2, "backend": "gloo"}}}
    )
    out = run(python_m("stages.train"), copy, timeout=600).stdout
    entries = ShardSet(copy / "data/shards").entries("train")
    steps = steps_per_epoch(entries, 2, min(2, os.cpu_count()), batch)  # 2 loader workers a rank, at most a core each
    assert f"{steps} steps an epoch on each of 2 process(es)" in out
    seen = list(csv.DictReader(open(copy / "dvclive/train/plots/metrics/train/images_seen.tsv"), delimiter="\t"))
    assert [int(float(r["images_seen"])) for r in seen] == [2 * steps * batch] * 2
    assert (copy / "models/trained.pt").exists()
