"""Benchmark: the parallel verified fetch vs. the notebook's one-at-a-time boto3 loop.

Both download the same bins (image + metadata) from a local S3 server (moto) behind a proxy that
adds a fixed delay to every request, standing in for the round trip to the real bucket. Prints
both wall times and their ratio, measured side by side in this one run.

    python -m bench.fetch [--bins 200] [--delay 0.03] [--concurrency 32]
"""

import argparse
import tempfile
import time
from pathlib import Path

from binsight.data.abid_format import image_key, metadata_key
from binsight.data.download import Downloader
from binsight.data.s3_client import make_client
from tests.support.bucket import admin_client, put
from tests.support.s3server import MotoS3, S3Proxy
from tests.support.synthetic import make_bins


def notebook_loop(url, bucket, labels, out):
    """What the SageMaker notebook did: one download_file call after another."""
    client = make_client(endpoint_url=url, max_connections=1)
    for bin_id in sorted(labels):
        client.download_file(bucket, image_key("", bin_id), str(out / f"{bin_id}.jpg"))
        client.download_file(bucket, metadata_key("", bin_id), str(out / f"{bin_id}.json"))


def parallel_fetch(url, bucket, labels, out, concurrency):
    client = make_client(endpoint_url=url, max_connections=concurrency)
    records = Downloader(client, bucket, "", out).fetch_all(labels, concurrency, progress=False)
    assert all(r.ok for r in records), [r for r in records if not r.ok][:3]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bins", type=int, default=200, help="bins to fetch (default: %(default)s)")
    parser.add_argument(
        "--delay", type=float, default=0.03, help="seconds added to each request (default: %(default)s)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="parallel downloads (default: %(default)s)")
    args = parser.parse_args()

    bins = make_bins(max(1, args.bins // 5), seed=3)
    labels = {i: label for i, (label, _, _) in bins.items()}
    with MotoS3() as s3, tempfile.TemporaryDirectory() as tmp:
        client = admin_client(s3.url)
        client.create_bucket(Bucket="bench")
        for bin_id, (_, jpeg, meta) in bins.items():
            put(client, "bench", image_key("", bin_id), jpeg)
            put(client, "bench", metadata_key("", bin_id), meta)
        with S3Proxy(s3.url, delay=args.delay) as proxy:
            t0 = time.perf_counter()
            (Path(tmp) / "loop").mkdir()
            notebook_loop(proxy.url, "bench", labels, Path(tmp) / "loop")
            t_loop = time.perf_counter() - t0
            t0 = time.perf_counter()
            parallel_fetch(proxy.url, "bench", labels, Path(tmp) / "parallel", args.concurrency)
            t_par = time.perf_counter() - t0
    n = len(labels)
    print(f"{n} bins ({2 * n} objects), {args.delay * 1000:.0f} ms added per request")
    print(f"  one-at-a-time boto3 loop : {t_loop:7.2f} s  ({n / t_loop:7.1f} bins/s)")
    print(
        f"  parallel verified fetch  : {t_par:7.2f} s  ({n / t_par:7.1f} bins/s, concurrency {args.concurrency}, "
        f"every JPEG decoded and checked)"
    )
    print(f"  speed-up                 : {t_loop / t_par:7.1f}x")


if __name__ == "__main__":
    main()
