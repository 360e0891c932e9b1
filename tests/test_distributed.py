"""torchrun (DDP, gloo, 2 CPU processes), the shard sampler, profiling and the collapse warning."""

import csv
import json

import pytest

from binsight.model.counting_model import load_model
from binsight.train.distributed import ShardSampler
from binsight.train.training_run import collapse_streak
from tests.support.dataset import SMALL_MODEL, SMALL_TRAIN, write_dataset
from tests.support.project import git_commit, make_project, python_m, run

pytestmark = pytest.mark.xdist_group("ddp")


@pytest.mark.parametrize("n,world", [(20, 2), (21, 2), (7, 3), (1, 2)])
def test_shards_cover_every_sample_exactly_once(n, world):
    for epoch in (0, 1):
        shards = []
        for rank in range(world):
            sampler = ShardSampler(n, rank, world, shuffle=True, seed=5)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
            assert len(sampler) == len(shards[-1])
        merged = [i for shard in shards for i in shard]
        assert sorted(merged) == list(range(n))
    a, b = ShardSampler(n, 0, 1, seed=5), ShardSampler(n, 0, 1, seed=5)
    b.set_epoch(1)
    assert n < 3 or list(a) != list(b)  # reshuffled every epoch


def test_collapse_streak_counts_one_class_epochs():
    streak = collapse_streak(0, [0, 0, 9, 0, 0])
    assert streak == 1 and collapse_streak(streak, [0, 0, 9, 0, 0]) == 2
    assert collapse_streak(2, [1, 0, 8, 0, 0]) == 0


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    project = make_project(
        tmp_path_factory.mktemp("ddp") / "proj",
        commit=False,
        params={
            "model": SMALL_MODEL,
            "train": {
                **SMALL_TRAIN,
                "epochs": 2,
                "profile": True,
                "distributed": {"nproc_per_node": 2, "backend": "gloo"},
            },
        },
    )
    splits = write_dataset(project, n_per_class=9)
    git_commit(project, "ddp project")
    proc = run(python_m("stages.train"), project, timeout=600)
    return project, splits, proc


@pytest.mark.e2e
def test_two_process_run_trains_and_writes_one_model(ddp_run):
    project, splits, proc = ddp_run
    assert "torch.distributed.run --standalone --nproc_per_node=2" in proc.stdout
    assert "x2 processes" in proc.stdout
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("epoch 2/2") for line in lines) == 1  # only rank 0 prints
    # progress lines (one at the end of each epoch, at least) come from rank 0 alone too
    assert sum(line.startswith("train epoch 2/2: ") for line in lines) == 1
    assert sorted(p.name for p in (project / "models").glob("*.pt")) == ["checkpoint.pt", "trained.pt"]
    model, meta = load_model(project / "models/trained.pt")
    assert meta["classes"] == [1, 2, 3, 4, 5]


@pytest.mark.e2e
def test_two_processes_see_each_training_sample_once_per_epoch(ddp_run):
    project, splits, _ = ddp_run
    rows = list(csv.DictReader(open(project / "dvclive/train/plots/metrics/train/images_seen.tsv"), delimiter="\t"))
    assert [int(float(r["images_seen"])) for r in rows] == [len(splits["train"])] * 2


@pytest.mark.e2e
def test_profile_writes_a_trace_and_a_step_breakdown(ddp_run):
    project, _, proc = ddp_run
    trace = json.loads((project / "dvclive/train/profile/trace.json").read_text())
    assert trace["traceEvents"], "empty trace"
    assert "aten::" in (project / "dvclive/train/profile/ops.txt").read_text()
    metrics = json.loads((project / "dvclive/train/metrics.json").read_text())
    assert 0 <= metrics["train"]["data_wait_fraction"] < 1
    assert "ui.perfetto.dev" in proc.stdout
