"""Where fetch puts the bins: one file a bin (`fetch.layout: files`) against raw tar shards
(`fetch.layout: shards`), side by side in one run. Adds its table to docs/scale.md.

    python -m bench.fetch_layout --source ../abid/dev --bins 10000

The same bins (copies of `--source`'s, each made unique, or generated) sit in a local S3 server on
loopback (moto). Each layout runs binsight's own fetch of all of them, then `dvc add`, `dvc status`,
`dvc push` to an S3 remote on the same server, and `dvc pull` into an empty cache, of data/raw. The
two layouts take turns: per-file first, then shards.
"""

import argparse
import datetime
import os
import tempfile
from pathlib import Path

from bench.pages import short_commit, write_block
from bench.scale import dvc_cycle, source_bins, timed, upload
from binsight.data.download import Downloader
from binsight.data.raw_shards import fetch_into_shards
from binsight.data.s3_client import make_client
from tests.support.s3server import MotoS3

REPO = Path(__file__).resolve().parents[1]

BEGIN, END = "<!-- begin bench/fetch_layout.py -->", "<!-- end bench/fetch_layout.py -->"
STEPS = ("fetch", "dvc add", "dvc status", "dvc push", "dvc pull")


def fetch(layout, url, raw, counts, shard_size):
    client = make_client(endpoint_url=url, max_connections=32)
    downloader = Downloader(client, "abid", "", raw)
    if layout == "files":
        records = downloader.fetch_all(counts, 32, progress=False)
    else:
        records = fetch_into_shards(downloader, counts, shard_size, 32)
    bad = [r for r in records if not r.ok]
    if bad:
        raise SystemExit(f"fetch_layout: {len(bad)} bins did not fetch, e.g. {bad[0]}")


def files_in(folder):
    return sum(1 for p in Path(folder).rglob("*") if p.is_file())


def table(results, n, args, commit):
    source = f"--source {Path(args.source).name} " if args.source else ""
    scale = 535_000 / n
    lines = [
        "## Fetch: one file a bin against raw shards",
        "",
        f"Measured {datetime.date.today()} at commit {commit}, {os.cpu_count()} CPU cores, a local S3 server (moto) "
        f"on loopback, with `python -m bench.fetch_layout {source}--bins {n}`: binsight's fetch of the same "
        f"{n} bins into data/raw, then DVC on data/raw (raw shards of {args.shard_size} bins).",
        "",
        "| fetch.layout | files DVC tracks | " + " | ".join(STEPS) + " |",
        "|---|---|" + "---|" * len(STEPS),
    ]
    for layout, t in results.items():
        lines.append(f"| {layout} | {t['files']} | " + " | ".join(f"{t[s]:.1f} s" for s in STEPS) + " |")
    for layout, t in results.items():
        lines.append(
            f"| {layout}, x{scale:.1f} to 535,000 bins (linear) | {round(t['files'] * scale)} | "
            + " | ".join(f"~{t[s] * scale / 60:.0f} min" for s in STEPS)
            + " |"
        )
    ratio = ", ".join(f"{s} {results['files'][s] / results['shards'][s]:.2f}x" for s in STEPS)
    lines += ["", f"files / shards, time: {ratio}.", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=None, help="a local copy of the bucket to copy bins from")
    parser.add_argument("--bins", type=int, default=10_000)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--out", default=str(REPO / "docs" / "scale.md"))
    args = parser.parse_args()
    commit = short_commit(REPO)
    root = Path(tempfile.mkdtemp(prefix="binsight-fetch-layout-"))
    bins = source_bins(args.source, args.bins)
    counts = {i: c for i, (c, _, _) in bins.items()}
    results = {}
    with MotoS3() as s3:
        print(f"fetch_layout: uploading {len(bins)} bins to the local S3 server", flush=True)
        upload(s3.url, "abid", bins)
        del bins
        for layout in ("files", "shards"):
            project = root / layout
            raw = project / "data" / "raw"
            t = {"fetch": timed(lambda layout=layout, raw=raw: fetch(layout, s3.url, raw, counts, args.shard_size))}
            t["files"] = files_in(raw)
            t.update(dvc_cycle(project, "data/raw", s3.url, f"remote-{layout}"))
            results[layout] = t
            print(f"fetch_layout: {layout} {t}", flush=True)
    text = table(results, len(counts), args, commit)
    write_block(Path(args.out), text, BEGIN, END, at_end=True)
    print(text)


if __name__ == "__main__":
    main()
