"""`binsight list`: build a file list (file_list.json's format) from a bucket, a prefix or a local copy
by reading every bin's metadata.

    binsight list s3://aft-vbi-pds/ --out abid/all_bins.json          # all of ABID (~535k bins)
    binsight list /data/abid-copy --out lists/copy.json               # a local copy (`aws s3 sync`)
    binsight list s3://my-bucket/abid/ --endpoint-url http://127.0.0.1:9000 --out lists/mine.json

Every metadata object is read in parallel and its EXPECTED_QUANTITY checked; a bin is listed under
its count only when that is a usable count and its image exists. The others are skipped and counted,
by reason, in the report (default: OUT with .report.json): missing_quantity, null_quantity,
bad_quantity, unreadable_metadata, missing_metadata, missing_image. A killed run resumes: what was read
is kept in OUT.partial.jsonl, one line per bin, and a rerun reads only the rest. The list keeps every
count; params.yaml's `classes.policy` decides which of them a run trains on.
"""

import argparse
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from binsight.data.abid_format import IMAGE_DIR, METADATA_DIR, expected_quantity, file_list_object, metadata_key
from binsight.errors import BinsightError, ConfigError, one_line_errors
from binsight.files import atomic_write_text

SKIP_REASONS = (
    "missing_quantity",
    "null_quantity",
    "bad_quantity",
    "unreadable_metadata",
    "missing_metadata",
    "missing_image",
)


def parse_source(source):
    """'s3://bucket/prefix' -> ("s3", bucket, "prefix/"); a folder or file:// URL -> ("folder", path, "")."""
    parsed = urlparse(source)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"{source}: an S3 source is s3://BUCKET/ or s3://BUCKET/PREFIX/")
        prefix = parsed.path.lstrip("/")
        return "s3", parsed.netloc, prefix if not prefix or prefix.endswith("/") else prefix + "/"
    if parsed.scheme == "file":
        return "folder", Path(unquote(parsed.path)), ""
    if parsed.scheme and len(parsed.scheme) > 1:
        raise ConfigError(f"{source}: expected s3://BUCKET/PREFIX/, a folder or a file:// URL")
    return "folder", Path(source), ""


def ids_under(names, suffix):
    """Object names -> the set of bin ids of those ending in `suffix` (other files are ignored)."""
    return {PurePosixPath(n).stem for n in names if n.endswith(suffix)}


class Source:
    """The bins of a bucket prefix or a local folder: list ids, read one metadata object."""

    def __init__(self, source, endpoint_url=None, anonymous=True, concurrency=64, retries=5):
        from binsight.data.download import Downloader
        from binsight.data.s3_client import make_client

        self.kind, where, self.prefix = parse_source(source)
        if self.kind == "folder":
            if not (where / METADATA_DIR).is_dir():
                raise ConfigError(
                    f"{where} has no {METADATA_DIR}/ folder: give the folder that holds bin-images/ and metadata/"
                )
            self.client, self.bucket, self.folder = None, None, where
        else:
            self.client = make_client(
                endpoint_url=endpoint_url, anonymous=anonymous, max_connections=concurrency, retries=retries
            )
            self.bucket, self.folder = where, None
        self.reader = Downloader(self.client, self.bucket, self.prefix, ".", attempts=retries, folder=self.folder)
        self.where = f"{where}/" if self.kind == "folder" else f"s3://{where}/{self.prefix}"

    def ids(self, directory, suffix):
        if self.folder is not None:
            with os.scandir(self.folder / directory) as entries:
                return ids_under((e.name for e in entries), suffix)
        from botocore.exceptions import ClientError, EndpointConnectionError

        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}{directory}/"
        )
        names = []
        try:
            with tqdm(desc=f"list {directory}/", unit="key", disable=None) as bar:
                for page in pages:
                    keys = [o["Key"] for o in page.get("Contents", ())]
                    names += keys
                    bar.update(len(keys))
        except EndpointConnectionError as exc:
            raise BinsightError(f"cannot reach S3 ({exc}); offline? give a local copy of the bucket instead") from None
        except ClientError as exc:
            raise ConfigError(f"cannot list {self.where}: {exc.response.get('Error', {}).get('Code', exc)}") from None
        return ids_under(names, suffix)

    def quantity(self, bin_id):
        """-> {"id", "count"} or {"id", "skip", "detail"}."""
        from binsight.data.download import MissingObject

        try:
            data = self.reader.get(metadata_key(self.prefix, bin_id))
        except MissingObject as exc:
            return {"id": bin_id, "skip": "missing_metadata", "detail": f"no object {exc}"}
        count, why = expected_quantity(data)
        if why is not None:
            return {"id": bin_id, "skip": why[0], "detail": why[1]}
        return {"id": bin_id, "count": count}


