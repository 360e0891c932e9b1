"""Benchmark: training throughput of the frozen-backbone and full fine-tune modes, the data
loader with and without reduced-scale JPEG decoding (train.jpeg_draft), and a training step with
torch's default Adam against the fused kernel the train stage uses, in the default layout and
channels-last, side by side in one run.

Uses the real code paths (binsight.model.counting_model, binsight.data.image_datasets,
binsight.train.loops.train_one_epoch) on generated bin photos the size of real ABID ones
(about 500x400 px). On a GPU box:

    python -m bench.train --arch resnet50 --size 224 --images 2048 --batch-size 64 --workers 8
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from binsight.data.image_datasets import BinImages, make_loader, train_transform
from binsight.model.counting_model import build_model
from binsight.params import TrainParams
from binsight.train.loops import Parts, amp_dtype, pick_device, train_one_epoch, use_channels_last
from binsight.train.training_run import make_optimizer
from tests.support.synthetic import draw_bin, jpeg_bytes

TRAIN = TrainParams(lr=1e-3, backbone_lr=None, optimizer="adam", weight_decay=0.0, momentum=0.9)


def write_photos(folder, n):
    import random

    rng = random.Random(0)
    rows = []
    for i in range(n):
        label = 1 + i % 5
        size = (rng.randint(420, 560), rng.randint(340, 460))
        (folder / f"{i:06d}.jpg").write_bytes(jpeg_bytes(draw_bin(label, size, rng)))
        rows.append((f"{i:06d}", label))
    return rows


def loader_for(rows, folder, args, draft, pin):
    ds = BinImages(rows, folder, [1, 2, 3, 4, 5], train_transform(args.size, False), args.size, jpeg_draft=draft)
    return make_loader(ds, args.batch_size, True, args.workers, pin, seed=0)


def time_loader(loader):
    start, n = time.perf_counter(), 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - start)


def time_training(rows, folder, args, device, freeze):
    model = build_model(args.arch, "none", 5, hidden=[512], dropout=0.2, freeze_backbone=freeze).to(device)
    dtype = amp_dtype(args.amp, device, training=True)
    channels_last = use_channels_last(True, device, dtype)  # as the train stage decides
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, TRAIN)
    loader = loader_for(rows, folder, args, True, device.type == "cuda")
    parts = Parts(
        model=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        device=device,
        dtype=dtype,
        channels_last=channels_last,
    )
    train_one_epoch(model, loader, parts)  # warm-up epoch
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stats = train_one_epoch(model, loader, parts)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return stats, peak


def time_steps(args, device, rounds=3, steps=4):
    """ms per full fine-tune step (forward, backward, update) on one in-memory batch: torch's default Adam (a
    Python loop over the tensors on the CPU, foreach kernels on a GPU), the fused kernel that
    binsight.train.training_run.make_optimizer picks, and the same with the model and batch channels-last. The
    variants take turns, so all of them see the same machine."""
    dtype, criterion = amp_dtype(args.amp, device, training=True), nn.CrossEntropyLoss()
    x = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    y = torch.randint(0, 5, (args.batch_size,), device=device)
    variants = {}
    for name, fused, channels_last in (
        ("default", False, False),
        ("fused", True, False),
        ("fused, channels-last", True, True),
    ):
        torch.manual_seed(0)
        model = build_model(args.arch, "none", 5, hidden=[512], dropout=0.2, freeze_backbone=False).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, TRAIN)
        if not fused:
            optimizer = torch.optim.Adam([{"params": g["params"], "lr": g["lr"]} for g in optimizer.param_groups])
        variants[name] = (model, optimizer, x.contiguous(memory_format=torch.channels_last) if channels_last else x)

    def step(model, optimizer, batch):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = criterion(model(batch), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for variant in variants.values():
        step(*variant)  # warm-up
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, variant in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                step(*variant)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append((time.perf_counter() - start) / steps * 1000)
    fused_here = variants["fused"][1].param_groups[0]["fused"]
    return {name: min(t) for name, t in times.items()}, fused_here, use_channels_last(True, device, dtype)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=64, help="generated photos per epoch (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--amp",
        default="auto",
        choices=["auto", "off", "bf16"],
        help="autocast as train.amp (default: %(default)s; cpu-scratch trains in bf16)",
    )
    args = parser.parse_args()

    device = pick_device()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = write_photos(folder, args.images)
        full = time_loader(loader_for(rows, folder, args, False, False))
        draft = time_loader(loader_for(rows, folder, args, True, False))
        results = {
            mode: time_training(rows, folder, args, device, freeze)
            for mode, freeze in (("frozen backbone", True), ("full fine-tune", False))
        }
    print(
        f"{args.arch} at {args.size} px, batch {args.batch_size}, {args.images} images of ~500x400 px, "
        f"{args.workers} loader workers, device {device}"
        + (
            f" ({torch.cuda.get_device_name(device)})"
            if device.type == "cuda"
            else f" ({torch.get_num_threads()} threads)"
        )
    )
    print(f"  loader, full-size JPEG decode : {full:8.1f} img/s")
    print(f"  loader, draft-mode decode     : {draft:8.1f} img/s   ({draft / full:.1f}x)")
    for mode, (stats, peak) in results.items():
        mem = f", peak GPU memory {peak:.2f} GiB" if peak is not None else ""
        print(
            f"  train, {mode:<22} : {stats.images_per_s:8.1f} img/s   (data wait {stats.data_wait_fraction:.0%}{mem})"
        )
    frozen, full_ft = (results[m][0].images_per_s for m in results)
    print(f"  frozen / full fine-tune       : {frozen / full_ft:8.1f}x")
    ms, fused, channels_last = time_steps(args, device)
    print(f"  {'full fine-tune step, torch default Adam':<40}: {ms['default']:8.1f} ms")
    print(
        f"  {'... the fused Adam kernel' + ('' if fused else ' (unsupported here)'):<40}: {ms['fused']:8.1f} ms   "
        f"({ms['default'] / ms['fused']:.2f}x)"
    )
    print(
        f"  {'... fused, and channels-last':<40}: {ms['fused, channels-last']:8.1f} ms   "
        f"({ms['fused'] / ms['fused, channels-last']:.2f}x; the train stage uses channels-last here: "
        f"{'yes' if channels_last else 'no'})"
    )


if __name__ == "__main__":
    main()
