"""Read params.yaml and check every value before any work starts.

Each `check_<section>` returns the section unchanged or raises ConfigError naming the key, the
value and what is allowed, so a typo costs a second and not a failed 2-hour run.
"""
import math
import os
from pathlib import Path

import yaml

from stages.errors import ConfigError

PARAMS_FILE = Path("params.yaml")


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
    for key, env, cast in (("bucket", "BINSIGHT_S3_BUCKET", str), ("prefix", "BINSIGHT_S3_PREFIX", str),
                           ("concurrency", "BINSIGHT_FETCH_CONCURRENCY", int)):
        if os.environ.get(env):
            try:
                p[key] = cast(os.environ[env])
            except ValueError:
                raise ConfigError(f"{env}={os.environ[env]!r} is not a {cast.__name__}") from None
    require(isinstance(p.get("file_list"), str) and p["file_list"], "fetch.file_list",
            p.get("file_list"), "a URL or a path to file_list.json")
    require(isinstance(p.get("bucket"), str) and 3 <= len(p["bucket"]) <= 63, "fetch.bucket",
            p.get("bucket"), "an S3 bucket name")
    require(isinstance(p.get("prefix", ""), str), "fetch.prefix", p.get("prefix"), "a string")
    p.setdefault("prefix", "")
    p["prefix"] = p["prefix"] or ""
    require(p.get("endpoint_url") is None or isinstance(p["endpoint_url"], str),
            "fetch.endpoint_url", p.get("endpoint_url"), "null or a URL such as http://127.0.0.1:9000")
    require(is_int(p.get("concurrency")) and 1 <= p["concurrency"] <= 512, "fetch.concurrency",
            p.get("concurrency"), "an integer from 1 to 512")
    require(is_int(p.get("retries")) and 1 <= p["retries"] <= 20, "fetch.retries",
            p.get("retries"), "an integer from 1 to 20")
    require(is_number(p.get("max_bad_fraction")) and 0 <= p["max_bad_fraction"] <= 1,
            "fetch.max_bad_fraction", p.get("max_bad_fraction"), "a number from 0 to 1")
    limit = p.get("limit_per_class")
    require(limit is None or (is_int(limit) and limit >= 1), "fetch.limit_per_class", limit,
            "null or a positive integer")
    p.setdefault("anonymous", True)
    p.setdefault("region", "us-east-1")
    return p


def check_split(p):
    require(is_int(p.get("seed")), "split.seed", p.get("seed"), "an integer")
    ratios = p.get("ratios")
    require(isinstance(ratios, dict) and set(ratios) == {"train", "val", "test"}, "split.ratios",
            ratios, "a mapping {train, val, test}")
    for name, r in ratios.items():
        require(is_number(r) and 0 <= r <= 1, f"split.ratios.{name}", r, "a number from 0 to 1")
    total = sum(ratios.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"split.ratios must sum to 1, got {total:g} ({ratios})")
    require(ratios["train"] > 0 and ratios["test"] > 0, "split.ratios", ratios,
            "train and test ratios above 0")
    return p
