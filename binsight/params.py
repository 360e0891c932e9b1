"""Read params.yaml and check every value before any work starts.

Each `check_<section>` returns the section unchanged or raises ConfigError naming the key, the
value and what is allowed, so a typo costs a second and not a failed 2-hour run.
"""

import math
import os
from pathlib import Path

import yaml

from binsight.errors import ConfigError

PARAMS_FILE = Path("params.yaml")

# The named choices of params.yaml. This module imports no torch, so the data stages (fetch, split, explore)
# and params validation start in a fraction of a second.
AUGMENTS = ("none", "flips", "dihedral", "full")  # train.augment (binsight/data/image_datasets.py)
LOSSES = ("ce", "neighbour", "ordinal", "regression")  # train.loss (binsight/model/count_losses.py)
TTA_MODES = ("none", "flips", "dihedral")  # model.tta (binsight/data/square_views.py)


def augment_mode(value):
    """train.augment -> one of AUGMENTS (true/false, from older params files: full/none)."""
    if value is True:
        return "full"
    if value is False or value is None:
        return "none"
    return value


def load_params(path=PARAMS_FILE):
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


def section(params, name, checker):
    if name not in params or not isinstance(params[name], dict):
        raise ConfigError(f"params.yaml has no '{name}:' section")
    return checker(params[name])


def require(cond, key, value, allowed):
    if not cond:
        raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}")


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_fetch(p):
    p = dict(p)
    # Env overrides let one checkout talk to another bucket or server without editing params.
    for key, env, cast in (
        ("bucket", "BINSIGHT_S3_BUCKET", str),
        ("prefix", "BINSIGHT_S3_PREFIX", str),
        ("concurrency", "BINSIGHT_FETCH_CONCURRENCY", int),
    ):
        if os.environ.get(env):
            try:
                p[key] = cast(os.environ[env])
            except ValueError:
                raise ConfigError(f"{env}={os.environ[env]!r} is not a {cast.__name__}") from None
    require(
        isinstance(p.get("file_list"), str) and p["file_list"],
        "fetch.file_list",
        p.get("file_list"),
        "a URL or a path to file_list.json",
    )
    require(
        isinstance(p.get("bucket"), str) and 3 <= len(p["bucket"]) <= 63,
        "fetch.bucket",
        p.get("bucket"),
        "an S3 bucket name",
    )
    require(isinstance(p.get("prefix", ""), str), "fetch.prefix", p.get("prefix"), "a string")
    p.setdefault("prefix", "")
    p["prefix"] = p["prefix"] or ""
    require(
        p.get("endpoint_url") is None or isinstance(p["endpoint_url"], str),
        "fetch.endpoint_url",
        p.get("endpoint_url"),
        "null or a URL such as http://127.0.0.1:9000",
    )
    require(
        is_int(p.get("concurrency")) and 1 <= p["concurrency"] <= 512,
        "fetch.concurrency",
        p.get("concurrency"),
        "an integer from 1 to 512",
    )
    require(
        is_int(p.get("retries")) and 1 <= p["retries"] <= 20,
        "fetch.retries",
        p.get("retries"),
        "an integer from 1 to 20",
    )
    require(
        is_number(p.get("max_bad_fraction")) and 0 <= p["max_bad_fraction"] <= 1,
        "fetch.max_bad_fraction",
        p.get("max_bad_fraction"),
        "a number from 0 to 1",
    )
    limit = p.get("limit_per_class")
    require(
        limit is None or (is_int(limit) and limit >= 1), "fetch.limit_per_class", limit, "null or a positive integer"
    )
    local = p.setdefault("local_dir", None)
    require(
        local is None or (isinstance(local, str) and local),
        "fetch.local_dir",
        local,
        "null or a folder (path or file:// URL) holding bin-images/ and metadata/",
    )
    layout = p.setdefault("layout", "files")
    require(layout in ("files", "shards"), "fetch.layout", layout, "files (one file a bin) or shards (raw tar shards)")
    shard_size = p.setdefault("shard_size", 1000)
    require(is_int(shard_size) and shard_size >= 1, "fetch.shard_size", shard_size, "a positive integer")
    p.setdefault("anonymous", True)
    p.setdefault("region", "us-east-1")
    return p


