"""The features folder that `featurize` writes and `train` reads (its layout: binsight/train/embeddings.py,
which computes and loads the vectors with torch). Torch-free, so the stage decides and says
"nothing to cache" in a blink when the backbone is fine-tuned.
"""

import json
import shutil
from pathlib import Path

import numpy as np

from binsight.files import atomic_path
from binsight.params import augment_mode
from binsight.tables import write_csv, write_json

FORMAT = 1
SPLITS = ("train", "val", "test")
# What the vectors depend on besides the backbone weights (which the digest pins down exactly).
KEY_PARAMS = (
    ("model", "arch"),
    ("model", "weights"),
    ("train", "image_size"),
    ("train", "jpeg_draft"),
    ("train", "amp"),
)


def cacheable(model_params, train_params):
    """(True, why) when the backbone output of each image can never change during training."""
    if not model_params.freeze_backbone:
        return False, "model.freeze_backbone is false: fine-tuning changes the features every step"
    if augment_mode(train_params.augment) != "none":
        return False, f"train.augment is {str(train_params.augment).lower()}: every epoch sees other pixels"
    return True, "frozen backbone, no augmentation"


def feature_key(model_params, train_params):
    return {key: getattr(model_params if part == "model" else train_params, key) for part, key in KEY_PARAMS}


def write_features(folder, meta, arrays, rows):
    """Replace `folder` with the vectors of each split, their rows and meta.json (written last)."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for split, features in arrays.items():
        with atomic_path(folder / f"{split}.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(features, dtype=np.float32))
        write_csv(folder / f"{split}.csv", [{"id": i, "label": y} for i, y in rows[split]], ("id", "label"))
    write_json(folder / "meta.json", {"format": FORMAT, **meta})


def write_not_cached(folder, reason):
    """A features folder that says why there is nothing in it, so `train` can always depend on it."""
    write_features(folder, {"cached": False, "reason": reason}, {}, {})


def read_meta(folder):
    path = Path(folder) / "meta.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
