"""The named recipes are one command each, and every override they set is a valid param."""

import copy

import pytest
import yaml

from binsight.params import check_model, load_params, train_section
from binsight.tune.recipes import FP32_EPOCHS, RECIPES, overrides, set_flags
from tests.support.project import REPO, call


def apply(params, flags):
    params = copy.deepcopy(params)
    for key, value in (flag.split("=", 1) for flag in flags[1::2]):
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        assert leaf in node, f"{key} is not a param of params.yaml"
        node[leaf] = yaml.safe_load(value)
    return params


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_sets_valid_params(name):
    params = apply(load_params(REPO / "params.yaml"), set_flags(RECIPES[name]))
    model, train = check_model(params["model"]), train_section(params)
    if name == "notebook":
        assert model.freeze_backbone and model.weights == "IMAGENET1K_V1" and train.loss == "ce"
    if name == "cpu-scratch":
        assert model.weights == "none" and train.backbone_lr is None and train.cache_images
    assert model.width == 1.0  # explicit: a half-width experiment applied to the workspace must not leak in


# Keys that change what a run learns whatever else is set. `dvc exp run` applies an experiment's params to
# the workspace, so a recipe that left one out would inherit the last experiment's value (seen: a cpu-scratch
# run after an aux_weight=1 one trained with the metadata targets).
PINNED = {
    "fetch.file_list",
    "classes.policy",
    "train.data",
    "model.arch",
    "model.weights",
    "model.freeze_backbone",
    "model.width",
    "model.head.hidden",
    "model.head.dropout",
    "model.tta",
    "lr",
    "batch_size",
    "epochs",
    "train.optimizer",
    "train.weight_decay",
    "train.scheduler",
    "train.warmup_epochs",
    "train.loss",
    "train.balance",
    "train.ema",
    "train.aux_weight",
    "train.augment",
    "train.image_size",
    "train.label_smoothing",
    "train.patience",
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_recipe_pins_every_key_that_changes_what_a_run_learns(name):
    assert PINNED <= set(RECIPES[name]), sorted(PINNED - set(RECIPES[name]))


def test_the_gpu_recipe_is_the_params_yaml_defaults():
    defaults = load_params(REPO / "params.yaml")
    assert apply(defaults, set_flags(RECIPES["gpu"])) == defaults


def dry_run(*args):
    return call("binsight.cli", "recipe", *args, "--dry-run", cwd=REPO).stdout


def test_recipe_command_prints_the_dvc_exp_run_it_runs():
    out = dry_run("notebook", "-S", "epochs=2")
    assert out.startswith("dvc exp run -n notebook -S fetch.file_list=abid/file_list.json -S classes.policy=subset")
    assert "-S model.arch=resnet50" in out
    assert "-S model.freeze_backbone=true" in out and out.strip().endswith("-S epochs=2")
    seeded = dry_run("cpu-scratch", "-n", "scratch-s1", "-S", "train.seed=1")
    assert seeded.startswith("dvc exp run -n scratch-s1 -S ") and seeded.strip().endswith("-S train.seed=1")
    assert set_flags({"a": None, "b": [512], "c": False}) == ["-S", "a=null", "-S", "b=[512]", "-S", "c=false"]


def test_cpu_scratch_runs_fewer_fp32_epochs_where_bf16_is_not_native():
    assert overrides("cpu-scratch", native_bf16=True) == RECIPES["cpu-scratch"]
    fp32 = overrides("cpu-scratch", native_bf16=False)
    assert fp32["epochs"] == FP32_EPOCHS < RECIPES["cpu-scratch"]["epochs"]
    assert {k: v for k, v in fp32.items() if k != "epochs"} == {
        k: v for k, v in RECIPES["cpu-scratch"].items() if k != "epochs"
    }
    assert overrides("notebook", native_bf16=False) == RECIPES["notebook"]