def check_split(p):
    require(is_int(p.get("seed")), "split.seed", p.get("seed"), "an integer")
    ratios = p.get("ratios")
    require(
        isinstance(ratios, dict) and set(ratios) == {"train", "val", "test"},
        "split.ratios",
        ratios,
        "a mapping {train, val, test}",
    )
    for name, r in ratios.items():
        require(is_number(r) and 0 <= r <= 1, f"split.ratios.{name}", r, "a number from 0 to 1")
    total = sum(ratios.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"split.ratios must sum to 1, got {total:g} ({ratios})")
    require(ratios["train"] > 0 and ratios["test"] > 0, "split.ratios", ratios, "train and test ratios above 0")
    return p


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
SCALABLE_ARCHS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
)  # model.width != 1 (binsight.model.counting_model.scaled_resnet)


def check_model(p):
    require(p.get("arch") in KNOWN_ARCHS, "model.arch", p.get("arch"), "one of " + ", ".join(KNOWN_ARCHS))
    weights = p.get("weights")
    require(
        isinstance(weights, str) and weights,
        "model.weights",
        weights,
        "imagenet, none, or a torchvision weights name such as IMAGENET1K_V1",
    )
    require(
        isinstance(p.get("freeze_backbone"), bool), "model.freeze_backbone", p.get("freeze_backbone"), "true or false"
    )
    head = p.get("head") or {}
    hidden = head.get("hidden", [])
    require(
        isinstance(hidden, list) and all(is_int(h) and h > 0 for h in hidden),
        "model.head.hidden",
        hidden,
        "a list of positive integers, e.g. [512] or []",
    )
    dropout = head.get("dropout", 0.0)
    require(is_number(dropout) and 0 <= dropout < 1, "model.head.dropout", dropout, "a number in [0, 1)")
    tta = p.get("tta", "none")
    require(tta in TTA_MODES, "model.tta", tta, "one of " + ", ".join(TTA_MODES) + " (test-time views averaged)")
    width = p.get("width", 1.0)
    require(
        is_number(width) and 0.125 <= width <= 4, "model.width", width, "a number from 0.125 to 4 (1 = as published)"
    )
    require(
        width == 1 or p["arch"] in SCALABLE_ARCHS,
        "model.width",
        width,
        "1 for " + p["arch"] + " (other widths: " + ", ".join(SCALABLE_ARCHS) + ")",
    )
    require(
        width == 1 or weights.lower() == "none",
        "model.width",
        width,
        "1 with pretrained weights (they fit the published width only), or set model.weights: none",
    )
    return {**p, "head": {"hidden": hidden, "dropout": float(dropout)}, "tta": tta, "width": float(width)}


BALANCE = ("none", "weighted_loss", "sampler")
# The notebook's three tuned hyperparameters live at the top of params.yaml, so that
# `dvc exp run -S lr=0.01` works as a user types it; train code sees them inside the train section.
TOP_LEVEL_TRAIN = ("lr", "batch_size", "epochs")


def train_section(params):
    """The checked train: section, with lr, batch_size and epochs taken from the top level. An
    older params file that keeps them under train: still works; both at once is refused."""
    if "train" not in params or not isinstance(params["train"], dict):
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
    return check_train(merged)


