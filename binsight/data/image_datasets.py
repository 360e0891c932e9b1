"""Datasets and loaders: split CSV rows -> (image tensor, class index[, aux targets]).

Every image goes through the same steps, in training, evaluate, predict and serve:
    decode (binsight.data.image_decode.load_rgb, optionally JPEG draft) -> resize to a square (bilinear)
    -> uint8 tensor -> [augment, training only] -> float, normalised with the ImageNet mean/std.
With `cache: true` the first three steps run once per image and the uint8 tensors stay in memory
(`InMemoryImages`): on a CPU, decoding is then paid once instead of every epoch.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from binsight.data.image_decode import load_rgb
from binsight.data.raw_bins import RawBins
from binsight.data.square_views import dihedral
from binsight.params import AUGMENTS, augment_mode  # noqa: F401 (AUGMENTS: re-exported)

# torchvision's ImageNet statistics: every backbone it ships was trained on inputs normalised with them,
# and a model trained from scratch keeps them so that one preprocessing serves every model file.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Counting-safe augmentations only: every item stays in the frame (no random crops or zooms).


def resize_to_tensor(image_size):
    """PIL image -> uint8 tensor [3, s, s]: the resize every path shares."""
    return v2.Compose([v2.Resize((image_size, image_size), antialias=True), v2.PILToTensor()])


def normalize():
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class RandomDihedral(torch.nn.Module):
    """One of the 8 symmetries of a square, uniformly (or one of the 4 flips with `flips_only`)."""

    def __init__(self, flips_only=False):
        super().__init__()
        self.choices = (0, 4, 6, 2) if flips_only else tuple(range(8))

    def forward(self, x):
        return dihedral(x, self.choices[int(torch.randint(len(self.choices), ()))])


def augmentation(mode):
    """uint8 tensor -> uint8 tensor, for a train.augment mode."""
    mode = augment_mode(mode)
    if mode == "none":
        return v2.Identity()
    if mode == "flips":
        return RandomDihedral(flips_only=True)
    if mode == "dihedral":
        return RandomDihedral()
    # "full": the first recipe's set. The small rotations blur and black out the corners and the
    # colour jitter changes what a bin looks like; the study in docs/results.md found them to cost accuracy.
    return v2.Compose([RandomDihedral(flips_only=True), v2.RandomRotation(10), v2.ColorJitter(0.2, 0.2, 0.2)])


def eval_transform(image_size):
    return v2.Compose([resize_to_tensor(image_size), normalize()])


def train_transform(image_size, augment):
    return v2.Compose([resize_to_tensor(image_size), augmentation(augment), normalize()])


class BinImages(Dataset):
    """Images named by a split CSV, decoded on every access. `classes` maps counts to class indices.
    With `aux` (a tensor [n, 3], binsight.model.aux_targets) an item is (image, class index, its aux row)."""

    def __init__(self, rows, images_dir, classes, transform, image_size, jpeg_draft=True, aux=None):
        self.rows, self.bins, self.transform, self.aux = rows, RawBins(images_dir), transform, aux
        self.draft_size = image_size if jpeg_draft else None
        self.index = {c: i for i, c in enumerate(classes)}

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        bin_id, label = self.rows[i]
        img = load_rgb(self.bins.image(bin_id), self.draft_size)
        if self.aux is not None:
            return self.transform(img), self.index[label], self.aux[i]
        return self.transform(img), self.index[label]


class InMemoryImages(Dataset):
    """The same images decoded and resized once, held as one uint8 tensor [n, 3, s, s]
    (3 * s * s bytes an image: 38 KB at 112 px, 150 KB at 224 px). An item is normalised like
    BinImages' with the eval transform; InMemoryBatches serves whole augmented batches (with the
    rows of `aux`, when given, as a third element)."""

    def __init__(self, rows, images_dir, classes, image_size, jpeg_draft=True, threads=None, aux=None):
        self.rows, self.aux = rows, aux
        self.index = {c: i for i, c in enumerate(classes)}
        to_tensor = resize_to_tensor(image_size)
        draft = image_size if jpeg_draft else None
        bins = RawBins(images_dir)

        def decode(row):
            return to_tensor(load_rgb(bins.image(row[0]), draft))

        # PIL releases the GIL while decoding and resizing: threads use every core.
        with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool:
            decoded = list(pool.map(decode, rows))
        self.pixels = torch.stack(decoded) if decoded else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)
        self.targets = torch.tensor([self.index[label] for _, label in rows], dtype=torch.long)
        self.normalize = normalize()

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.normalize(self.pixels[i]), int(self.targets[i])


def augment_batch(x, mode):
    """Augment a uint8 batch [n, 3, s, s] per sample, in a few whole-batch tensor ops for the
    exact modes (flips, dihedral); `full` goes sample by sample."""
    mode = augment_mode(mode)
    if mode == "none" or len(x) == 0:
        return x
    if mode == "full":
        one = augmentation("full")
        return torch.stack([one(image) for image in x])
    choices = (0, 4, 6, 2) if mode == "flips" else tuple(range(8))
    picks = torch.tensor(choices)[torch.randint(len(choices), (len(x),))]
    out = x.clone()
    for k in choices:
        chosen = picks == k
        if k and chosen.any():
            out[chosen] = dihedral(x[chosen], k)
    return out


class InMemoryBatches:
    """Batches of an InMemoryImages in the order of `sampler`, as a DataLoader over it would give
    (consecutive chunks of the sampler's indices), augmented and normalised a whole batch at a
    time: per-sample Python calls would make the loop wait for data."""

    def __init__(self, images, batch_size, sampler, augment="none"):
        self.images, self.batch_size, self.sampler, self.augment = images, batch_size, sampler, augment
        self.normalize = normalize()

    def __iter__(self):
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        for idx in order.split(self.batch_size):
            x = self.normalize(augment_batch(self.images.pixels[idx], self.augment))
            yield (
                (x, self.images.targets[idx])
                if self.images.aux is None
                else (x, self.images.targets[idx], self.images.aux[idx])
            )

    def __len__(self):
        return -(-len(self.sampler) // self.batch_size)


def make_loader(dataset, batch_size, shuffle, num_workers, pin_memory, seed=0, sampler=None):
    workers = min(num_workers, os.cpu_count() or 1)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        generator=generator,
        persistent_workers=workers > 0,
        drop_last=False,
    )
