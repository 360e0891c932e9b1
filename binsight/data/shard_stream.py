"""The streaming data path: batches read from tar shards (binsight.data.training_shards), locally or straight from S3.

    ShardStream    an IterableDataset: this process's shards, read in a seeded order through a shuffle
                   buffer, decoded in the loader's worker processes (or left as JPEG bytes for the GPU)
    shard_batches  a loader over it that yields exactly `steps` batches an epoch on every DDP rank,
                   moved to the device, flipped and normalised there (whole-batch tensor ops)

Shards are dealt out once: rank r gets shards r, r+W, ... (W ranks) and its loader worker w of N gets
every N-th of those. Each (rank, worker) thus always holds the same bins, so the number of full batches
it can make is known from the index before the epoch starts, and every rank runs the same number of
steps: the minimum over ranks (DDP would otherwise hang at the last step). Within an epoch the shard
order and the shuffle buffer are seeded by (seed, epoch, rank, worker): a run resumed at an epoch
boundary reads what an uninterrupted run would have read.

With `cache` (train.cache_images, when the stream runs in the training process: num_workers 0, as in
the CPU recipe) each shard's decoded samples are kept after their first read, so later epochs skip the
tar parsing and the decode; the order (shard order, shuffle buffer) stays exactly the uncached one.

Reading from S3 goes through the same boto3 client as fetch: `s3://bucket/prefix/` holds index.json and
the shards (e.g. `aws s3 sync data/shards s3://bucket/prefix/`), and each node streams its own shards.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_expander

from binsight.data.image_datasets import augment_batch, normalize
from binsight.data.training_shards import FORMAT, INDEX
from binsight.errors import DataError
from binsight.params import TrainParams


class ShardSet:
    """Where the shards live (a folder or s3://bucket/prefix/) and their index."""

    def __init__(self, location: str | Path, client: Any = None) -> None:
        self.location = str(location)
        parsed = urlparse(self.location)
        self.s3 = parsed.scheme == "s3"
        if self.s3:
            if client is None:  # your own bucket: signed with your AWS credentials; AWS_ENDPOINT_URL for MinIO etc.
                from binsight.data.s3_client import make_client

                client = make_client(endpoint_url=os.environ.get("AWS_ENDPOINT_URL"), anonymous=False)
            self.client, self.bucket = client, parsed.netloc
            self.prefix = parsed.path.lstrip("/")
            if self.prefix and not self.prefix.endswith("/"):
                self.prefix += "/"
            self.index = self._s3_index()
        else:
            from binsight.data.training_shards import read_index

            self.client, self.folder = None, Path(self.location)
            self.index = read_index(self.folder)

    def _s3_index(self):
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + INDEX)["Body"].read()
            index = json.loads(body)
        except Exception as exc:  # noqa: BLE001 - any failure to read it means the same to the user
            raise DataError(
                f"cannot read {self.location}{INDEX} ({type(exc).__name__}: {exc}); "
                "upload the shard folder there first (aws s3 sync data/shards s3://...)"
            ) from None
        if index.get("format") != FORMAT:
            raise DataError(f"{self.location}{INDEX}: format {index.get('format')!r}, expected {FORMAT!r}")
        return index

    def entries(self, split: str) -> list[dict[str, Any]]:
        entries = self.index["splits"].get(split)
        if not entries:
            raise DataError(f"{self.location}: no {split} shards in {INDEX}; run `dvc repro shard`")
        return entries

    def open(self, name):
        if self.s3:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"]
        return open(self.folder / name, "rb")

    def describe(self, name):
        return f"{self.location.rstrip('/')}/{name}"


def deal(entries, rank, world_size, workers):
    """Shard entries -> [worker] lists of this rank's entries (fixed for the whole run)."""
    mine = entries[rank::world_size]
    return [mine[w::workers] for w in range(max(workers, 1))]


def steps_per_epoch(entries, world_size, workers, batch_size):
    """Full batches every rank can make in an epoch (workers batch on their own, dropping their rest)."""
    per_rank = [
        sum(sum(e["bins"] for e in group) // batch_size for group in deal(entries, r, world_size, workers))
        for r in range(world_size)
    ]
    return min(per_rank)


def decode_jpeg(data):
    """Pre-resized JPEG bytes -> uint8 tensor [3, s, s] (PIL: libjpeg-turbo, the GIL released)."""
    with Image.open(io.BytesIO(data)) as img:
        return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).contiguous()


