"""The train stage on a small dataset written to disk: bad input, divergence, resume, pretrained weights."""

import copy
import csv
import json
import os
import re

import pytest
import torch
import torchvision
import yaml

from binsight.errors import ConfigError, DataError, one_line_errors
from binsight.model.counting_model import (
    RESNET_LAYOUTS,
    build_model,
    load_model,
    model_from_params,
    resolve_weights,
    save_model,
)
from binsight.params import SCALABLE_ARCHS, TOP_LEVEL_TRAIN, check_model, check_train, load_params, train_section
from binsight.train.loops import cpu_has_bf16, use_channels_last
from binsight.train.training_run import make_optimizer
from tests.support.dataset import SMALL_MODEL, SMALL_TRAIN, write_dataset
from tests.support.project import (
    REPO,
    Ran,
    call,
    experiment_refs,
    git_commit,
    kill_when_written,
    make_project,
    python_m,
    set_params,
)


@pytest.fixture
def project(tmp_path):
    proj = make_project(
        tmp_path / "proj", params={"model": SMALL_MODEL, "train": {**SMALL_TRAIN, "epochs": 1}}, commit=False
    )
    write_dataset(proj, n_per_class=4)
    git_commit(proj, "small project")
    return proj


def train(project, check=False, **env_extra):
    return call("stages.train", cwd=project, check=check, **env_extra)


def one_line_error(proc):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    "section,override,expected",
    [
        ("model", {"arch": "resnet9000"}, "model.arch='resnet9000' is not allowed"),
        ("train", {"lr": -0.1}, "lr=-0.1 is not allowed"),
    ],
)
def test_bad_params_stop_the_stage_before_training(project, section, override, expected):
    set_params(project, {section: override})
    line = one_line_error(train(project))
    assert expected in line
    assert not (project / "models/trained.pt").exists()


@pytest.mark.parametrize(
    "check,override,expected",
    [
        (check_model, {"weights": "IMAGENET9K"}, None),
        (check_model, {"head": {"hidden": [0]}}, "model.head.hidden"),
        (check_model, {"width": 0}, "model.width=0 is not allowed: expected a number from 0.125 to 4"),
        (check_model, {"width": 0.5}, "or set model.weights: none"),  # the default weights are ImageNet's
        (check_model, {"width": 0.5, "weights": "none", "arch": "convnext_tiny"}, "1 for convnext_tiny"),
        (check_train, {"lr": 0}, "lr=0 is not allowed"),
        (check_train, {"lr": float("nan")}, "lr=nan is not allowed"),
        (check_train, {"batch_size": 0}, "batch_size=0 is not allowed"),
        (check_train, {"optimizer": "adagrad"}, "adam, adamw or sgd"),
        (check_train, {"scheduler": "onecycle"}, "cosine, step or none"),
        (check_train, {"amp": "fp8"}, "auto, bf16, fp16 or off"),
        (check_train, {"aux_weight": -1}, "train.aux_weight=-1 is not allowed: expected 0 (off)"),
    ],
)
def test_bad_values_are_named_with_what_is_allowed(check, override, expected):
    defaults = yaml.safe_load(open(REPO / "params.yaml"))
    name = "model" if check is check_model else "train"
    top = {key: defaults[key] for key in TOP_LEVEL_TRAIN} if name == "train" else {}
    values = {**defaults[name], **top, **override}
    if expected is None:  # weights names are checked against torchvision's enum when the model is built
        with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
            resolve_weights(values["arch"], values["weights"])
        return
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check(values)


def test_amp_off_as_yaml_reads_it_is_off():
    # `dvc exp run -S train.amp=off` and `amp: off` in params.yaml both reach us as False (YAML 1.1)
    defaults = yaml.safe_load(open(REPO / "params.yaml"))
    values = {**defaults["train"], **{key: defaults[key] for key in TOP_LEVEL_TRAIN}, "amp": yaml.safe_load("off")}
    assert check_train(values).amp == "off"


