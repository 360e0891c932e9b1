"""Does the shard data path keep the device fed? The product's training loop (binsight.train.loops.train_one_epoch)
fed by shard batches, against the same loop on batches already resident on the device (the compute-only
ceiling), same model, batch size and precision, measured side by side in one run.

    python -m bench.feed --source ../abid/dev                      # on a GPU: ResNet50, 224 px, batch 256
    python -m bench.feed --source ../abid/dev --arch resnet18 --size 96 --batch 32 --steps 20   # a CPU
    python -m bench.feed --source ../abid/dev --arch resnet18 --size 96 --batch 32 --workers 2 --against-cache 3

`--against-cache N`: N rounds of one epoch from each arm, interleaved in a rotating order after a warm-up so
all see the same machine: shards read every epoch, shards kept decoded in memory after their first read
(train.cache_images with --workers 0, what binsight recipe cpu-scratch runs) and the per-file path's
in-memory cache. Prints their img/s side by side.

Prints img/s of each and their ratio: the second arm is the compute-only ceiling at the same batch, so
the ratio says how much of the GPU the data path leaves idle. `--decode gpu` hands JPEG bytes to nvJPEG
instead of decoding in the loader workers.
"""

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from binsight.data.shard_stream import ShardBatches, ShardSet, ShardStream, steps_per_epoch
from binsight.data.training_shards import pack_splits
from binsight.model.counting_model import model_from_params
from binsight.params import check_model
from binsight.train.loops import Parts, amp_dtype, pick_device, train_one_epoch, use_channels_last


def parts_for(arch, device, classes=6):
    model = model_from_params(
        check_model(
            {
                "arch": arch,
                "weights": "none",
                "freeze_backbone": False,
                "width": 1.0,
                "head": {"hidden": [], "dropout": 0.0},
            }
        ),
        classes,
    ).to(device)
    dtype = amp_dtype("auto", device, training=True)
    channels_last = use_channels_last(True, device, dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None)
    return Parts(model, optimizer, torch.nn.CrossEntropyLoss().to(device), device, dtype, channels_last)


class Resident:
    """`steps` batches of random pixels made once on the device: no loader at all."""

    def __init__(self, batch, size, steps, device, classes=6):
        self.x = torch.randn(batch, 3, size, size, device=device)
        self.y = torch.randint(classes, (batch,), device=device)
        self.steps = steps

    def __iter__(self):
        for _ in range(self.steps):
            yield self.x, self.y


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="a local copy of the bucket (bin-images/, metadata/)")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    parser.add_argument("--decode", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--against-cache", type=int, default=0, metavar="N", help="N interleaved rounds against the cache"
    )
    args = parser.parse_args()
    device = pick_device()
    source = Path(args.source)
    ids = sorted(p.stem for p in (source / "bin-images").glob("*.jpg"))
    rows = [(i, n % 6, n % 6) for n, i in enumerate(ids)]
    root = Path(tempfile.mkdtemp(prefix="binsight-feed-"))
    pack_splits({"train": rows}, source / "bin-images", source / "metadata", root, args.size, shard_size=250)
    shards = ShardSet(root)
    per_epoch = steps_per_epoch(shards.entries("train"), 1, max(args.workers, 1), args.batch)
    stream = ShardStream(shards, "train", list(range(6)), workers=args.workers, shuffle=True, decode=args.decode)
    fed = ShardBatches(
        stream, args.batch, device, args.workers, device.type == "cuda", "flips", steps=per_epoch, drop_last=True
    )
    parts = parts_for(args.arch, device)
    if args.against_cache:
        against_cache(args, rows, source, fed, parts)
        shutil.rmtree(root, ignore_errors=True)
        return
    warm = Resident(args.batch, args.size, 3, device)
    train_one_epoch(parts.model, warm, parts)  # cudnn autotune, allocator warm-up
    ceiling = train_one_epoch(parts.model, Resident(args.batch, args.size, args.steps, device), parts)
    images, seconds, wait, epoch = 0, 0.0, 0.0, 0
    start = time.perf_counter()
    while images < args.steps * args.batch:
        fed.set_epoch(epoch)
        stats = train_one_epoch(parts.model, fed, parts)
        images, seconds, wait, epoch = images + stats.images, seconds + stats.seconds, wait + stats.data_wait, epoch + 1
    wall = time.perf_counter() - start
    shutil.rmtree(root, ignore_errors=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{os.cpu_count()} CPU cores"
    print(f"{args.arch} at {args.size} px, batch {args.batch}, {parts.dtype or 'fp32'}, on {name}:")
    print(f"  compute only (batches resident on the device): {ceiling.images_per_s:8.0f} img/s")
    print(
        f"  fed from shards ({args.workers} workers, decode {args.decode}):  {images / seconds:8.0f} img/s "
        f"(waiting for data {wait / seconds:.0%} of the time; {images / wall:.0f} img/s with worker start-up)"
    )
    print(f"  fed / compute only: {images / seconds / ceiling.images_per_s:.2f}")


def against_cache(args, rows, source, fed, parts):
    """Epochs fed from shards (read every epoch, and kept decoded in memory after the first) and from the
    per-file path's in-memory cache, interleaved in a rotating order after a warm-up, so no arm always
    runs first (a cold first epoch) and all see the same machine."""
    from binsight.data.image_datasets import InMemoryBatches, InMemoryImages
    from binsight.train.distributed import ShardSampler

    start = time.perf_counter()
    cache = InMemoryImages([(i, c) for i, c, _ in rows], source / "bin-images", list(range(6)), args.size)
    decode_s = time.perf_counter() - start
    sampler = ShardSampler(len(rows), 0, 1, shuffle=True)
    arms = {"shards": fed, "cache": InMemoryBatches(cache, args.batch, sampler, "flips")}
    if not args.workers:  # the decoded-shard cache runs in-process only
        stream = fed.stream
        kept = ShardStream(
            stream.shards, "train", list(range(6)), shuffle=True, buffer=stream.buffer, decode="cpu", cache=True
        )
        arms["shards, cached"] = ShardBatches(
            kept, args.batch, fed.device, 0, False, "flips", steps=fed.steps, drop_last=True
        )
    train_one_epoch(parts.model, Resident(args.batch, args.size, 3, fed.device), parts)  # allocator, oneDNN warm-up
    totals = {name: [0, 0.0] for name in arms}
    names = list(arms)
    for epoch in range(args.against_cache):
        for name in names[epoch % len(names) :] + names[: epoch % len(names)]:
            loader = arms[name]
            (sampler if name == "cache" else loader).set_epoch(epoch)
            start = time.perf_counter()
            stats = train_one_epoch(parts.model, loader, parts)
            totals[name][0] += stats.images
            totals[name][1] += time.perf_counter() - start
    rate = {name: n / s for name, (n, s) in totals.items()}
    print(f"{args.arch} at {args.size} px, batch {args.batch}, {args.against_cache} epochs each, rotating order:")
    print(f"  fed from shards ({args.workers} workers):  {rate['shards']:7.1f} img/s (worker start-up included)")
    if "shards, cached" in rate:
        print(f"  shards, kept decoded after epoch 1: {rate['shards, cached']:7.1f} img/s (its first read included)")
    print(f"  per-file in-memory cache:         {rate['cache']:7.1f} img/s (+ {decode_s:.1f} s to decode it once)")
    for name in rate:
        if name != "cache":
            print(f"  {name} / per-file cache: {rate[name] / rate['cache']:.2f}")


if __name__ == "__main__":
    main()
