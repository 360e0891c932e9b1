"""The fetched bins, in either layout `fetch.layout` writes, read through one interface.

    files   data/raw/images/<id>.jpg and data/raw/metadata/<id>.json: two files a bin (the subset's layout)
    shards  data/raw/images/raw-NNNNN.tar (the bucket's own JPEG and metadata bytes, unchanged, as
            <id>.jpg + <id>.json: webdataset's layout) and data/raw/images/raw-index.json, which says
            where each bin's bytes sit; data/raw/metadata stays empty

With all of ABID, the first layout is ~1.07M files that DVC hashes, caches and checks out one by one;
the second is ~535 tar files. Every reader of the fetched bins (split checks, the shard stage, train and
evaluate on `train.data: files`, explore, the metadata targets) goes through `RawBins`, so both layouts
feed the same pipeline.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path

from binsight.errors import DataError

RAW_INDEX = "raw-index.json"
RAW_FORMAT = "binsight-raw-shards"


def read_raw_index(images_dir):
    """The raw shard index of `images_dir`, or None when the bins are one file each."""
    path = Path(images_dir) / RAW_INDEX
    if not path.exists():
        return None
    try:
        index = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}): run `dvc repro fetch` again") from None
    if index.get("format") != RAW_FORMAT:
        raise DataError(f"{path}: format {index.get('format')!r}, expected {RAW_FORMAT!r}; run `dvc repro fetch`")
    return index


class RawBins:
    """Each fetched bin's image and metadata by id, from per-bin files or from raw tar shards."""

    def __init__(self, images_dir: str | Path, metadata_dir: str | Path | None = None) -> None:
        self.images_dir = Path(images_dir)
        self.metadata_dir = Path(metadata_dir) if metadata_dir is not None else None
        index = read_raw_index(self.images_dir)
        self.sharded = index is not None
        # id -> (tar file name, (offset, size) of the image, (offset, size) of the metadata)
        self.where = {
            bin_id: (name, spans["image"], spans["metadata"])
            for name, entry in (index or {}).get("shards", {}).items()
            for bin_id, spans in entry["bins"].items()
        }

    def __contains__(self, bin_id: object) -> bool:
        if self.sharded:
            return bin_id in self.where
        return (self.images_dir / f"{bin_id}.jpg").exists()

    def missing(self, ids: Iterable[str]) -> list[str]:
        return [i for i in ids if i not in self]

    def _read(self, bin_id, part):
        try:
            name, image, meta = self.where[bin_id]
        except KeyError:
            raise DataError(
                f"bin {bin_id} is not in {self.images_dir / RAW_INDEX}; run `dvc repro fetch` or `dvc pull`"
            ) from None
        offset, size = image if part == "image" else meta
        with open(self.images_dir / name, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise DataError(f"{self.images_dir / name} is cut short at bin {bin_id}; run `dvc repro fetch` again")
        return data

    def image(self, bin_id):
        """What `load_rgb` opens: the file's path, or the bytes from a raw shard as a file object."""
        if self.sharded:
            return io.BytesIO(self._read(bin_id, "image"))
        return self.images_dir / f"{bin_id}.jpg"

    def image_bytes(self, bin_id: str) -> bytes:
        if self.sharded:
            return self._read(bin_id, "image")
        return (self.images_dir / f"{bin_id}.jpg").read_bytes()

    def metadata_bytes(self, bin_id: str) -> bytes | None:
        """The bin's metadata JSON as fetched, or None when there is none."""
        if self.sharded:
            return self._read(bin_id, "metadata") if bin_id in self.where else None
        if self.metadata_dir is None:
            return None
        path = self.metadata_dir / f"{bin_id}.json"
        return path.read_bytes() if path.exists() else None
