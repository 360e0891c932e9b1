"""The GPU paths (CUDA, autocast bf16/fp16 with GradScaler, channels-last, NCCL, the server on CUDA):
they run in subprocesses that see the GPUs pytest was started with, where there is one, and are skipped
elsewhere, saying so. The test process itself and every other test stay on the CPU (tests/conftest.py),
because the suite compares numbers across stages exactly."""

import json
import random
import sys

import httpx
import pytest
import torch

from binsight.data.split_files import read_split
from binsight.evaluate.scoring import split_loader, timed_predictions
from binsight.model.counting_model import load_model
from tests.support.dataset import SMALL_MODEL, SMALL_TRAIN, write_dataset
from tests.support.project import git_commit, make_project, run, visible_gpus
from tests.support.serving import Server, untrained_model
from tests.support.synthetic import draw_bin, jpeg_bytes

pytestmark = pytest.mark.e2e

GPUS = visible_gpus()  # asked of nvidia-smi: this process stays on the CPU (tests/conftest.py)
needs_cuda = pytest.mark.skipif(not GPUS, reason="no CUDA GPU visible: the GPU paths need one")
needs_two = pytest.mark.skipif(len(GPUS) < 2, reason="NCCL DDP needs 2 GPUs")


def gpu_project(tmp_path, **train):
    project = make_project(
        tmp_path / "proj",
        commit=False,
        params={"model": SMALL_MODEL, "train": {**SMALL_TRAIN, "epochs": 3, "cache_images": True, **train}},
    )
    write_dataset(project, n_per_class=12)
    git_commit(project, "gpu project")
    return project


@needs_cuda
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_train_and_evaluate_on_the_gpu_with_reduced_precision(tmp_path, amp):
    if amp == "bf16" and GPUS[0] < (8, 0):
        pytest.skip("this GPU has no bf16 (compute capability below 8.0)")
    project = gpu_project(tmp_path, amp=amp, channels_last=True, aux_weight=1.0)  # the metadata targets' head too
    out = run([sys.executable, "-m", "stages.train"], project, gpu=True).stdout
    assert "on cuda" in out and f"with {'bfloat16' if amp == 'bf16' else 'float16'}" in out, out
    run([sys.executable, "-m", "stages.evaluate"], project, gpu=True)
    gpu_metrics = json.loads((project / "dvclive/evaluate/metrics.json").read_text())["test"]
    # the same model file on the CPU in fp32: reduced precision moves probabilities a little, not counts
    model, meta = load_model(project / "models/model.pt")
    rows = read_split(project / "data/split", "test", project / "data/raw/images")
    loader = split_loader(rows, project / "data/raw/images", meta, 64, 0, torch.device("cpu"))
    probs, _ = timed_predictions(model, meta, loader, torch.device("cpu"), None, meta["preprocess"]["tta"])
    cpu_acc = sum(meta["classes"][p.argmax()] == label for p, (_, label) in zip(probs, rows)) / len(rows)
    assert abs(cpu_acc - gpu_metrics["accuracy"]) <= 2 / len(rows)  # at most a borderline image or two


@needs_two
def test_two_gpu_ddp_with_nccl(tmp_path):
    project = gpu_project(tmp_path, distributed={"nproc_per_node": 2, "backend": "nccl"})
    out = run([sys.executable, "-m", "stages.train"], project, gpu=True).stdout
    assert "x2 processes" in out and sum(line.startswith("epoch 3/3") for line in out.splitlines()) == 1


@needs_cuda
def test_the_server_picks_the_gpu_and_answers_as_on_the_cpu(tmp_path):
    """`python -m binsight.serve.http_server` without --device takes CUDA where it is visible (and its reduced
    precision, amp: auto): a bin photo gets about the probabilities of a server pinned to the CPU."""
    model = untrained_model(tmp_path / "model.pt")
    jpeg = jpeg_bytes(draw_bin(3, (520, 400), random.Random(0)))
    answers = {}
    for device, args in (("cuda", []), ("cpu", ["--device", "cpu"])):
        with Server(model, tmp_path / f"{device}.log", *args, as_tests_run=True, gpu=True) as server:
            assert httpx.get(f"{server.url}/health", timeout=60).json()["device"].startswith(device)
            answer = httpx.post(
                f"{server.url}/predict", content=jpeg, headers={"Content-Type": "image/jpeg"}, timeout=120
            )
            assert answer.status_code == 200, answer.text
            answers[device] = answer.json()["probabilities"]
    assert answers["cuda"] == pytest.approx(answers["cpu"], abs=0.02)


@needs_cuda
def test_shards_decoded_by_nvjpeg_train_on_the_gpu_and_match_the_cpu_decode(tmp_path):
    project = gpu_project(tmp_path, data="shards", decode="gpu", num_workers=2, amp="auto")
    run([sys.executable, "-m", "stages.shard", "--no-progress"], project)
    out = run([sys.executable, "-m", "stages.train"], project, gpu=True).stdout
    assert "streaming" in out and "on cuda" in out, out
    run([sys.executable, "-m", "stages.evaluate"], project, gpu=True)
    # nvJPEG and libjpeg decode the same pre-resized JPEGs to within a few levels per pixel
    code = (
        "import torch; from binsight.data.shard_stream import ShardSet, ShardStream, decode_on_device;"
        "s = ShardSet('data/shards'); c = list(range(1, 6));"
        "cpu = [x for x, _, _ in ShardStream(s, 'test', c)];"
        "raw = [x for x, _, _ in ShardStream(s, 'test', c, decode='gpu')];"
        "gpu = decode_on_device(raw, torch.device('cuda')).cpu();"
        "d = (torch.stack(cpu).int() - gpu.int()).abs().float();"
        "print(d.mean().item(), d.max().item())"
    )
    mean, worst = map(float, run([sys.executable, "-c", code], project, gpu=True).stdout.split())
    assert mean < 2 and worst < 40, (mean, worst)
