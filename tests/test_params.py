"""One home for every param: the schema in binsight/params.py holds each default, and params.yaml states the
same ones, key for key; a bad value or an unknown key is one line naming the key, the value and what is
allowed."""

import dataclasses
import re

import pytest
import yaml

from binsight.errors import ConfigError
from binsight.params import (
    SECTIONS,
    TOP_LEVEL_TRAIN,
    ClassesParams,
    FetchParams,
    ModelParams,
    SplitParams,
    TrainParams,
    fetch_section,
    parse,
    section,
    train_section,
)
from tests.support.project import REPO

YAML = yaml.safe_load((REPO / "params.yaml").read_text())


def defaults_of(cls):
    """The schema's defaults as params.yaml would spell them."""
    return dataclasses.asdict(cls())


def yaml_section(cls):
    if cls is TrainParams:
        return {**{key: YAML[key] for key in TOP_LEVEL_TRAIN}, **YAML["train"]}
    return YAML[cls.KEY]


def test_params_yaml_has_exactly_the_schemas_sections_and_top_level_keys():
    assert set(YAML) == {cls.KEY for cls in SECTIONS} | set(TOP_LEVEL_TRAIN)


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda cls: cls.KEY)
def test_params_yaml_states_the_schemas_defaults_key_for_key(cls):
    stated, schema = yaml_section(cls), defaults_of(cls)
    assert sorted(stated) == sorted(schema), f"params.yaml {cls.KEY}: keys differ from binsight/params.py"
    for key, value in schema.items():
        assert stated[key] == value, f"{cls.KEY}.{key}: params.yaml says {stated[key]!r}, the schema {value!r}"


def test_a_section_left_out_of_the_file_gets_the_same_params_as_the_one_in_it():
    assert parse(ModelParams, {}) == section(YAML, ModelParams)
    assert parse(TrainParams, {}) == train_section(YAML)
    assert parse(ClassesParams, None) == ClassesParams()


@pytest.mark.parametrize(
    "cls,raw,expected",
    [
        (TrainParams, {"loss": "mse"}, "train.loss='mse' is not allowed: expected one of ce, neighbour, ordinal"),
        (TrainParams, {"lr": -1}, "lr=-1 is not allowed: expected a number > 0"),
        (TrainParams, {"distributed": {"backend": "mpi"}}, "train.distributed.backend='mpi' is not allowed"),
        (TrainParams, {"warmup_epochs": 20, "epochs": 3}, "train.warmup_epochs=20 is not allowed: expected a number"),
        (ModelParams, {"head": {"dropout": 1}}, "model.head.dropout=1 is not allowed: expected a number in [0, 1)"),
        (ModelParams, {"arch": "vgg16"}, "model.arch='vgg16' is not allowed: expected one of resnet18"),
        (SplitParams, {"ratios": {"train": 0.5, "val": 0.2, "test": 0.2}}, "split.ratios must sum to 1"),
        (FetchParams, {"layout": "zip"}, "fetch.layout='zip' is not allowed: expected files"),
        (TrainParams, {"learning_rate": 0.1}, "train.learning_rate is not a param: expected one of lr, batch_size"),
        (ModelParams, {"head": {"layers": [1]}}, "model.head.layers is not a param: expected one of hidden, dropout"),
    ],
)
def test_a_bad_value_or_key_is_one_line_naming_it(cls, raw, expected):
    with pytest.raises(ConfigError) as error:
        parse(cls, raw)
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)


def test_code_reads_attributes_with_the_yaml_spellings_mapped():
    train = parse(TrainParams, {"augment": True, "amp": False})  # older files; `-S train.amp=off` (YAML 1.1)
    assert (train.augment, train.amp) == ("full", "off")
    model = parse(ModelParams, {"width": 1})
    assert isinstance(model.width, float) and model.as_dict()["head"] == {"hidden": [], "dropout": 0.2}


def test_env_overrides_reach_the_fetch_section_and_are_checked():
    p = fetch_section(YAML, {"BINSIGHT_S3_BUCKET": "my-mirror", "BINSIGHT_FETCH_CONCURRENCY": "8"})
    assert (p.bucket, p.concurrency) == ("my-mirror", 8)
    with pytest.raises(ConfigError, match=re.escape("BINSIGHT_FETCH_CONCURRENCY='many' is not a int")):
        fetch_section(YAML, {"BINSIGHT_FETCH_CONCURRENCY": "many"})


def test_no_stage_or_module_reads_a_param_by_its_string_key():
    # train_params["lr"] and its kind: the schema's attributes are the one way in
    pattern = re.compile(r"\b(train_params|model_params|eval_params|tune_params)\[")
    offenders = [
        str(path.relative_to(REPO))
        for folder in ("binsight", "stages")
        for path in (REPO / folder).rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert not offenders
