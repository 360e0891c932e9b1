"""Scoring a saved model on a split: its probabilities with and without test-time augmentation,
the time each took, and the rows of the predictions table."""

import os
import time
from typing import Any

import numpy as np

from binsight.data.class_policy import COUNTS_1TO5
from binsight.data.image_datasets import BinImages, eval_transform, make_loader
from binsight.data.split_files import read_split_counts
from binsight.errors import DataError
from binsight.params import TrainParams
from binsight.progress import Progress
from binsight.train.loops import predict_outputs
from binsight.verify.calibration import calibrated_probs


def split_loader(rows, images_dir, meta, batch_size, num_workers, device):
    """A loader that prepares images as the model file's preprocessing contract says."""
    pre, classes = meta["preprocess"], meta["classes"]
    size = pre["image_size"]
    dataset = BinImages(rows, images_dir, classes, eval_transform(size), size, pre["jpeg_draft"])
    return make_loader(dataset, batch_size, False, num_workers, device.type == "cuda")


def shard_split_loader(location, meta, batch_size, num_workers, device, decode="cpu", split="test"):
    """One split's shards -> ([(id, label, count)] in split order, a loader over them). The loader yields
    in worker order; `timed_outputs` puts the outputs back in split order."""
    from binsight.data.shard_stream import ShardBatches, ShardSet, ShardStream

    shards = ShardSet(location)
    size = meta["preprocess"]["image_size"]
    if shards.index["image_size"] != size:
        raise DataError(
            f"{location} holds {shards.index['image_size']} px images, the model wants {size}: run `dvc repro shard`"
        )
    entries = shards.entries(split)
    rows = [r for e in entries for r in zip(e["ids"], e["labels"], e["counts"])]
    workers = min(num_workers, os.cpu_count() or 1)  # as make_loader caps them
    stream = ShardStream(shards, split, meta["classes"], workers=workers, decode=decode)
    return rows, ShardBatches(stream, batch_size, device, workers, device.type == "cuda")


def split_inputs(
    split: str,
    meta: dict,
    train: TrainParams,
    batch_size: int,
    split_dir: str,
    images_dir: str,
    shards_dir: str,
    device: Any,
) -> tuple[list[tuple[str, int, int]], Any]:
    """A split's bins the model knows the classes of, [(id, label, count)] in split order, and a loader over
    them: from the split's shards with train.data: shards, else from the split file and the fetched images.
    Bins of other classes are left out with a warning (per-file data) or refused (shards: rerun the pipeline)."""
    workers = train.num_workers
    if train.data == "shards":
        rows, loader = shard_split_loader(
            train.shards or shards_dir, meta, batch_size, workers, device, train.decode, split=split
        )
    else:
        rows = read_split_counts(split_dir, split, images_dir)
    unknown = sorted({label for _, label, _ in rows} - set(meta["classes"]))
    if unknown and train.data == "shards":
        raise DataError(f"the {split} shards hold classes {unknown} the model does not know: run `dvc repro` again")
    if unknown:
        print(f"evaluate: warning: counts {unknown} never seen in training are left out")
        rows = [r for r in rows if r[1] in meta["classes"]]
    if train.data != "shards":
        loader = split_loader([(i, label) for i, label, _ in rows], images_dir, meta, batch_size, workers, device)
    return rows, loader


def timed_outputs(model, meta, loader, device, dtype, tta, label="evaluate"):
    """-> (head outputs per view [n, V, O] in split order, seconds per image) for one TTA mode."""
    start = time.perf_counter()
    bar = Progress(f"{label} ({tta} TTA)" if tta != "none" else label, len(loader.dataset))
    outputs, _ = predict_outputs(model, loader, device, dtype, tta=tta, progress=bar)
    if hasattr(loader, "order"):  # shard batches come in worker order: back to split order
        ordered = np.empty_like(outputs)
        ordered[loader.order()] = outputs
        outputs = ordered
    return outputs, (time.perf_counter() - start) / max(len(outputs), 1)


def model_scale(meta: dict) -> float | None:
    """The calibration's scale in a model file (binsight.verify.calibration); None for an uncalibrated one."""
    calibration = meta.get("calibration")
    return calibration["scale"] if calibration else None


def timed_predictions(model, meta, loader, device, dtype, tta):
    """-> (probabilities [n, K] in split order, seconds per image), with the model file's calibration if any."""
    outputs, seconds = timed_outputs(model, meta, loader, device, dtype, tta)
    return calibrated_probs(meta["loss"], outputs, len(meta["classes"]), model_scale(meta)), seconds


def prediction_rows(rows, probs, classes):
    out = []
    for (bin_id, label), p in zip(rows, probs):
        row = {"id": bin_id, "label": label, "pred": classes[int(p.argmax())], "prob": round(float(p.max()), 6)}
        row.update({f"p{c}": round(float(v), 6) for c, v in zip(classes, p)})
        out.append(row)
    return out


def per_class_accuracy(y_true, y_pred, classes):
    return [
        {"count": str(c), "accuracy": float(np.mean(y_pred[y_true == c] == c)) if np.any(y_true == c) else 0.0}
        for c in classes
    ]


def scores_on_counts_1to5(probs, y_true, counts, classes):
    """The figure comparable with the notebook's (its subset list holds only bins with 1-5 items): accuracy on
    the bins with 1-5 items, decoded two ways: the argmax over every class the model knows, and the argmax over
    the classes 1-5 alone. n: how many such bins."""
    mask = np.isin(counts, COUNTS_1TO5)
    keep = [i for i, c in enumerate(classes) if c in COUNTS_1TO5]
    if not mask.any() or not keep:
        return {"accuracy": float("nan"), "accuracy_argmax_1to5": float("nan"), "n": int(mask.sum())}
    classes = np.asarray(classes)
    full = classes[probs[mask].argmax(1)]
    restricted = classes[np.asarray(keep)[probs[mask][:, keep].argmax(1)]]
    return {
        "accuracy": float(np.mean(full == y_true[mask])),
        "accuracy_argmax_1to5": float(np.mean(restricted == y_true[mask])),
        "n": int(mask.sum()),
    }
