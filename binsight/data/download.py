"""Parallel, resumable, verified download of ABID bins (image + metadata) from S3 or a local copy.

A bin is kept only when its JPEG decodes, its metadata parses and EXPECTED_QUANTITY equals the
label of the subset list. Files land under their final names only after they verified (temp name,
fsync, rename), so a killed run leaves nothing half-written and a rerun fetches only what is
missing or broken.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from tqdm import tqdm

from binsight.data.abid_format import image_key, metadata_key, parse_metadata
from binsight.data.image_decode import verify_jpeg
from binsight.errors import BinsightError, ConfigError, DataError
from binsight.files import atomic_write_bytes, remove_partial_files

STREAM_ERRORS = (ResponseStreamingError, ReadTimeoutError, IncompleteReadError, ConnectionClosedError)
FATAL_CODES = {"NoSuchBucket", "InvalidBucketName", "PermanentRedirect"}


@dataclass
class BinRecord:
    id: str
    label: int
    ok: bool = False
    width: int = 0
    height: int = 0
    bytes: int = 0
    sha256: str = ""
    reason: str = ""
    detail: str = ""
    downloaded: int = 0  # objects fetched from S3 for this bin in this run (0 when reused)


class MissingObject(Exception):
    pass


def local_folder(location):
    """A local copy's folder from a path or a file:// URL (None stays None)."""
    if location is None:
        return None
    parsed = urlparse(str(location))
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        raise ConfigError(f"fetch.local_dir={location!r} is not a folder path or file:// URL")
    return Path(location)


