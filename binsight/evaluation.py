"""Scoring a saved model on a split: its probabilities with and without test-time augmentation,
the time each took, and the rows of the predictions table."""

import time
from functools import partial

import numpy as np

from binsight.datasets import BinImages, eval_transform, make_loader
from binsight.loops import predict
from binsight.losses import decode
from binsight.progress import Progress


def split_loader(rows, images_dir, meta, batch_size, num_workers, device):
    """A loader that prepares images as the model file's preprocessing contract says."""
    pre, classes = meta["preprocess"], meta["classes"]
    size = pre["image_size"]
    dataset = BinImages(rows, images_dir, classes, eval_transform(size), size, pre["jpeg_draft"])
    return make_loader(dataset, batch_size, False, num_workers, device.type == "cuda")


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