def read_partial(path):
    """The lines a killed run wrote -> {id: record}; a line cut off by the kill is dropped."""
    done = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            done[rec["id"]] = rec
        except (ValueError, KeyError, TypeError):
            continue
    return done


def summarize(records, source, examples=1000):
    """Every bin's record -> (counts {id: count}, report dict)."""
    counts = {r["id"]: r["count"] for r in records if "count" in r}
    skipped = sorted((r for r in records if "skip" in r), key=lambda r: r["id"])
    per_count = {}
    for c in counts.values():
        per_count[c] = per_count.get(c, 0) + 1
    reasons = {}
    for r in skipped:
        reasons[r["skip"]] = reasons.get(r["skip"], 0) + 1
    report = {
        "source": source,
        "bins_seen": len(records),
        "listed": len(counts),
        "skipped": len(skipped),
        "skipped_reasons": dict(sorted(reasons.items())),
        "bins_per_count": {str(c): per_count[c] for c in sorted(per_count)},
        "skipped_bins": [{"id": r["id"], "reason": r["skip"], "detail": r["detail"]} for r in skipped[:examples]],
    }
    return counts, report


def build_list(source, out, report_path=None, concurrency=64, endpoint_url=None, anonymous=True, progress=True):
    """Read every bin of `source`, write the list to `out` and the report beside it; -> the report."""
    out = Path(out)
    report_path = Path(report_path) if report_path else out.with_suffix(".report.json")
    partial = out.with_name(out.name + ".partial.jsonl")
    src = Source(source, endpoint_url, anonymous, concurrency)
    metadata_ids = src.ids(METADATA_DIR, ".json")
    image_ids = src.ids(IMAGE_DIR, ".jpg")
    done = read_partial(partial)
    todo = sorted(metadata_ids - set(done))
    print(f"list: {len(metadata_ids)} metadata objects in {src.where}; {len(done)} read before, {len(todo)} to read")
    out.parent.mkdir(parents=True, exist_ok=True)
    if todo:
        src.quantity(todo[0])  # fail fast on a bad bucket or endpoint, before the threads start
    with open(partial, "a") as log, ThreadPoolExecutor(concurrency, thread_name_prefix="list") as pool:
        bar = tqdm(total=len(metadata_ids), initial=len(done), desc="list", unit="bin", disable=not progress)
        for rec in pool.map(src.quantity, todo):
            log.write(json.dumps(rec) + "\n")
            done[rec["id"]] = rec
            bar.update(1)
        bar.close()
    records = [done[i] for i in sorted(metadata_ids)]
    for rec in records:
        if "count" in rec and rec["id"] not in image_ids:
            rec.update({"skip": "missing_image", "detail": "no bin-images/<id>.jpg"})
            del rec["count"]
    counts, report = summarize(records, src.where)
    atomic_write_text(out, json.dumps(file_list_object(counts), indent=1) + "\n")
    atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    partial.unlink(missing_ok=True)
    reasons = ", ".join(f"{k}: {v}" for k, v in report["skipped_reasons"].items())
    per_count = ", ".join(f"{c}: {n}" for c, n in report["bins_per_count"].items())
    print(
        f"list: {report['listed']} bins listed in {out} ({per_count}); "
        f"{report['skipped']} skipped{f' ({reasons})' if reasons else ''}; report in {report_path}"
    )
    return report


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="binsight list", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "source", help="s3://BUCKET/PREFIX/, a folder or a file:// URL holding metadata/ and bin-images/"
    )
    parser.add_argument("--out", required=True, help="the list to write, e.g. abid/all_bins.json")
    parser.add_argument("--report", default=None, help="skipped-bin report (default: OUT with .report.json)")
    parser.add_argument("--concurrency", type=int, default=64, help="parallel reads (default: %(default)s)")
    parser.add_argument(
        "--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"), help="an S3-compatible server (MinIO, moto)"
    )
    parser.add_argument(
        "--signed", action="store_true", help="sign requests with your AWS credentials (a private bucket)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= 512:
        parser.error("--concurrency must be from 1 to 512")
    build_list(
        args.source,
        args.out,
        args.report,
        args.concurrency,
        args.endpoint_url,
        anonymous=not args.signed,
        progress=not args.no_progress,
    )


if __name__ == "__main__":
    main()
