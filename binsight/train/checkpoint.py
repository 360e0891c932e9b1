"""The resumable training checkpoint: everything needed to continue a killed run at its next epoch."""

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch

from binsight.files import atomic_path

# Keys that do not change what an epoch computes, so a run may resume across a change of them.
# Not `epochs`: the lr schedule (warmup + cosine over all steps) depends on it, so a changed
# `epochs` starts over rather than continuing on a schedule that no longer fits.
RESUMABLE_KEYS = {"patience", "num_workers", "pin_memory", "resume", "profile", "checkpoint_every"}


def fingerprint(model_params, train_params, split_files):
    """A hash of everything that decides the result of each epoch: params and the split lists."""
    h = hashlib.sha256()
    relevant = {"model": model_params, "train": {k: v for k, v in train_params.items() if k not in RESUMABLE_KEYS}}
    h.update(json.dumps(relevant, sort_keys=True).encode())
    for path in split_files:
        h.update(Path(path).read_bytes())
    return h.hexdigest()


def rng_state():
    """Every random stream training draws from (augmentation, dropout): saved with each checkpoint
    so that a resumed run continues them instead of starting new ones."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, **state):
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_resumable(path, expected_fingerprint):
    """The checkpoint at `path` when it belongs to this exact run and did not finish; else None
    and the reason, so the log can say why training starts over."""
    path = Path(path)
    if not path.exists():
        return None, "no checkpoint"
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a checkpoint that cannot be read is no reason to stop: start over
        return None, f"unreadable checkpoint ({type(exc).__name__})"
    if state.get("fingerprint") != expected_fingerprint:
        return None, "checkpoint is from other params or data"
    if state.get("completed"):
        return None, "checkpoint is from a finished run"
    return state, "resuming"