def check_train(p):
    require(is_int(p.get("epochs")) and p["epochs"] >= 1, "epochs", p.get("epochs"), "an integer >= 1")
    require(is_int(p.get("batch_size")) and p["batch_size"] >= 1, "batch_size", p.get("batch_size"), "an integer >= 1")
    require(is_number(p.get("lr")) and p["lr"] > 0, "lr", p.get("lr"), "a number > 0")
    blr = p.get("backbone_lr")
    require(blr is None or (is_number(blr) and blr > 0), "train.backbone_lr", blr, "null or a number > 0")
    require(p.get("optimizer") in ("adam", "adamw", "sgd"), "train.optimizer", p.get("optimizer"), "adam, adamw or sgd")
    require(
        is_number(p.get("momentum", 0.9)) and 0 <= p.get("momentum", 0.9) < 1,
        "train.momentum",
        p.get("momentum"),
        "a number in [0, 1)",
    )
    require(
        is_number(p.get("weight_decay")) and p["weight_decay"] >= 0,
        "train.weight_decay",
        p.get("weight_decay"),
        "a number >= 0",
    )
    require(
        p.get("scheduler") in ("cosine", "step", "none"), "train.scheduler", p.get("scheduler"), "cosine, step or none"
    )
    require(
        is_int(p.get("step_size", 5)) and p.get("step_size", 5) >= 1,
        "train.step_size",
        p.get("step_size"),
        "an integer >= 1",
    )
    require(
        is_number(p.get("gamma", 0.1)) and 0 < p.get("gamma", 0.1) <= 1,
        "train.gamma",
        p.get("gamma"),
        "a number in (0, 1]",
    )
    require(
        is_number(p.get("label_smoothing")) and 0 <= p["label_smoothing"] < 1,
        "train.label_smoothing",
        p.get("label_smoothing"),
        "a number in [0, 1)",
    )
    require(
        is_int(p.get("image_size")) and 16 <= p["image_size"] <= 1024,
        "train.image_size",
        p.get("image_size"),
        "an integer from 16 to 1024",
    )
    require(
        isinstance(p.get("augment"), bool) or p.get("augment") in AUGMENTS,
        "train.augment",
        p.get("augment"),
        "one of " + ", ".join(AUGMENTS) + " (true = full, false = none)",
    )
    require(is_int(p.get("seed")), "train.seed", p.get("seed"), "an integer")
    require(
        is_int(p.get("num_workers")) and p["num_workers"] >= 0,
        "train.num_workers",
        p.get("num_workers"),
        "an integer >= 0",
    )
    if p.get("amp") is False:  # YAML 1.1 (PyYAML, `dvc exp run -S train.amp=off`) reads a bare off as false
        p = {**p, "amp": "off"}
    require(p.get("amp") in ("auto", "bf16", "fp16", "off"), "train.amp", p.get("amp"), "auto, bf16, fp16 or off")
    require(is_int(p.get("patience")) and p["patience"] >= 1, "train.patience", p.get("patience"), "an integer >= 1")
    p = {
        "momentum": 0.9,
        "step_size": 5,
        "gamma": 0.1,
        "jpeg_draft": True,
        "profile": False,
        "use_features": "auto",
        "loss": "ce",
        "neighbour_weight": 0.2,
        "balance": "none",
        "warmup_epochs": 0,
        "ema": 0.0,
        "aux_weight": 0.0,
        "cache_images": False,
        "checkpoint_every": 1,
        "data": "files",
        "shards": None,
        "shuffle_buffer": 2000,
        "decode": "cpu",
        **p,
    }
    p["augment"] = augment_mode(p["augment"])
    require(p["loss"] in LOSSES, "train.loss", p["loss"], "one of " + ", ".join(LOSSES))
    require(
        is_number(p["neighbour_weight"]) and 0 <= p["neighbour_weight"] < 1,
        "train.neighbour_weight",
        p["neighbour_weight"],
        "a number in [0, 1)",
    )
    require(p["balance"] in BALANCE, "train.balance", p["balance"], "one of " + ", ".join(BALANCE))
    require(
        is_number(p["warmup_epochs"]) and 0 <= p["warmup_epochs"] <= p["epochs"],
        "train.warmup_epochs",
        p["warmup_epochs"],
        f"a number from 0 to epochs ({p['epochs']})",
    )
    require(
        is_int(p["checkpoint_every"]) and p["checkpoint_every"] >= 1,
        "train.checkpoint_every",
        p["checkpoint_every"],
        "an integer >= 1 (epochs between resumable checkpoints)",
    )
    require(
        is_number(p["ema"]) and 0 <= p["ema"] < 1,
        "train.ema",
        p["ema"],
        "0 (off) or the EMA decay per step, e.g. 0.999",
    )
    require(
        is_number(p["aux_weight"]) and p["aux_weight"] >= 0,
        "train.aux_weight",
        p["aux_weight"],
        "0 (off) or the weight of the metadata targets in the loss, e.g. 1",
    )
    for key in ("pin_memory", "channels_last", "resume", "jpeg_draft", "profile", "cache_images"):
        require(isinstance(p.get(key), bool), f"train.{key}", p.get(key), "true or false")
    require(p["use_features"] in ("auto", "never"), "train.use_features", p["use_features"], "auto or never")
    require(p["data"] in ("files", "shards"), "train.data", p["data"], "files or shards")
    require(
        p["shards"] is None or (isinstance(p["shards"], str) and p["shards"]),
        "train.shards",
        p["shards"],
        "null (data/shards) or a folder or s3://bucket/prefix/ holding index.json and the shards",
    )
    require(
        is_int(p["shuffle_buffer"]) and p["shuffle_buffer"] >= 1,
        "train.shuffle_buffer",
        p["shuffle_buffer"],
        "an integer >= 1 (samples per loader worker)",
    )
    require(p["decode"] in ("cpu", "gpu"), "train.decode", p["decode"], "cpu or gpu")
    if p["data"] == "shards":
        require(
            p["balance"] != "sampler", "train.balance", p["balance"], "none or weighted_loss with train.data: shards"
        )
        require(p["aux_weight"] == 0, "train.aux_weight", p["aux_weight"], "0 with train.data: shards")
    d = {"nproc_per_node": 1, "nnodes": 1, "backend": "auto", **(p.get("distributed") or {})}
    for key in ("nproc_per_node", "nnodes"):
        require(is_int(d[key]) and d[key] >= 1, f"train.distributed.{key}", d[key], "an integer >= 1")
    require(d["backend"] in ("auto", "nccl", "gloo"), "train.distributed.backend", d["backend"], "auto, nccl or gloo")
    return {**p, "distributed": d}


