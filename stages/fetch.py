"""Stage `fetch`: download the bins named by file_list.json from S3 (or copy them from a local copy of
the bucket, `fetch.local_dir`), verify them, write a manifest.

    python -m stages.fetch            # what `dvc repro fetch` runs

Outputs: data/raw/images/<id>.jpg, data/raw/metadata/<id>.json, data/raw/manifest.csv and
data/fetch_report.json (every bin that was missing, corrupt or mislabelled, and why). With
`fetch.layout: shards` the images and metadata go into data/raw/images/raw-NNNNN.tar instead
(binsight/data/raw_shards.py): a few hundred files for DVC to track, not two a bin.
"""

import argparse
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from binsight.data.abid_format import limit_per_class, parse_file_list_bytes
from binsight.data.class_policy import label_for
from binsight.data.download import MANIFEST_COLUMNS, Downloader, build_report, local_folder, manifest_rows
from binsight.data.raw_shards import fetch_into_shards, unshard_all
from binsight.data.s3_client import make_client
from binsight.errors import BinsightError, DataError, one_line_errors
from binsight.params import check_classes, fetch_section, load_params
from binsight.tables import write_csv, write_json


def read_file_list(source):
    """The subset list from a URL or a local path -> {bin_id: label}."""
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=30) as resp:
                data = resp.read()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BinsightError(
                f"cannot download the subset list {source} ({reason}); offline? "
                "save a copy and set fetch.file_list to its path"
            ) from None
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(
                f"fetch.file_list: {source} is not a file; build a list of a whole bucket with "
                f"`binsight list s3://aft-vbi-pds/ --out {source}`"
            )
        data = path.read_bytes()
    return parse_file_list_bytes(data)


def summary_line(report, moved, report_path):
    """fetch: 290 ok, 5 bad (corrupt_image: 2, missing_image: 3), 580 objects downloaded; report in ..."""
    reasons = ", ".join(f"{reason}: {n}" for reason, n in report["bad_reasons"].items())
    bad = f"{report['bad']} bad" + (f" ({reasons})" if reasons else "")
    return f"fetch: {report['ok']} ok, {bad}, {report['downloaded_objects']} objects {moved}; report in {report_path}"


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--out", default="data/raw", help="output folder (default: %(default)s)")
    parser.add_argument("--report", default="data/fetch_report.json", help="bad-bin report (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    p, classes = fetch_section(params), check_classes(params.get("classes"))
    listed = read_file_list(p.file_list)
    # Only the bins the class policy admits: a list of the whole bucket under `subset` fetches 1-5 only.
    counts = {i: c for i, c in listed.items() if label_for(c, classes.policy, classes.clip_at) is not None}
    if len(counts) < len(listed):
        print(f"fetch: {len(listed) - len(counts)} listed bins left out by classes.policy={classes.policy}")
    labels = limit_per_class(counts, p.limit_per_class)
    folder = local_folder(p.local_dir)
    client = None if folder else make_client(p.region, p.endpoint_url, p.anonymous, p.concurrency, p.retries)
    downloader = Downloader(client, p.bucket, p.prefix, args.out, attempts=p.retries, folder=folder)
    where = (
        f"the local copy {folder}/{p.prefix}" if folder else f"s3://{p.bucket}/{p.prefix} ({p.endpoint_url or 'AWS'})"
    )
    print(f"fetch: {len(labels)} bins from {where}, {p.concurrency} at a time")
    if p.layout == "shards":
        with tqdm(total=len(labels), desc="fetch", unit="bin", disable=True if args.no_progress else None) as bar:
            records = fetch_into_shards(downloader, labels, p.shard_size, p.concurrency, bar)
    else:
        moved = unshard_all(downloader.images_dir, downloader.metadata_dir, labels)
        if moved:
            print(f"fetch: {moved} bins taken out of the raw shards (fetch.layout: files)")
        records = downloader.fetch_all(labels, p.concurrency, progress=not args.no_progress)

    write_csv(Path(args.out) / "manifest.csv", manifest_rows(records), MANIFEST_COLUMNS)
    report = build_report(records, p.max_bad_fraction, p.file_list)
    write_json(args.report, report)
    print(summary_line(report, "copied" if folder else "downloaded", args.report))
    if report["bad_fraction"] > p.max_bad_fraction:
        raise DataError(
            f"{report['bad']} of {report['requested']} bins ({report['bad_fraction']:.1%}) are bad, "
            f"more than fetch.max_bad_fraction={p.max_bad_fraction:g}; see {args.report}"
        )


if __name__ == "__main__":
    main()