class ShardStream(IterableDataset):
    """Samples (uint8 image or JPEG bytes, class index, position in the split) of this process's shards.

    `shuffle`: seeded shard order and a shuffle buffer of `buffer` samples. `decode`: "cpu" decodes in
    the worker, "gpu" hands the JPEG bytes on (torchvision.io.decode_jpeg on the device). `cache`: keep
    each shard's decoded samples in memory after its first read (in-process streams only: a loader
    worker's copy would die with the worker at the end of the epoch)."""

    def __init__(
        self,
        shards: ShardSet,
        split: str,
        classes: Sequence[int],
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        shuffle: bool = False,
        buffer: int = 1000,
        seed: int = 0,
        decode: str = "cpu",
        cache: bool = False,
    ) -> None:
        self.shards, self.split, self.index = shards, split, {c: i for i, c in enumerate(classes)}
        self.rank, self.world_size, self.workers = rank, world_size, workers
        self.shuffle, self.buffer, self.seed, self.decode, self.epoch = shuffle, buffer, seed, decode, 0
        if cache and (workers or decode != "cpu"):
            raise ValueError("ShardStream caches decoded images only in-process (workers=0, decode='cpu')")
        self.cache = cache
        self.decoded: dict[str, list] = {}  # shard file -> its decoded samples (cache)
        self.entries = shards.entries(split)
        offsets = itertools.accumulate([e["bins"] for e in self.entries], initial=0)
        self.offset = dict(zip((e["file"] for e in self.entries), offsets))

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return sum(e["bins"] for e in self.entries[self.rank :: self.world_size])

    def samples(self, entry):
        """One shard's samples in order, from the cache when it holds them."""
        name = entry["file"]
        if name in self.decoded:
            yield from self.decoded[name]
            return
        if not self.cache:
            yield from self.read(entry)
            return
        kept = []
        for sample in self.read(entry):
            kept.append(sample)
            yield sample
        self.decoded[name] = kept  # only a shard read to its end: a pass cut short keeps nothing partial

    def read(self, entry):
        """One shard's samples read from its tar; a member that is missing or does not decode is named."""
        name, position = entry["file"], self.offset[entry["file"]]
        stream = self.shards.open(name)
        try:
            files = tar_file_expander([{"stream": stream, "url": name}], handler=reraise)
            for i, sample in enumerate(group_by_keys(files)):
                key = sample.get("__key__")
                if "jpg" not in sample or "json" not in sample:
                    raise DataError(
                        f"{self.shards.describe(name)}: member {key} lacks its .jpg or .json; rebuild the shards"
                    )
                record = json.loads(sample["json"])
                try:
                    image = (
                        decode_jpeg(sample["jpg"])
                        if self.decode == "cpu"
                        else torch.frombuffer(bytearray(sample["jpg"]), dtype=torch.uint8)
                    )
                except OSError as exc:
                    raise DataError(
                        f"{self.shards.describe(name)}: member {key}.jpg does not decode ({exc}); "
                        "rebuild the shards (`dvc repro shard --force`)"
                    ) from None
                yield image, self.index[record["label"]], position + i
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"{self.shards.describe(name)}: unreadable ({exc}); rebuild or pull the shards") from None
        finally:
            stream.close()

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = deal(self.entries, self.rank, self.world_size, workers)[worker]
        rng = random.Random(f"{self.seed}:{self.epoch}:{self.rank}:{worker}")
        if self.shuffle:
            mine = rng.sample(mine, len(mine))
        samples = itertools.chain.from_iterable(self.samples(e) for e in mine)
        yield from shuffled(samples, self.buffer, rng) if self.shuffle else samples


def reraise(exc):
    raise exc


def shuffled(samples, size, rng):
    """A shuffle buffer: hold `size` samples, yield a random one as each new one comes in."""
    buf = []
    for sample in samples:
        if len(buf) < size:
            buf.append(sample)
            continue
        k = rng.randrange(size)
        buf[k], sample = sample, buf[k]
        yield sample
    rng.shuffle(buf)
    yield from buf


def collate(samples):
    images, targets, positions = zip(*samples)
    batch = torch.stack(images) if isinstance(images[0], torch.Tensor) and images[0].dim() == 3 else list(images)
    return batch, torch.tensor(targets), torch.tensor(positions)


