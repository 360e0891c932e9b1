"""Sharded storage: each split packed into tar shards of the webdataset layout, images pre-resized once.

    data/shards/train-00000.tar   members <id>.jpg (the image at the training size, JPEG) and <id>.json
                                  ({"id", "label", "count", "metadata": the bin's metadata JSON})
    data/shards/index.json        the format, the image size, and per shard: file, bins, sha256, ids

DVC tracks a few hundred shard files instead of two files a bin, and `dvc push`/`pull` move them at
disk speed (docs/scale.md). A shard is plain tar: `tar tf` lists it and any webdataset reader reads it.
Bins are spread over the shards in a seeded random order, so every shard holds every class.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from binsight.data.image_decode import load_rgb
from binsight.data.raw_bins import RawBins
from binsight.errors import DataError
from binsight.files import atomic_write_text

FORMAT = "webdataset"
INDEX = "index.json"


def shard_plan(rows, shard_size, seed, split):
    """[(id, label, count)] -> [(file name, [rows])]: seeded order, `shard_size` bins a shard."""
    order = sorted(rows)
    random.Random(f"{seed}:{split}").shuffle(order)
    return [(f"{split}-{i // shard_size:05d}.tar", order[i : i + shard_size]) for i in range(0, len(order), shard_size)]


def encode_image(src, image_size, quality):
    """A bin's photo (a path or a file object) -> JPEG bytes at image_size x image_size: the resize every
    data path shares (bilinear, antialiased), done once here instead of every epoch."""
    from binsight.data.image_datasets import resize_to_tensor

    pixels = resize_to_tensor(image_size)(load_rgb(src, image_size))
    buf = io.BytesIO()
    Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy()).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def add_member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed mtime: the same bins give the same bytes
    tar.addfile(info, io.BytesIO(data))


def write_shard(path, rows, images_dir, metadata_dir, image_size, quality):
    """Pack `rows` into the tar at `path` (written to a temp name, renamed when whole)."""
    tmp = path.with_name(path.name + ".partial")
    bins = RawBins(images_dir, metadata_dir)
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for bin_id, label, count in rows:
            try:
                jpeg = encode_image(bins.image(bin_id), image_size, quality)
            except (OSError, DataError) as exc:
                raise DataError(
                    f"shard {path.name}: image of bin {bin_id} cannot be read ({exc}); run `dvc repro fetch`"
                ) from None
            meta_bytes = bins.metadata_bytes(bin_id)
            meta = json.loads(meta_bytes) if meta_bytes is not None else None
            record = {"id": bin_id, "label": label, "count": count, "metadata": meta}
            add_member(tar, f"{bin_id}.jpg", jpeg)
            add_member(tar, f"{bin_id}.json", json.dumps(record).encode())
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return sha256_of(path)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_index(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / INDEX
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} not found: run `dvc repro shard` (or `dvc pull`) first") from None
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}): run `dvc repro shard` again") from None
    if index.get("format") != FORMAT:
        raise DataError(f"{path}: format {index.get('format')!r}, expected {FORMAT!r}; run `dvc repro shard` again")
    return index


def reusable(path, entry, rows):
    """Whether the shard on disk is the one the plan asks for: same bins and labels, same bytes as indexed."""
    return (
        entry is not None
        and path.exists()
        and entry["ids"] == [r[0] for r in rows]
        and entry["labels"] == [r[1] for r in rows]
        and sha256_of(path) == entry["sha256"]
    )


def pack_splits(
    splits: Mapping[str, Sequence[tuple[str, int, int]]],
    images_dir: str | Path,
    metadata_dir: str | Path,
    out_dir: str | Path,
    image_size: int,
    shard_size: int = 1000,
    quality: int = 95,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """{split: [(id, label, count)]} -> shards and index.json in `out_dir`; -> the index.
    A rerun keeps every shard that is already whole and still matches the plan (resume after a kill)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.partial"):
        stale.unlink()
    try:
        previous = read_index(out_dir)
        old = {e["file"]: e for entries in previous["splits"].values() for e in entries}
        old_size = previous["image_size"]
    except DataError:
        old, old_size = {}, None
    plan = [
        (split, name, rows)
        for split, split_rows in splits.items()
        for name, rows in shard_plan(split_rows, shard_size, seed, split)
    ]
    wanted = {name for _, name, _ in plan}
    for tar in out_dir.glob("*.tar"):
        if tar.name not in wanted:
            tar.unlink()

    def pack(job):
        split, name, rows = job
        path = out_dir / name
        entry = old.get(name) if old_size == image_size else None
        if reusable(path, entry, rows):
            digest, reused = entry["sha256"], True
        else:
            digest, reused = write_shard(path, rows, images_dir, metadata_dir, image_size, quality), False
        if progress is not None:
            progress(len(rows))
        return (
            split,
            {
                "file": name,
                "bins": len(rows),
                "sha256": digest,
                "ids": [r[0] for r in rows],
                "labels": [r[1] for r in rows],
                "counts": [r[2] for r in rows],
            },
            reused,
        )

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:  # PIL decodes and resizes without the GIL
        done = list(pool.map(pack, plan))
    index = {
        "format": FORMAT,
        "image_size": image_size,
        "quality": quality,
        "shard_size": shard_size,
        "splits": {split: [] for split in splits},
        "reused": sum(r for _, _, r in done),
    }
    for split, entry, _ in done:
        index["splits"][split].append(entry)
    atomic_write_text(out_dir / INDEX, json.dumps(index) + "\n")
    return index


def verify_shards(folder):
    """Read every shard back: -> a list of problems, each naming the shard and member (empty when all is well).
    Checks the bytes against the index, every listed bin present exactly once with its label, every image decodes."""
    folder = Path(folder)
    index = read_index(folder)
    problems = []
    for entries in index["splits"].values():
        for entry in entries:
            path = folder / entry["file"]
            if not path.exists():
                problems.append(f"{path}: missing")
                continue
            if sha256_of(path) != entry["sha256"]:
                problems.append(f"{path}: sha256 differs from {INDEX}")
            seen = {}
            try:
                with tarfile.open(path, "r") as tar:
                    for member in tar:
                        data = tar.extractfile(member).read()
                        bin_id, ext = member.name.rsplit(".", 1)
                        if ext == "jpg":
                            try:
                                Image.open(io.BytesIO(data)).load()
                            except OSError as exc:
                                problems.append(f"{path}: member {member.name} does not decode ({exc})")
                        elif ext == "json":
                            seen[bin_id] = json.loads(data)["label"]
            except (tarfile.TarError, OSError, ValueError) as exc:
                problems.append(f"{path}: unreadable ({exc})")
                continue
            expected = dict(zip(entry["ids"], entry["labels"]))
            if seen != expected:
                gone = sorted(set(expected) - set(seen))
                problems.append(f"{path}: bins differ from {INDEX} (missing: {gone[:5]})")
    return problems