def check_train_with_model(model_params, train_params):
    """What the train section can only ask of some models."""
    if train_params["aux_weight"] and model_params["freeze_backbone"]:
        raise ConfigError(
            "train.aux_weight > 0 needs model.freeze_backbone: false: the metadata targets teach the "
            "backbone, which a frozen one cannot learn (set train.aux_weight: 0)"
        )
    return train_params


def check_shard(p):
    p = dict(p)
    p.setdefault("seed", 0)
    p.setdefault("pack", "auto")
    require(p["pack"] in ("auto", "always"), "shard.pack", p["pack"], "auto (only when train.data is shards) or always")
    require(
        is_int(p.get("size")) and 1 <= p["size"] <= 100_000, "shard.size", p.get("size"), "bins a shard, 1 to 100000"
    )
    require(
        is_int(p.get("quality")) and 50 <= p["quality"] <= 100,
        "shard.quality",
        p.get("quality"),
        "a JPEG quality, 50 to 100",
    )
    require(is_int(p["seed"]), "shard.seed", p["seed"], "an integer")
    return p


def check_evaluate(p):
    require(
        is_int(p.get("batch_size")) and p["batch_size"] >= 1,
        "evaluate.batch_size",
        p.get("batch_size"),
        "an integer >= 1",
    )
    require(
        is_int(p.get("misclassified")) and p["misclassified"] >= 0,
        "evaluate.misclassified",
        p.get("misclassified"),
        "an integer >= 0",
    )
    return p
