"""Datasets and loaders: split CSV rows -> (image tensor, class index)."""
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from stages.errors import DataError
from stages.images import load_rgb
from stages.model import IMAGENET_MEAN, IMAGENET_STD
from stages.tables import read_labels


def eval_transform(image_size):
    return transforms.Compose([
        transforms.Resize((image_size, image_size)),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def train_transform(image_size, augment):
    if not augment:
        return eval_transform(image_size)
    # Counting-safe only: every item stays in the frame (no random crops or zooms).
    return transforms.Compose([
        transforms.Resize((image_size, image_size)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomVerticalFlip(),
        transforms.RandomRotation(10),
        transforms.ColorJitter(0.2, 0.2, 0.2),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class BinImages(Dataset):
    """Images named by a split CSV. `classes` maps counts to class indices."""

    def __init__(self, rows, images_dir, classes, transform, image_size, jpeg_draft=True):
        self.rows, self.images_dir, self.transform = rows, Path(images_dir), transform
        self.draft_size = image_size if jpeg_draft else None
        self.index = {c: i for i, c in enumerate(classes)}

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        bin_id, label = self.rows[i]
        img = load_rgb(self.images_dir / f"{bin_id}.jpg", self.draft_size)
        return self.transform(img), self.index[label]


def read_split(split_dir, name, images_dir):
    """Rows (id, label) of one split, checked: not empty, every image present."""
    path = Path(split_dir) / f"{name}.csv"
    rows = read_labels(path)
    if not rows:
        raise DataError(f"{path} is empty: no bins to {'train on' if name == 'train' else 'evaluate'}")
    missing = [bin_id for bin_id, _ in rows if not (Path(images_dir) / f"{bin_id}.jpg").exists()]
    if missing:
        raise DataError(f"{len(missing)} images listed in {path} are missing from {images_dir} "
                        f"(first: {missing[0]}.jpg); run `dvc repro fetch` or `dvc pull`")
    return rows


def make_loader(dataset, batch_size, shuffle, num_workers, pin_memory, seed=0, sampler=None):
    workers = min(num_workers, os.cpu_count() or 1)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, pin_memory=pin_memory, generator=generator,
                      persistent_workers=workers > 0, drop_last=False)