def test_empty_split_and_missing_image_are_named(project):
    (project / "data/split/val.csv").write_text("id,label\n")
    assert "val.csv is empty" in one_line_error(train(project))
    write_dataset(project, n_per_class=4)
    victim = next(csv.DictReader(open(project / "data/split/train.csv")))["id"]
    (project / f"data/raw/images/{victim}.jpg").unlink()
    line = one_line_error(train(project))
    assert f"{victim}.jpg" in line and "missing" in line


@pytest.mark.slow
def test_diverging_loss_stops_with_epoch_and_lr(project):
    set_params(
        project, {"train": {"optimizer": "sgd", "lr": 1e30, "epochs": 3, "scheduler": "none", "warmup_epochs": 0}}
    )
    line = one_line_error(train(project))
    assert re.search(r"loss is (nan|inf) at epoch [1-3] with lr 1e\+30", line) and "lower lr" in line


def test_pretrained_weights_offline_give_one_line_with_the_fix(tmp_path, monkeypatch, capsys):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for proxy in ("HTTPS_PROXY", "https_proxy"):  # nothing listens there: offline
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    with pytest.raises(SystemExit) as stopped:
        one_line_errors(build_model)("resnet18", "imagenet", 5)
    line = one_line_error(Ran(stopped.value.code, "", capsys.readouterr().err))
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    assert str(home / "hub" / "checkpoints" / os.path.basename(weights.url)) in line
    assert weights.url in line and "model.weights: none" in line


def test_pretrained_weights_load_from_the_hub_cache(tmp_path, monkeypatch):
    weights = resolve_weights("resnet18", "imagenet")
    reference = torchvision.models.resnet18()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / os.path.basename(weights.url))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = build_model("resnet18", "imagenet", num_classes=5, freeze_backbone=True)
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    assert not model.backbone.training and model.head.training  # frozen BN statistics


@pytest.mark.parametrize("arch", ["efficientnet_b0", "convnext_tiny"])
def test_other_torchvision_families_get_a_new_head(arch):
    model = build_model(arch, "none", num_classes=5, hidden=[32], dropout=0.1)
    out = model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 5) and model.head[0].in_features == model.feature_dim


def test_a_narrower_resnet_keeps_its_width_through_the_model_file(tmp_path):
    params = {
        "arch": "resnet18",
        "weights": "none",
        "freeze_backbone": False,
        "head": {"hidden": [], "dropout": 0.0},
        "tta": "none",
        "width": 0.5,
    }
    model = model_from_params(check_model(params), 5)
    full = build_model("resnet18", "none", 5)
    assert set(SCALABLE_ARCHS) == set(RESNET_LAYOUTS)  # what params accepts is what model can build
    assert model.feature_dim == 256 and model.backbone.conv1.out_channels == 32
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters()) / 3
    assert {t.device.type for t in model.state_dict().values()} == {"cpu"}  # none left on the meta device
    conv = model.backbone.layer4[1].conv2.weight  # torchvision's init: kaiming normal, fan_out
    assert conv.std().item() == pytest.approx((2 / (conv.shape[0] * 9)) ** 0.5, rel=0.05)
    save_model(tmp_path / "model.pt", model, [1, 2, 3, 4, 5], check_model(params), 64)
    loaded, _ = load_model(tmp_path / "model.pt")
    x = torch.rand(2, 3, 64, 64)
    model.eval()
    assert torch.equal(loaded(x), model(x))


