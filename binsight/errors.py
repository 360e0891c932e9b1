"""One-line errors for users, and the wrapper that prints them instead of a traceback."""

import functools
import re
import sys
from pathlib import Path


class BinsightError(Exception):
    """A problem the user can fix (bad params, missing data, no network). Printed as one line."""


class ConfigError(BinsightError):
    """A value in params.yaml (or an override) is not allowed."""


class DataError(BinsightError):
    """Input data is missing, unreadable or inconsistent."""


class BadImage(DataError):
    """Bytes that are not a decodable JPEG or PNG (empty, truncated, another format, too large)."""


def require_model_file(path):
    """Stop with the fix when the model file is not there (torch-free: CLIs check it before importing torch)."""
    if not Path(path).is_file():
        raise DataError(f"{path} not found: train a model first (`dvc repro train`)")


DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?|mps(:0)?")


def check_device_name(name):
    """Stop on a --device that is none of auto, cpu, cuda, cuda:N, mps, mps:0 (torch-free, like the check above;
    whether that device is present here is for binsight.serve.predictor.resolve_device)."""
    if name is not None and not DEVICE_NAME.fullmatch(name):
        raise ConfigError(f"--device {name!r} is not a device: expected auto, cpu, cuda, cuda:N, mps or mps:0")


def one_line_errors(main):
    """Run `main`; turn a BinsightError into `error: ...` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except BinsightError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted: finished files are kept; run the same command again to resume", file=sys.stderr)
            sys.exit(130)

    return wrapper
