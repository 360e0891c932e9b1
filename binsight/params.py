"""Every param of params.yaml, typed: one dataclass per section, each field with its default and its rule.

    params = load_params()                        # the YAML, as a dict (what `dvc exp run -S` edits)
    train = train_section(params)                 # -> TrainParams: train.lr, train.loss, ... checked
    model = section(params, ModelParams)          # -> ModelParams

The defaults live here and nowhere else (tests/test_params.py checks that params.yaml states the same
ones). Dataclasses of the standard library rather than pydantic: the checks are a handful of ranges and
choices, every error must read as one line in the words of params.yaml (`train.loss='x' is not allowed:
expected one of ce, ...`), and the data stages (fetch, split, explore) start without importing anything
heavy. An unknown key is refused, so a typo costs a second and not a failed 2-hour run.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from binsight.errors import ConfigError

PARAMS_FILE = Path("params.yaml")

AUGMENTS = ("none", "flips", "dihedral", "full")  # train.augment (binsight/data/image_datasets.py)
LOSSES = ("ce", "neighbour", "ordinal", "regression")  # train.loss (binsight/model/count_losses.py)
TTA_MODES = ("none", "flips", "dihedral")  # model.tta (binsight/data/square_views.py)
POLICIES = ("subset", "anchors", "clip")  # classes.policy (binsight/data/class_policy.py)
PRUNERS = ("none", "median", "hyperband")  # tune.pruner (binsight/tune/pruning.py)
BALANCE = ("none", "weighted_loss", "sampler")
KNOWN_ARCHS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    *(f"efficientnet_b{i}" for i in range(8)),
    "efficientnet_v2_s",
    "efficientnet_v2_m",
    "efficientnet_v2_l",
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
    "convnext_large",
)
SCALABLE_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")  # model.width != 1 (counting_model.scaled_resnet)
# The notebook's three tuned hyperparameters live at the top of params.yaml, so that
# `dvc exp run -S lr=0.01` works as a user types it; train code sees them as train.lr and so on.
TOP_LEVEL_TRAIN = ("lr", "batch_size", "epochs")


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def require(cond: Any, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}")


# Rules: (predicate, what is allowed, in words)
Rule = tuple[Callable[[Any], bool], str]


def one_of(*choices: str) -> Rule:
    return (lambda v: v in choices), "one of " + ", ".join(choices)


def int_in(low: int, high: float = math.inf, words: str | None = None) -> Rule:
    text = words or (f"an integer >= {low}" if high == math.inf else f"an integer from {low} to {high}")
    return (lambda v: is_int(v) and low <= v <= high), text


def number_in(low: float, high: float, words: str) -> Rule:
    return (lambda v: is_number(v) and low <= v <= high), words


def fraction(words: str = "a number in [0, 1)") -> Rule:
    return (lambda v: is_number(v) and 0 <= v < 1), words


BOOL: Rule = (lambda v: isinstance(v, bool)), "true or false"
INT: Rule = is_int, "an integer"


def optional(rule: Rule, words: str) -> Rule:
    return (lambda v: v is None or rule[0](v)), words


def text(words: str) -> Rule:
    return (lambda v: isinstance(v, str) and bool(v)), words


def param(default: Any, rule: Rule | None = None, key: str | None = None, fix: Callable | None = None) -> Any:
    """A field with its default and its rule. `key`: its name in error messages when not SECTION.NAME (the
    top-level lr). `fix`: turns older or YAML-1.1 spellings into the current one before the rule runs."""
    meta = {"rule": rule, "key": key, "fix": fix}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def nested(cls: type) -> Any:
    return field(default_factory=cls, metadata={"nested": cls})


class Section:
    """A checked section: read its values as attributes; `as_dict()` for JSON, dvclive and model files."""

    KEY: ClassVar[str] = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def replace(self: S, **changes: Any) -> S:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def check(self) -> None:
        """Rules between fields (a subclass adds its own)."""


S = TypeVar("S", bound=Section)


def parse(cls: type[S], raw: Mapping[str, Any] | None, prefix: str | None = None) -> S:
    """A mapping from params.yaml -> the checked section: defaults filled in, unknown keys refused, every value
    checked against its rule (ConfigError naming the key, the value and what is allowed)."""
    prefix = prefix or cls.KEY
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix} must be a mapping of params, got {raw!r}")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]} is not a param: expected one of {', '.join(known)}")
    values = {}
    for name, f in known.items():
        if "nested" in f.metadata:
            values[name] = parse(f.metadata["nested"], raw.get(name), f"{prefix}.{name}")
            continue
        value = raw[name] if name in raw else (f.default_factory() if callable(f.default_factory) else f.default)
        if f.metadata["fix"] is not None:
            value = f.metadata["fix"](value)
        rule = f.metadata["rule"]
        if rule is not None:
            require(rule[0](value), f.metadata["key"] or f"{prefix}.{name}", value, rule[1])
        values[name] = value
    section = cls(**values)
    section.check()
    return section


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    try:
        with open(path) as f:
            params = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run from the repository root") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (fetch:, split:, ...)")
    return params


def section(params: Mapping[str, Any], cls: type[S]) -> S:
    """The section `cls.KEY` of a loaded params file, checked."""
    if cls.KEY not in params or not isinstance(params[cls.KEY], Mapping):
        raise ConfigError(f"params.yaml has no '{cls.KEY}:' section")
    return parse(cls, params[cls.KEY])


def augment_mode(value: Any) -> Any:
    """train.augment -> one of AUGMENTS (true/false, from older params files: full/none)."""
    if value is True:
        return "full"
    if value is False or value is None:
        return "none"
    return value


def amp_setting(value: Any) -> Any:
    # YAML 1.1 (PyYAML, `dvc exp run -S train.amp=off`) reads a bare off as false
    return "off" if value is False else value


@dataclass
class FetchParams(Section):
    KEY: ClassVar[str] = "fetch"
    # The subset list (labels "1".."5" -> metadata paths), shipped in the repo; a URL works too
    file_list: str = param("abid/file_list.json", text("a URL or a path to file_list.json"))
    bucket: str = param(
        "aft-vbi-pds", ((lambda v: isinstance(v, str) and 3 <= len(v) <= 63), "an S3 bucket name")
    )  # env BINSIGHT_S3_BUCKET
    prefix: str = param("", ((lambda v: isinstance(v, str)), "a string"), fix=lambda v: v or "")
    region: str = param("us-east-1", text("an AWS region such as us-east-1"))
    endpoint_url: str | None = param(
        None, optional(text(""), "null or a URL such as http://127.0.0.1:9000")
    )  # an S3-compatible server
    anonymous: bool = param(True, BOOL)
    concurrency: int = param(32, int_in(1, 512))  # env BINSIGHT_FETCH_CONCURRENCY
    retries: int = param(5, int_in(1, 20))
    max_bad_fraction: float = param(0.01, number_in(0, 1, "a number from 0 to 1"))
    limit_per_class: int | None = param(None, optional(int_in(1), "null or a positive integer"))
    local_dir: str | None = param(
        None, optional(text(""), "null or a folder (path or file:// URL) holding bin-images/ and metadata/")
    )
    layout: str = param(
        "files", ((lambda v: v in ("files", "shards")), "files (one file a bin) or shards (raw tar shards)")
    )
    shard_size: int = param(1000, int_in(1, words="a positive integer"))


# Env overrides let one checkout talk to another bucket or server without editing params.
FETCH_ENV = (("bucket", "BINSIGHT_S3_BUCKET", str), ("prefix", "BINSIGHT_S3_PREFIX", str))
FETCH_ENV_INT = (("concurrency", "BINSIGHT_FETCH_CONCURRENCY", int),)


def fetch_section(params: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> FetchParams:
    """The fetch section with BINSIGHT_S3_BUCKET, BINSIGHT_S3_PREFIX and BINSIGHT_FETCH_CONCURRENCY applied."""
    environ = os.environ if environ is None else environ
    if "fetch" not in params or not isinstance(params["fetch"], Mapping):
        raise ConfigError("params.yaml has no 'fetch:' section")
    raw = dict(params["fetch"])
    for key, env, cast in (*FETCH_ENV, *FETCH_ENV_INT):
        if environ.get(env):
            try:
                raw[key] = cast(environ[env])
            except ValueError:
                raise ConfigError(f"{env}={environ[env]!r} is not a {cast.__name__}") from None
    return parse(FetchParams, raw)


@dataclass
class ClassesParams(Section):
    KEY: ClassVar[str] = "classes"
    policy: str = param("subset", one_of(*POLICIES))  # binsight/data/class_policy.py
    clip_at: int = param(6, int_in(1, 1000))  # clip only


def split_ratios_ok(r: Any) -> bool:
    return isinstance(r, Mapping) and set(r) == {"train", "val", "test"}


@dataclass
class SplitParams(Section):
    KEY: ClassVar[str] = "split"
    seed: int = param(42, INT)
    ratios: dict[str, float] = param(
        {"train": 0.6, "val": 0.2, "test": 0.2}, (split_ratios_ok, "a mapping {train, val, test}")
    )

    def check(self) -> None:
        for name, r in self.ratios.items():
            require(is_number(r) and 0 <= r <= 1, f"split.ratios.{name}", r, "a number from 0 to 1")
        total = sum(self.ratios.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"split.ratios must sum to 1, got {total:g} ({self.ratios})")
        require(
            self.ratios["train"] > 0 and self.ratios["test"] > 0, "split.ratios", self.ratios, "train and test above 0"
        )


@dataclass
class ShardParams(Section):
    KEY: ClassVar[str] = "shard"
    size: int = param(1000, int_in(1, 100_000, "bins a shard, 1 to 100000"))
    quality: int = param(95, int_in(50, 100, "a JPEG quality, 50 to 100"))
    seed: int = param(0, INT)
    pack: str = param("auto", ((lambda v: v in ("auto", "always")), "auto (only when train.data is shards) or always"))


@dataclass
class ExploreParams(Section):
    KEY: ClassVar[str] = "explore"
    size_bins: int = param(20, int_in(1, 1000))


@dataclass
class HeadParams(Section):
    KEY: ClassVar[str] = "model.head"
    hidden: list[int] = param(
        [],
        (
            (lambda v: isinstance(v, list) and all(is_int(h) and h > 0 for h in v)),
            "a list of positive integers, e.g. [512] or []",
        ),
    )
    dropout: float = param(0.2, fraction("a number in [0, 1)"))


@dataclass
class ModelParams(Section):
    KEY: ClassVar[str] = "model"
    arch: str = param("resnet50", one_of(*KNOWN_ARCHS))
    weights: str = param("imagenet", text("imagenet, none, or a torchvision weights name such as IMAGENET1K_V1"))
    freeze_backbone: bool = param(False, BOOL)
    width: float = param(
        1.0,
        number_in(0.125, 4, "a number from 0.125 to 4 (1 = as published)"),
    )
    head: HeadParams = nested(HeadParams)
    tta: str = param(
        "flips", ((lambda v: v in TTA_MODES), "one of " + ", ".join(TTA_MODES) + " (test-time views averaged)")
    )

    def check(self) -> None:
        self.width = float(self.width)  # 1 and 1.0 are one model: the same fingerprint and model file
        self.head.dropout = float(self.head.dropout)
        others = ", ".join(SCALABLE_ARCHS)
        require(
            self.width == 1 or self.arch in SCALABLE_ARCHS, "model.width", self.width, f"1 for {self.arch} ({others})"
        )
        require(
            self.width == 1 or self.weights.lower() == "none",
            "model.width",
            self.width,
            "1 with pretrained weights (they fit the published width only), or set model.weights: none",
        )


@dataclass
class DistributedParams(Section):
    KEY: ClassVar[str] = "train.distributed"
    nproc_per_node: int = param(1, int_in(1))  # >1: the stage relaunches itself under torchrun
    nnodes: int = param(1, int_in(1))
    backend: str = param("auto", ((lambda v: v in ("auto", "nccl", "gloo")), "auto, nccl or gloo"))


@dataclass
class TrainParams(Section):
    KEY: ClassVar[str] = "train"
    lr: float = param(0.001, ((lambda v: is_number(v) and v > 0), "a number > 0"), key="lr")
    batch_size: int = param(64, int_in(1), key="batch_size")
    epochs: int = param(15, int_in(1), key="epochs")
    backbone_lr: float | None = param(
        0.0001, ((lambda v: v is None or (is_number(v) and v > 0)), "null or a number > 0")
    )
    optimizer: str = param("adamw", ((lambda v: v in ("adam", "adamw", "sgd")), "adam, adamw or sgd"))
    momentum: float = param(0.9, fraction("a number in [0, 1)"))
    weight_decay: float = param(0.05, number_in(0, math.inf, "a number >= 0"))
    scheduler: str = param("cosine", ((lambda v: v in ("cosine", "step", "none")), "cosine, step or none"))
    step_size: int = param(5, int_in(1))
    gamma: float = param(0.1, ((lambda v: is_number(v) and 0 < v <= 1), "a number in (0, 1]"))
    label_smoothing: float = param(0.0, fraction("a number in [0, 1)"))
    loss: str = param("neighbour", one_of(*LOSSES))
    neighbour_weight: float = param(0.2, fraction("a number in [0, 1)"))
    balance: str = param("none", one_of(*BALANCE))
    warmup_epochs: float = param(1, number_in(0, math.inf, "a number from 0 to epochs"))
    ema: float = param(0.0, fraction("0 (off) or the EMA decay per step, e.g. 0.999"))
    aux_weight: float = param(
        0.0, number_in(0, math.inf, "0 (off) or the weight of the metadata targets in the loss, e.g. 1")
    )
    image_size: int = param(224, int_in(16, 1024))
    augment: str = param(
        "flips",
        ((lambda v: v in AUGMENTS), "one of " + ", ".join(AUGMENTS) + " (true = full, false = none)"),
        fix=augment_mode,
    )
    data: str = param("files", ((lambda v: v in ("files", "shards")), "files or shards"))
    shards: str | None = param(
        None,
        optional(text(""), "null (data/shards) or a folder or s3://bucket/prefix/ holding index.json and the shards"),
    )
    shuffle_buffer: int = param(2000, int_in(1, words="an integer >= 1 (samples per loader worker)"))
    decode: str = param("cpu", ((lambda v: v in ("cpu", "gpu")), "cpu or gpu"))
    cache_images: bool = param(True, BOOL)
    seed: int = param(42, INT)
    num_workers: int = param(4, int_in(0))
    pin_memory: bool = param(True, BOOL)
    amp: str = param(
        "auto", ((lambda v: v in ("auto", "bf16", "fp16", "off")), "auto, bf16, fp16 or off"), fix=amp_setting
    )
    channels_last: bool = param(True, BOOL)
    patience: int = param(5, int_in(1))
    resume: bool = param(True, BOOL)
    checkpoint_every: int = param(1, int_in(1, words="an integer >= 1 (epochs between resumable checkpoints)"))
    jpeg_draft: bool = param(True, BOOL)
    profile: bool = param(False, BOOL)
    use_features: str = param("auto", ((lambda v: v in ("auto", "never")), "auto or never"))
    distributed: DistributedParams = nested(DistributedParams)

    def check(self) -> None:
        require(
            self.warmup_epochs <= self.epochs,
            "train.warmup_epochs",
            self.warmup_epochs,
            f"a number from 0 to epochs ({self.epochs})",
        )
        if self.data == "shards":
            require(self.balance != "sampler", "train.balance", self.balance, "none or weighted_loss with shards")
            require(self.aux_weight == 0, "train.aux_weight", self.aux_weight, "0 with train.data: shards")


def train_section(params: Mapping[str, Any]) -> TrainParams:
    """The checked train: section, with lr, batch_size and epochs taken from the top level. An
    older params file that keeps them under train: still works; both at once is refused."""
    if "train" not in params or not isinstance(params["train"], Mapping):
        raise ConfigError("params.yaml has no 'train:' section")
    merged = dict(params["train"])
    for key in TOP_LEVEL_TRAIN:
        if key in params:
            if key in merged and merged[key] != params[key]:
                raise ConfigError(
                    f"{key} is set twice, top level ({params[key]!r}) and train.{key} "
                    f"({merged[key]!r}): keep the top-level one (`dvc exp run -S {key}=...`)"
                )
            merged[key] = params[key]
    return parse(TrainParams, merged)


def check_train_with_model(model: ModelParams, train: TrainParams) -> TrainParams:
    """What the train section can only ask of some models."""
    if train.aux_weight and model.freeze_backbone:
        raise ConfigError(
            "train.aux_weight > 0 needs model.freeze_backbone: false: the metadata targets teach the "
            "backbone, which a frozen one cannot learn (set train.aux_weight: 0)"
        )
    return train


@dataclass
class EvaluateParams(Section):
    KEY: ClassVar[str] = "evaluate"
    batch_size: int = param(128, int_in(1))
    misclassified: int = param(12, int_in(0))  # how many wrongly counted test images to show


@dataclass
class VerifyParams(Section):
    """The decision targets the evaluate stage fits on val (binsight/verify/)."""

    KEY: ClassVar[str] = "verify"
    coverage: float = param(
        0.9, number_in(0.5, 0.999, "a number from 0.5 to 0.999 (the share of count sets that hold the true count)")
    )
    max_false_accept: float = param(
        0.05, number_in(0.001, 0.5, "a number from 0.001 to 0.5 (the share of wrong quantities accepted)")
    )
    against: str = param(
        "off_by_one",
        ((lambda v: v in ("off_by_one", "any_other")), "off_by_one (one item missing or extra) or any_other"),
    )


def space_ok(v: Any) -> bool:
    return isinstance(v, Mapping) and bool(v)


@dataclass
class TuneParams(Section):
    KEY: ClassVar[str] = "tune"
    metric: str = param(
        "best/val_acc",
        (
            (lambda v: isinstance(v, str) and bool(v) and not v.startswith("test")),
            "a key of dvclive/train/metrics.json such as best/val_acc (never a test metric)",
        ),
    )
    direction: str = param("maximize", ((lambda v: v in ("maximize", "minimize")), "maximize or minimize"))
    seed: int = param(0, INT)
    pruner: str = param("median", ((lambda v: v in PRUNERS), " | ".join(PRUNERS)))
    prune_warmup_epochs: int = param(2, int_in(0))
    prune_startup_trials: int = param(2, int_in(0))
    # a param: {low, high} (ints: an integer range; log: true for log-uniform) or a list of choices;
    # binsight/tune/search_space.py checks each entry and flattens the nesting
    space: dict[str, Any] = param(
        {
            "lr": {"low": 0.001, "high": 0.1, "log": True},
            "batch_size": [16, 32, 64, 128, 256, 512],
            "epochs": {"low": 10, "high": 20},
        },
        (space_ok, "a mapping of params to search, e.g. {train: {lr: {low: 0.001, high: 0.1, log: true}}}"),
    )

    def check(self) -> None:
        require(
            self.pruner == "none" or self.direction == "maximize",
            "tune.pruner",
            self.pruner,
            "none when tune.direction is minimize (the pruner watches val accuracy, which is maximized)",
        )


SECTIONS: tuple[type[Section], ...] = (
    FetchParams,
    ClassesParams,
    SplitParams,
    ShardParams,
    ExploreParams,
    ModelParams,
    TrainParams,
    EvaluateParams,
    VerifyParams,
    TuneParams,
)


# The section checks by name, for callers that hold one section's mapping (tests, the tuner, model files).
def check_fetch(raw: Mapping[str, Any] | None) -> FetchParams:
    return parse(FetchParams, raw)


def check_classes(raw: Mapping[str, Any] | None) -> ClassesParams:
    return parse(ClassesParams, raw)


def check_split(raw: Mapping[str, Any] | None) -> SplitParams:
    return parse(SplitParams, raw)


def check_shard(raw: Mapping[str, Any] | None) -> ShardParams:
    return parse(ShardParams, raw)


def check_explore(raw: Mapping[str, Any] | None) -> ExploreParams:
    return parse(ExploreParams, raw)


def check_model(raw: Mapping[str, Any] | None) -> ModelParams:
    return parse(ModelParams, raw)


def check_train(raw: Mapping[str, Any] | None) -> TrainParams:
    return parse(TrainParams, raw)


def check_evaluate(raw: Mapping[str, Any] | None) -> EvaluateParams:
    return parse(EvaluateParams, raw)
