"""Scoring a saved model on a split: its probabilities with and without test-time augmentation,
the time each took, and the rows of the predictions table."""

import os
import time
from functools import partial

import numpy as np

from binsight.data.class_policy import COUNTS_1TO5
from binsight.data.image_datasets import BinImages, eval_transform, make_loader
from binsight.errors import DataError
from binsight.model.count_losses import decode
from binsight.progress import Progress
from binsight.train.loops import predict


def split_loader(rows, images_dir, meta, batch_size, num_workers, device):
    """A loader that prepares images as the model file's preprocessing contract says."""
    pre, classes = meta["preprocess"], meta["classes"]
    size = pre["image_size"]
    dataset = BinImages(rows, images_dir, classes, eval_transform(size), size, pre["jpeg_draft"])
    return make_loader(dataset, batch_size, False, num_workers, device.type == "cuda")


def shard_split_loader(location, meta, batch_size, num_workers, device, decode="cpu"):
    """The test shards -> ([(id, label, count)] in split order, a loader over them). The loader yields
    in worker order; `timed_predictions` puts the probabilities back in split order."""
    from binsight.data.shard_stream import ShardBatches, ShardSet, ShardStream

    shards = ShardSet(location)
    size = meta["preprocess"]["image_size"]
    if shards.index["image_size"] != size:
        raise DataError(
            f"{location} holds {shards.index['image_size']} px images, the model wants {size}: run `dvc repro shard`"
        )
    entries = shards.entries("test")
    rows = [r for e in entries for r in zip(e["ids"], e["labels"], e["counts"])]
    workers = min(num_workers, os.cpu_count() or 1)  # as make_loader caps them
    stream = ShardStream(shards, "test", meta["classes"], workers=workers, decode=decode)
    return rows, ShardBatches(stream, batch_size, device, workers, device.type == "cuda")


def timed_predictions(model, meta, loader, device, dtype, tta):
    """-> (probabilities [n, K], seconds per image) for one TTA mode."""
    start = time.perf_counter()
    bar = Progress(f"evaluate ({tta} TTA)" if tta != "none" else "evaluate", len(loader.dataset))
    probs, _ = predict(
        model,
        loader,
        device,
        dtype,
        decode=partial(decode, meta["loss"], num_classes=len(meta["classes"])),
        tta=tta,
        progress=bar,
    )
    if hasattr(loader, "order"):  # shard batches come in worker order: back to split order
        ordered = np.empty_like(probs)
        ordered[loader.order()] = probs
        probs = ordered
    return probs, (time.perf_counter() - start) / max(len(probs), 1)


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