class FolderObjects:
    """A local copy of the bucket (`aws s3 sync`, a mounted disk) read like S3: same keys, same
    errors for a missing object, no network."""

    def __init__(self, folder):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ConfigError(
                f"fetch.local_dir: {self.folder} is not a folder; it must hold bin-images/ "
                "and metadata/ as in the bucket (e.g. from `aws s3 sync s3://aft-vbi-pds DIR`)"
            )

    def get(self, key):
        try:
            return (self.folder / key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise MissingObject(f"{self.folder / key}") from None

    def describe(self):
        return f"local copy {self.folder}"


class Downloader:
    """Bins from S3 (`client` + `bucket`) or, with `folder`, from a local copy of the bucket."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        out_dir: str | Path,
        attempts: int = 5,
        folder: str | Path | None = None,
    ) -> None:
        self.client, self.bucket, self.prefix, self.attempts = client, bucket, prefix, attempts
        self.folder = FolderObjects(folder) if folder is not None else None
        self.images_dir = Path(out_dir) / "images"
        self.metadata_dir = Path(out_dir) / "metadata"

    def get(self, key):
        if self.folder is not None:
            return self.folder.get(key)
        return self.get_s3(key)

    def get_s3(self, key):
        """GET an object's bytes. botocore retries the request; this loop retries a body that
        breaks off mid-stream, which botocore does not."""
        for attempt in range(self.attempts):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in ("NoSuchKey", "404", "NotFound"):
                    raise MissingObject(key) from None
                if code in FATAL_CODES:
                    raise ConfigError(
                        f"bucket {self.bucket!r}: {code}; check fetch.bucket and fetch.endpoint_url"
                    ) from None
                raise
            except EndpointConnectionError as exc:
                raise BinsightError(
                    f"cannot reach S3 ({exc}); offline? check fetch.endpoint_url, or fetch from a "
                    "local copy of the bucket: -S fetch.local_dir=/path/to/copy"
                ) from None
            except STREAM_ERRORS:
                if attempt == self.attempts - 1:
                    raise
                time.sleep(random.uniform(0, min(5.0, 0.1 * 2**attempt)))

    def local_or_download(self, path, key, check):
        """Bytes of `path` when present and passing `check`; otherwise download, check, save."""
        if path.exists():
            data = path.read_bytes()
            try:
                check(data)
                return data, 0
            except DataError:
                pass  # broken local copy: fetch it again
        data = self.get(key)
        check(data)  # raises DataError before anything is written
        atomic_write_bytes(path, data)
        return data, 1

    def fetch_part(self, rec, path, key, check, missing, unreadable):
        """One object of a bin, local or downloaded -> its bytes, or None with `rec` marked bad."""
        try:
            data, n = self.local_or_download(path, key, check)
        except MissingObject as exc:
            self._bad(rec, missing, f"no object {exc}")
            return None
        except DataError as exc:
            self._bad(rec, unreadable, str(exc))
            return None
        rec.downloaded += n
        return data

    def fetch_bin(self, bin_id, label):
        rec = BinRecord(id=bin_id, label=label)
        meta = self.fetch_part(
            rec,
            self.metadata_dir / f"{bin_id}.json",
            metadata_key(self.prefix, bin_id),
            parse_metadata,
            "missing_metadata",
            "unreadable_metadata",
        )
        if meta is None:
            return rec
        image = self.fetch_part(
            rec,
            self.images_dir / f"{bin_id}.jpg",
            image_key(self.prefix, bin_id),
            verify_jpeg,
            "missing_image",
            "corrupt_image",
        )
        if image is None:
            return rec
        rec.width, rec.height = verify_jpeg(image)
        rec.bytes, rec.sha256 = len(image), hashlib.sha256(image).hexdigest()
        quantity = parse_metadata(meta).expected_quantity
        if quantity != label:
            return self._bad(rec, "label_mismatch", f"EXPECTED_QUANTITY is {quantity}, file_list says {label}")
        rec.ok = True
        return rec

    @staticmethod
    def _bad(rec, reason, detail):
        rec.reason, rec.detail = reason, detail
        return rec

    def fetch_all(
        self, labels: Mapping[str, int], concurrency: int = 32, progress: bool = True, bar: Any = None
    ) -> list[BinRecord]:
        """Fetch every {bin_id: label}; return BinRecords sorted by id. `bar`: a progress bar of the
        caller's to advance (and leave open) instead of one of its own."""
        for folder in (self.images_dir, self.metadata_dir):
            folder.mkdir(parents=True, exist_ok=True)
            remove_partial_files(folder)
        ids = sorted(labels)
        if not ids:
            return []
        records = [self._fetch_or_error(ids[0], labels[ids[0]])]  # fail fast on a bad bucket/endpoint
        own_bar = bar is None
        if own_bar:
            bar = tqdm(total=len(ids), desc="fetch", unit="bin", disable=not progress, smoothing=0.05)
        bar.update(1)
        bad = sum(not r.ok for r in records)
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fetch")
        try:
            futures = [pool.submit(self._fetch_or_error, i, labels[i]) for i in ids[1:]]
            for fut in as_completed(futures):
                rec = fut.result()
                records.append(rec)
                bad += not rec.ok
                bar.update(1)
                bar.set_postfix(bad=bad, refresh=False)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if own_bar:
                bar.close()
        return sorted(records, key=lambda r: r.id)

    def _fetch_or_error(self, bin_id, label):
        try:
            return self.fetch_bin(bin_id, label)
        except BinsightError:
            raise
        except Exception as exc:  # retries exhausted: record it, keep going, report at the end
            return self._bad(BinRecord(id=bin_id, label=label), "download_error", f"{type(exc).__name__}: {exc}")


MANIFEST_COLUMNS = ("id", "label", "width", "height", "bytes", "sha256")


def manifest_rows(records):
    return [{k: getattr(r, k) for k in MANIFEST_COLUMNS} for r in records if r.ok]


def build_report(records, max_bad_fraction, source):
    bad = [r for r in records if not r.ok]
    reasons, per_class = {}, {}
    for r in records:
        if r.ok:
            per_class[str(r.label)] = per_class.get(str(r.label), 0) + 1
        else:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
    return {
        "source": source,
        "requested": len(records),
        "ok": len(records) - len(bad),
        "bad": len(bad),
        "bad_fraction": len(bad) / len(records) if records else 0.0,
        "max_bad_fraction": max_bad_fraction,
        "downloaded_objects": sum(r.downloaded for r in records),
        "ok_per_class": dict(sorted(per_class.items())),
        "bad_reasons": dict(sorted(reasons.items())),
        "bad_bins": [{k: v for k, v in asdict(r).items() if k in ("id", "label", "reason", "detail")} for r in bad],
    }