class ShardBatches:
    """Batches of a ShardStream for a training or eval loop: (normalised float images on `device`,
    targets). Training: exactly `steps` batches, augmented on the device. Eval: every sample once;
    `positions` then holds each yielded sample's place in the split, for putting predictions in order."""

    def __init__(
        self,
        stream: ShardStream,
        batch_size: int,
        device: torch.device,
        workers: int = 0,
        pin_memory: bool = False,
        augment: str = "none",
        steps: int | None = None,
        drop_last: bool = False,
    ) -> None:
        self.stream, self.device, self.augment, self.steps = stream, device, augment, steps
        self.dataset = stream  # as a DataLoader has it
        self.batch_size = batch_size
        self.loader = DataLoader(
            stream,
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=pin_memory,
            drop_last=drop_last,
            persistent_workers=False,  # the epoch (shard order, buffer seed) reaches workers at each iter
            prefetch_factor=4 if workers else None,
        )
        self.normalize = normalize()
        self.positions: list[torch.Tensor] = []

    def set_epoch(self, epoch):
        self.stream.set_epoch(epoch)

    def __len__(self):
        """Batches an epoch, as a DataLoader's len."""
        return self.steps if self.steps is not None else -(-len(self.stream) // self.batch_size)

    def images(self):
        """Images an epoch on this process (what the progress bar counts)."""
        return self.steps * self.batch_size if self.steps is not None else len(self.stream)

    def __iter__(self):
        self.positions = []
        batches = iter(self.loader)
        if self.steps is not None:
            batches = itertools.islice(batches, self.steps)
        for images, targets, positions in batches:
            x = (
                decode_on_device(images, self.device)
                if isinstance(images, list)
                else images.to(self.device, non_blocking=True)
            )
            x = self.normalize(augment_batch(x, self.augment))
            self.positions.append(positions)
            yield x, targets

    def order(self):
        """Positions of the samples yielded by the last pass, in yield order."""
        return torch.cat(self.positions).numpy() if self.positions else np.zeros(0, np.int64)


def decode_on_device(jpegs, device):
    """JPEG bytes (uint8 tensors) -> uint8 batch decoded by nvJPEG on a GPU (torchvision.io.decode_jpeg)."""
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as tv_decode

    return torch.stack(tv_decode(jpegs, mode=ImageReadMode.RGB, device=device))


class Epochs:
    """What the training loop asks of a sampler (set_epoch, len in images), for shard batches."""

    def __init__(self, batches):
        self.batches = batches

    def set_epoch(self, epoch):
        self.batches.set_epoch(epoch)

    def __len__(self):
        return self.batches.images()


def cache_decision(
    train_params: TrainParams, workers: int, bins: int, free_bytes: int | None = None
) -> tuple[bool, str]:
    """(cache decoded shards?, why): train.cache_images, in-process CPU decoding, and room in memory."""
    size = train_params.image_size
    need = bins * 3 * size * size
    if not train_params.cache_images:
        return False, "train.cache_images is false"
    if workers or train_params.decode != "cpu":
        return False, "decoding runs in loader workers or on the GPU (cached only with num_workers 0, decode cpu)"
    if free_bytes is None:
        free_bytes = available_memory()
    if free_bytes is not None and need > free_bytes // 2:
        return False, f"{need / 2**30:.1f} GiB of decoded images would not fit in half the free memory"
    return True, f"decoded images kept in memory after the first epoch ({need / 2**20:.0f} MiB)"


def available_memory():
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux: no guard
        return None


def shard_loaders(
    shards: ShardSet,
    classes: Sequence[int],
    train_params: TrainParams,
    world: Any,
    device: torch.device,
    pin_memory: bool,
) -> dict[str, Any]:
    """-> {"train", "val", "sampler", "cache"} over the train and val shards: the training loop's loaders
    ("cache": whether decoded images stay in memory, and why)."""
    workers, batch = min(train_params.num_workers, os.cpu_count() or 1), train_params.batch_size
    steps = steps_per_epoch(shards.entries("train"), world.world_size, max(workers, 1), batch)
    if steps == 0:
        raise DataError(
            f"{shards.location}: too few train bins for one batch of {batch} on each of {world.world_size} "
            f"processes x {max(workers, 1)} loader workers; lower batch_size or train.num_workers, or shard smaller"
        )
    mine = [e for split in ("train", "val") for e in shards.entries(split)[world.rank :: world.world_size]]
    cache, why = cache_decision(train_params, workers, sum(e["bins"] for e in mine))
    common = dict(
        rank=world.rank,
        world_size=world.world_size,
        workers=workers,
        seed=train_params.seed,
        decode=train_params.decode,
        cache=cache,
    )
    train = ShardBatches(
        ShardStream(shards, "train", classes, shuffle=True, buffer=train_params.shuffle_buffer, **common),
        batch,
        device,
        workers,
        pin_memory,
        train_params.augment,
        steps=steps,
        drop_last=True,
    )
    val = ShardBatches(ShardStream(shards, "val", classes, **common), batch, device, workers, pin_memory)
    return {"train": train, "val": val, "sampler": Epochs(train), "cache": why}
