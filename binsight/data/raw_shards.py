"""Fetch straight into raw tar shards (`fetch.layout: shards`), resumable bin by bin.

The bins are taken in id order, `shard_size` at a time. Each group is fetched with the per-bin
Downloader into data/raw/images and data/raw/metadata (verified, temp name, rename: a killed run
keeps every bin it finished), then packed into data/raw/images/raw-NNNNN.tar with the bucket's bytes
unchanged, recorded in raw-index.json, and its per-bin files deleted. A rerun keeps every shard that
holds the bins and labels its group asks for, retries only the bins that were bad, and takes bins
back out of shards that no longer fit the list (a changed list) instead of downloading them again.
"""

import json
import tarfile
from dataclasses import asdict
from pathlib import Path

from binsight.data.download import BinRecord
from binsight.data.raw_bins import RAW_FORMAT, RAW_INDEX, read_raw_index
from binsight.data.training_shards import add_member
from binsight.files import atomic_path, atomic_write_text, remove_partial_files

RECORD_FIELDS = ("width", "height", "bytes", "sha256")


def shard_groups(ids, shard_size):
    """Sorted ids -> [(raw shard file name, ids)], `shard_size` a shard."""
    ids = sorted(ids)
    return [(f"raw-{i // shard_size:05d}.tar", ids[i : i + shard_size]) for i in range(0, len(ids), shard_size)]


def pack(path, records, images_dir, metadata_dir):
    """Pack the good bins of `records` (their files in images_dir / metadata_dir) into the tar at `path`;
    -> {id: {"image": (offset, size), "metadata": (offset, size), "label", width, height, bytes, sha256}}."""
    with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for r in records:
            add_member(tar, f"{r.id}.jpg", (Path(images_dir) / f"{r.id}.jpg").read_bytes())
            add_member(tar, f"{r.id}.json", (Path(metadata_dir) / f"{r.id}.json").read_bytes())
    # The offsets come from reading the headers back: what a reader will find, whatever tarfile wrote.
    with tarfile.open(path) as tar:
        spans = {m.name: (m.offset_data, m.size) for m in tar.getmembers()}
    return {
        r.id: {
            "image": spans[f"{r.id}.jpg"],
            "metadata": spans[f"{r.id}.json"],
            "label": r.label,
            **{k: getattr(r, k) for k in RECORD_FIELDS},
        }
        for r in records
    }


def unpack(path, entry, wanted, images_dir, metadata_dir):
    """Write the bins of a raw shard that are still `wanted` back as per-bin files (fetch verifies them again)."""
    if not Path(path).exists():
        return 0
    n = 0
    with open(path, "rb") as f:
        for bin_id, spans in entry["bins"].items():
            if bin_id not in wanted:
                continue
            for (offset, size), out in (
                (spans["image"], Path(images_dir) / f"{bin_id}.jpg"),
                (spans["metadata"], Path(metadata_dir) / f"{bin_id}.json"),
            ):
                f.seek(offset)
                out.write_bytes(f.read(size))
            n += 1
    return n


def _save(images_dir, shards):
    atomic_write_text(Path(images_dir) / RAW_INDEX, json.dumps({"format": RAW_FORMAT, "shards": shards}))


def _fits(path, entry, ids, labels):
    return (
        entry["ids"] == ids
        and entry["labels"] == [labels[i] for i in ids]
        and path.exists()
        and path.stat().st_size == entry["size"]
    )


def _records(entry, retried):
    bins = entry["bins"].items()
    return [BinRecord(id=i, label=b["label"], ok=True, **{k: b[k] for k in RECORD_FIELDS}) for i, b in bins] + retried


def unshard_all(images_dir, metadata_dir, wanted):
    """Back to one file a bin (`fetch.layout: files` after `shards`): unpack what is wanted, drop the shards."""
    index = read_raw_index(images_dir)
    if index is None:
        return 0
    n = 0
    for name, entry in index["shards"].items():
        n += unpack(Path(images_dir) / name, entry, wanted, images_dir, metadata_dir)
    for name in index["shards"]:
        (Path(images_dir) / name).unlink(missing_ok=True)
    (Path(images_dir) / RAW_INDEX).unlink()
    return n


def fetch_into_shards(downloader, labels, shard_size, concurrency, bar=None):
    """Fetch every {bin_id: label} into raw shards; -> BinRecords sorted by id (the bad ones too)."""
    images_dir, metadata_dir = downloader.images_dir, downloader.metadata_dir
    for folder in (images_dir, metadata_dir):
        folder.mkdir(parents=True, exist_ok=True)
        remove_partial_files(folder)
    groups = shard_groups(labels, shard_size)
    planned = dict(groups)
    shards = (read_raw_index(images_dir) or {"shards": {}})["shards"]
    # Shards that no longer fit the plan give their bins back as files first: nothing is downloaded twice.
    for name, entry in list(shards.items()):
        path = images_dir / name
        if name not in planned or not _fits(path, entry, planned[name], labels):
            unpack(path, entry, labels, images_dir, metadata_dir)
            path.unlink(missing_ok=True)
            del shards[name]
            _save(images_dir, shards)
    for stray in images_dir.glob("raw-*.tar"):
        if stray.name not in shards:
            stray.unlink()
    records = []
    for name, ids in groups:
        entry = shards.get(name)
        if entry is not None:
            bad = {b["id"]: b["label"] for b in entry["bad"]}
            retried = downloader.fetch_all(bad, concurrency, progress=bar is not None, bar=bar) if bad else []
            if bar is not None:
                bar.update(len(ids) - len(bad))
            if not any(r.ok for r in retried):
                entry["bad"] = [_bad_row(r) for r in retried]
                records += _records(entry, retried)
                continue
            unpack(images_dir / name, entry, labels, images_dir, metadata_dir)  # a retried bin came good: repack
            if bar is not None:
                bar.update(-len(ids))
        fetched = downloader.fetch_all({i: labels[i] for i in ids}, concurrency, progress=bar is not None, bar=bar)
        good = [r for r in fetched if r.ok]
        bins = pack(images_dir / name, good, images_dir, metadata_dir)
        shards[name] = {
            "ids": ids,
            "labels": [labels[i] for i in ids],
            "size": (images_dir / name).stat().st_size,
            "bins": bins,
            "bad": [_bad_row(r) for r in fetched if not r.ok],
        }
        _save(images_dir, shards)
        for r in good:  # only once the shard and its index entry are on disk
            (images_dir / f"{r.id}.jpg").unlink(missing_ok=True)
            (metadata_dir / f"{r.id}.json").unlink(missing_ok=True)
        records += fetched
    _save(images_dir, shards)
    # Files of bins no longer listed (or left bad) must not stay in the output beside the shards.
    for folder, suffix in ((images_dir, ".jpg"), (metadata_dir, ".json")):
        for leftover in folder.glob(f"*{suffix}"):
            leftover.unlink()
    return sorted(records, key=lambda r: r.id)


def _bad_row(r):
    return {k: v for k, v in asdict(r).items() if k in ("id", "label", "reason", "detail")}