def test_unknown_weights_name_lists_the_choices():
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        resolve_weights("resnet50", "IMAGENET_BEST")
    with pytest.raises(DataError, match="not found"):
        load_model("nowhere/model.pt")


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_steps_run_fused_and_update_as_torchs_default_does(name):
    """make_optimizer picks torch's fused Adam/AdamW kernel for a model on the CPU (or a GPU); three steps
    of it move every weight as the default implementation does, to float rounding. Pinned to the CPU."""
    train_params = train_section(load_params()).replace(optimizer=name, lr=0.01, backbone_lr=0.001, weight_decay=0.05)
    torch.manual_seed(0)
    model = model_from_params(check_model(SMALL_MODEL), 5)
    twin, initial = copy.deepcopy(model), copy.deepcopy(model)
    fused = make_optimizer(model, train_params)
    assert all(g["fused"] for g in fused.param_groups) and [g["lr"] for g in fused.param_groups] == [0.001, 0.01]
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    default = cls(
        [
            {"params": list(twin.backbone.parameters()), "lr": 0.001},
            {"params": list(twin.head.parameters()), "lr": 0.01},
        ],
        weight_decay=0.05,
    )
    assert not any(g["fused"] for g in default.param_groups)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    for _ in range(3):  # the same gradients into both: only the update arithmetic differs
        fused.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        for a, b in zip(model.parameters(), twin.parameters()):
            b.grad = a.grad.clone()
        fused.step()
        default.step()
    assert all(not torch.equal(a, b) for a, b in zip(model.parameters(), initial.parameters()))  # every weight moved
    for a, b in zip(model.parameters(), twin.parameters()):  # (the twin's BatchNorm statistics never ran)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # a step moves a weight by ~1e-3
    assert not make_optimizer(model, train_params.replace(optimizer="sgd")).param_groups[0].get("fused")


@pytest.mark.parametrize(
    "device,dtype,expected",
    [
        ("cuda", None, True),
        ("cuda", torch.float16, True),
        ("cpu", torch.bfloat16, True),
        ("cpu", None, False),
        ("mps", None, False),
    ],
)
def test_channels_last_on_a_gpu_and_under_bf16_on_the_cpu(device, dtype, expected):
    assert use_channels_last(True, torch.device(device), dtype) is expected
    assert use_channels_last(False, torch.device(device), dtype) is False  # train.channels_last: false


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["bf16", "off"])
def test_bf16_training_on_the_cpu_is_channels_last_where_the_cpu_computes_bf16(project, amp):
    """Pinned to the CPU (the stage runs with CUDA_VISIBLE_DEVICES empty). train.amp: bf16 on a CPU with
    native bf16 trains under autocast with the model channels-last (its checkpoint holds the weights so);
    anywhere else, and with amp off, in fp32 and the default layout. The model file loads either way."""
    set_params(project, {"train": {"amp": amp}})
    proc = train(project)
    assert proc.returncode == 0, proc.stderr
    bf16 = amp == "bf16" and cpu_has_bf16()
    assert ("on cpu with bfloat16, channels-last," in proc.stdout) is bf16, proc.stdout
    assert ("channels-last" in proc.stdout) is bf16, proc.stdout
    conv = torch.load(project / "models/checkpoint.pt", weights_only=False)["model"]["backbone.conv1.weight"]
    assert conv.is_contiguous(memory_format=torch.channels_last) is bf16 and conv.is_contiguous() is not bf16
    model, meta = load_model(project / "models/trained.pt")
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 5)


def test_a_change_of_epochs_is_not_resumable_but_patience_is(tmp_path):
    """The warmup + cosine schedule spans all epochs: a run with other `epochs` must start over."""
    from binsight.train.checkpoint import fingerprint

    split = tmp_path / "train.csv"
    split.write_text("id,label\n1,1\n")
    defaults = yaml.safe_load(open(REPO / "params.yaml"))
    train_params = {**defaults["train"], **{k: defaults[k] for k in TOP_LEVEL_TRAIN}}
    base = fingerprint(defaults["model"], train_params, [split])
    assert fingerprint(defaults["model"], {**train_params, "epochs": train_params["epochs"] + 1}, [split]) != base
    assert fingerprint(defaults["model"], {**train_params, "patience": 99}, [split]) == base


