"""Cached backbone embeddings: the fast path of a frozen backbone.

With `model.freeze_backbone: true` and `train.augment: false` the pooled backbone output of an
image is the same in every epoch and every trial, so `featurize` computes it once per
(arch, weights, image size) and `train` fits only the head on the stored vectors. An epoch then
costs a few matrix products instead of decoding and convolving every photo.

Folder layout (a DVC output, `data/features/` by default):
    meta.json        what the vectors were computed with; {"cached": false, ...} when not cacheable
    {split}.npy      float32 [n, feature_dim], rows in the order of data/split/{split}.csv
    {split}.csv      id,label of those rows, to check they still match the split
"""

import hashlib
import math
from pathlib import Path

import numpy as np
import torch

from binsight.data.image_datasets import BinImages, eval_transform, make_loader
from binsight.data.split_files import read_labels
from binsight.progress import Progress
from binsight.train.feature_store import FORMAT, cacheable, feature_key, read_meta


def backbone_digest(backbone):
    """A hash of the backbone's weights and buffers: the features are only valid for these."""
    h = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def compute_features(
    backbone, rows, images_dir, image_size, jpeg_draft=True, batch_size=64, num_workers=0, device="cpu", dtype=None
):
    """Pooled backbone outputs of the images in `rows` -> float32 array [len(rows), feature_dim].
    The images go through exactly what the train stage feeds a frozen backbone (eval transform),
    at the same precision (`dtype`: the autocast dtype of training, None = fp32)."""
    device = torch.device(device)
    classes = sorted({label for _, label in rows})
    dataset = BinImages(rows, images_dir, classes, eval_transform(image_size), image_size, jpeg_draft)
    loader = make_loader(dataset, batch_size, False, num_workers, device.type == "cuda")
    backbone.eval()
    bar = Progress("featurize", len(rows))
    out = []
    for x, _ in loader:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out.append(backbone(x.to(device, non_blocking=True)).float().cpu())
        bar.update(len(x))
    bar.close()
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def cached_features(folder, model_params, train_params, rows_by_split, classes, backbone):
    """The stored features of each split in `rows_by_split` when they are valid for this run ->
    ({split: (features float32 tensor, class index tensor)}, why); else (None, why not)."""
    if train_params.use_features == "never":
        return None, "train.use_features is never"
    ok, why = cacheable(model_params, train_params)
    if not ok:
        return None, why
    meta = read_meta(folder)
    if meta is None:
        return None, f"no {Path(folder) / 'meta.json'} (run `dvc repro featurize`)"
    if meta.get("format") != FORMAT or not meta.get("cached"):
        return None, f"{folder} holds no features ({meta.get('reason', 'old format')})"
    want = feature_key(model_params, train_params)
    have = {k: meta.get(k) for k in want}
    if have != want:
        return None, f"the features in {folder} are for {have}, not {want} (run `dvc repro featurize`)"
    if meta.get("backbone_sha256") != backbone_digest(backbone):
        return None, f"the features in {folder} came from other backbone weights (run `dvc repro featurize`)"
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for split, rows in rows_by_split.items():
        stored = Path(folder) / f"{split}.csv"
        if not stored.exists() or read_labels(stored) != list(rows):
            return None, f"{stored} does not list the bins of the {split} split in its order"
        features = np.load(Path(folder) / f"{split}.npy")
        if features.shape != (len(rows), meta["feature_dim"]):
            return (
                None,
                f"{folder}/{split}.npy has shape {features.shape}, expected ({len(rows)}, {meta['feature_dim']})",
            )
        targets = torch.tensor([index[label] for _, label in rows], dtype=torch.long)
        out[split] = (torch.from_numpy(features), targets)
    return out, f"cached {meta['feature_dim']}-d features from {folder}"


class FeatureBatches:
    """Batches of stored features in the order of `sampler`, as a DataLoader over them would give
    (consecutive chunks of the sampler's indices), without per-sample collation: a whole epoch of
    the head on features takes milliseconds, so the loader must not dominate it. The features move
    to `device` once; targets stay on the CPU like a DataLoader's."""

    def __init__(self, features, targets, batch_size, sampler, device="cpu"):
        self.features = features.to(device)
        self.targets, self.batch_size, self.sampler = targets, batch_size, sampler

    def __iter__(self):
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        for idx in order.split(self.batch_size):
            yield self.features[idx.to(self.features.device)], self.targets[idx]

    def __len__(self):
        return math.ceil(len(self.sampler) / self.batch_size)