@pytest.mark.e2e
def test_a_killed_and_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    """CPU, deterministic: the checkpoint carries weights, optimizer, per-step schedule, EMA, the
    training-only head of the metadata targets and the random streams (augmentation), so kill -9 +
    resume goes on at the next epoch and gives the uninterrupted run's exact weights, metrics and
    curves; a finished run is not resumed again."""
    train_params = {
        **SMALL_TRAIN,
        "epochs": 6,
        "image_size": 48,
        "cache_images": True,
        "augment": "flips",
        "ema": 0.9,
        "warmup_epochs": 1,
        "aux_weight": 1.0,
    }
    runs = {}
    for name in ("straight", "killed"):
        proj = make_project(tmp_path / name, params={"model": SMALL_MODEL, "train": train_params}, commit=False)
        write_dataset(proj, n_per_class=12)
        git_commit(proj, "small project")
        runs[name] = proj
    train(runs["straight"], check=True)

    proj, ckpt = runs["killed"], runs["killed"] / "models/checkpoint.pt"
    kill_when_written(python_m("stages.train"), proj, ckpt)  # epoch 1's checkpoint just landed
    saved = torch.load(ckpt, weights_only=False)
    saved_epoch = saved["epoch"]
    assert saved_epoch < 5, "training finished before the kill"
    assert saved["model"]["aux.weight"].shape[0] == 7  # the second head resumes too
    # the kill can land while dvclive rewrites its summary in place (seen in CI): an empty file
    (proj / "dvclive/train/metrics.json").write_text("")
    out = train(proj, check=True).stdout
    assert f"resuming at epoch {saved_epoch + 2}/6" in out, out
    epochs_run = [line.split()[1] for line in out.splitlines() if line.startswith("epoch ")]
    assert epochs_run == [f"{e}/6" for e in range(saved_epoch + 2, 7)], out

    a = torch.load(runs["straight"] / "models/trained.pt", weights_only=False)
    b = torch.load(proj / "models/trained.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] and a["val_acc"] == b["val_acc"] and b["classes"] == [1, 2, 3, 4, 5]
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), key
    curves = {
        name: [
            r["loss"] for r in csv.DictReader(open(p / "dvclive/train/plots/metrics/train/loss.tsv"), delimiter="\t")
        ]
        for name, p in runs.items()
    }
    assert curves["killed"] == curves["straight"]
    steps = [
        int(r["step"]) for r in csv.DictReader(open(proj / "dvclive/train/plots/metrics/val/acc.tsv"), delimiter="\t")
    ]
    assert steps == [1, 2, 3, 4, 5, 6]  # every epoch once, counted as the log counts them
    assert json.loads((proj / "dvclive/train/metrics.json").read_text())["step"] == 6  # the summary, whole again
    # a finished run is not resumed again: a forced rerun starts fresh
    assert "starting fresh (checkpoint is from a finished run)" in train(proj, check=True).stdout
    # run by hand, the stage records no experiment (`dvc exp run` does): no ref under refs/exps
    assert experiment_refs(proj) == set()


def test_curves_cut_by_a_kill_mid_epoch_are_trimmed_to_the_last_whole_epoch(tmp_path):
    """A kill between two curves' rows of one epoch: that epoch is dropped from every curve (then
    logged again whole on resume), so no curve has an epoch twice or lacks one."""
    from binsight.train.training_run import complete_curves

    curves = tmp_path / "plots" / "metrics"
    (curves / "train").mkdir(parents=True)
    (curves / "val").mkdir()
    (curves / "train/loss.tsv").write_text("step\tloss\n0\t1.5\n1\t1.2\n")
    (curves / "train/acc.tsv").write_text("step\tacc\n0\t0.3\n1\t0.4\n2\t0.")  # half-written row
    (curves / "val/acc.tsv").write_text("step\tacc\n0\t0.25\n")
    assert complete_curves(tmp_path, ["train/loss", "train/acc", "val/acc"]) == 0
    assert (curves / "train/loss.tsv").read_text() == "step\tloss\n0\t1.5\n"
    assert (curves / "train/acc.tsv").read_text() == "step\tacc\n0\t0.3\n"
    assert (curves / "val/acc.tsv").read_text() == "step\tacc\n0\t0.25\n"
    assert complete_curves(tmp_path, ["train/loss", "val/loss"]) == -1  # val/loss never written
    # killed between creating a curve's file and writing its header: the file goes, so that
    # dvclive (which writes a header only into a file it creates) starts it again whole
    (curves / "train/loss.tsv").write_text("step\tloss\n0\t1.5\n")
    (curves / "val/acc.tsv").write_text("")
    assert complete_curves(tmp_path, ["train/loss", "val/acc"]) == -1
    assert not (curves / "val/acc.tsv").exists() and (curves / "train/loss.tsv").read_text() == "step\tloss\n"
