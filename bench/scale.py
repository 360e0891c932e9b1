"""Scale: the per-file layout against tar shards at tens of thousands of bins, and each data path's
loader rate per CPU core, measured side by side in one run. Writes docs/scale.md.

    python -m bench.scale --source ../abid/dev --bins 50000

`--source`: a local copy of the bucket (bin-images/, metadata/) whose bins are copied, each made unique
(a JPEG comment and a metadata field carry its new id), until there are `--bins` of them; without it the
bins are generated. Everything runs against a local S3 server on loopback (moto): the bucket the bins are
fetched from and the DVC remote they are pushed to.

Rows, for each layout (same bins, same bytes of JPEG):
  fetch      per-file: binsight's parallel verified fetch of every bin (2 objects each);
             sharded: the same fetch, then the shard stage packs the bins (the `shard` column)
  dvc add / status / push / pull: in a git + DVC project with an S3 remote, the folder of files
             (per-file) or the shard folder (sharded); pull into an empty cache
Loader img/s per core: one process, one thread, decoding as each data path does.
"""

import argparse
import datetime
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.pages import short_commit, write_block
from binsight.data.download import Downloader
from binsight.data.image_datasets import BinImages, InMemoryBatches, InMemoryImages, eval_transform
from binsight.data.s3_client import make_client
from binsight.data.shard_stream import ShardBatches, ShardSet, ShardStream
from binsight.data.training_shards import pack_splits
from binsight.train.distributed import ShardSampler
from tests.support.bucket import admin_client
from tests.support.s3server import MotoS3
from tests.support.synthetic import make_bins

REPO = Path(__file__).resolve().parents[1]

SAMPLE = REPO / "tests" / "data" / "abid_sample"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
DVC = str(Path(sys.executable).with_name("dvc"))


def unique_jpeg(data, n):
    """The same picture, other bytes: a JPEG comment (COM segment) right after the SOI marker."""
    text = f"binsight copy {n}".encode()
    return data[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + data[2:]


def source_bins(source, n_bins):
    """-> {id: (count, jpeg, metadata bytes)}: copies of the source's bins made unique, or generated."""
    if source is None:
        per = -(-n_bins // 5)
        return dict(list(make_bins(per, seed=9).items())[:n_bins])
    source = Path(source)
    originals = sorted(p.stem for p in (source / "metadata").glob("*.json"))
    data = {
        i: (
            (source / "bin-images" / f"{i}.jpg").read_bytes(),
            json.loads((source / "metadata" / f"{i}.json").read_bytes()),
        )
        for i in originals
    }
    out = {}
    for n in range(n_bins):
        jpeg, meta = data[originals[n % len(originals)]]
        bin_id = f"{n:07d}"
        out[bin_id] = (
            meta["EXPECTED_QUANTITY"],
            unique_jpeg(jpeg, n),
            json.dumps({**meta, "BINSIGHT_COPY": bin_id}).encode(),
        )
    return out


def upload(url, bucket, bins, workers=32):
    from concurrent.futures import ThreadPoolExecutor

    client = admin_client(url)
    client.create_bucket(Bucket=bucket)

    def put(item):
        bin_id, (_, jpeg, meta) = item
        client.put_object(Bucket=bucket, Key=f"bin-images/{bin_id}.jpg", Body=jpeg, ACL="public-read")
        client.put_object(Bucket=bucket, Key=f"metadata/{bin_id}.json", Body=meta, ACL="public-read")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, bins.items()))


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sh(args, cwd, **env):
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, **CREDS, **env})
    if out.returncode:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}")
    return out.stdout


def dvc_cycle(project, target, url, bucket):
    """dvc add, status, push; then an empty cache and workspace, and pull. -> seconds of each."""
    sh(["git", "init", "-q"], project)
    sh([DVC, "init", "-q"], project)
    sh([DVC, "remote", "add", "-d", "store", f"s3://{bucket}/dvcstore"], project)
    sh([DVC, "remote", "modify", "store", "endpointurl", url], project)
    admin_client(url).create_bucket(Bucket=bucket)
    t = {"dvc add": timed(lambda: sh([DVC, "add", target], project))}
    t["dvc status"] = timed(lambda: sh([DVC, "status"], project))
    t["dvc push"] = timed(lambda: sh([DVC, "push"], project))
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / target)
    t["dvc pull"] = timed(lambda: sh([DVC, "pull"], project))
    return t


def rate_of(batches, n, sync=None):
    """Images a second from `batches` until n images have come (sync: wait for the device at the end)."""
    total, start = 0, time.perf_counter()
    for _, y in batches:
        total += len(y)
        if total >= n:
            break
    if sync is not None:
        sync()
    return total / (time.perf_counter() - start)


def loader_rates(raw, shards_dir, classes, size, n=2000):
    """img/s on one core for each data path, over the same bins (and ABID's full-size originals)."""
    torch.set_num_threads(1)
    rows = [(p.stem, 1) for p in sorted((raw / "images").glob("*.jpg"))[:n]]
    rates = {}
    originals = [(p.stem, 1) for p in sorted((SAMPLE / "bin-images").glob("*.jpg"))]
    full = BinImages(originals, SAMPLE / "bin-images", [1], eval_transform(size), size, jpeg_draft=True)
    t = timed(lambda: [full[i % len(full)] for i in range(10 * len(full))])
    rates["per-file, ABID's full-size JPEGs (27 sample bins, 300-800 px): decode, resize, normalise"] = (
        10 * len(full) / t
    )
    ds = BinImages(rows, raw / "images", [1], eval_transform(size), size, jpeg_draft=True)
    t = timed(lambda: [ds[i] for i in range(len(ds))])
    rates["per-file, these bins' JPEGs: decode, resize, normalise"] = len(ds) / t
    cache = InMemoryImages(rows, raw / "images", [1], size, threads=1)
    batches = InMemoryBatches(cache, 64, ShardSampler(len(rows), 0, 1, shuffle=True), "flips")
    t = timed(lambda: list(batches))
    rates["in-memory cache (decoded once; 3*s*s bytes an image in RAM, per process)"] = len(rows) / t
    shards = ShardSet(shards_dir)
    stream = ShardStream(shards, "train", classes, shuffle=True, buffer=1000)
    batches = ShardBatches(stream, 64, torch.device("cpu"), augment="flips")
    rates["tar shards, pre-resized: read, decode, flip and normalise on the CPU (a CPU run)"] = rate_of(batches, n)
    stream.set_epoch(1)
    t = timed(lambda: sum(1 for _ in zip(range(n), stream)))
    rates["tar shards, pre-resized: read and decode (a loader worker's share when the GPU flips and normalises)"] = (
        min(n, len(stream)) / t
    )
    if torch.cuda.is_available():
        gpu = ShardStream(shards, "train", classes, shuffle=True, buffer=1000, decode="gpu")
        gpu_batches = ShardBatches(gpu, 256, torch.device("cuda"), augment="flips")
        rates["tar shards, decoded on the GPU (train.decode: gpu)"] = rate_of(gpu_batches, n, torch.cuda.synchronize)
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=None, help="a local copy of the bucket to copy bins from")
    parser.add_argument("--bins", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=224, help="the shards' image size")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--out", default=str(REPO / "docs" / "scale.md"))
    parser.add_argument(
        "--loaders-only", action="store_true", help="only the loader rates, on --bins bins written to a local folder"
    )
    args = parser.parse_args()
    commit = short_commit(REPO)
    root = Path(tempfile.mkdtemp(prefix="binsight-scale-"))
    bins = source_bins(args.source, args.bins)
    if args.loaders_only:
        print(loaders_table(loaders_on_disk(bins, root, args.size, args.shard_size)))
        shutil.rmtree(root, ignore_errors=True)
        return
    counts = {i: c for i, (c, _, _) in bins.items()}
    results = {"per-file": {}, "sharded": {}}
    with MotoS3() as s3:
        print(f"scale: uploading {len(bins)} bins to the local S3 server", flush=True)
        upload(s3.url, "abid", bins)
        del bins
        per_file = root / "perfile"
        raw = per_file / "data" / "raw"
        client = make_client(endpoint_url=s3.url, max_connections=32)
        records = []
        fetch_s = timed(
            lambda: records.extend(Downloader(client, "abid", "", raw).fetch_all(counts, 32, progress=False))
        )
        bad = [(r.id, r.reason, r.detail) for r in records if not r.ok]
        if bad:
            raise SystemExit(f"scale: {len(bad)} bins did not fetch, e.g. {bad[:3]}")
        results["per-file"]["fetch"] = results["sharded"]["fetch"] = fetch_s
        print(f"scale: fetch {fetch_s:.1f} s", flush=True)
        shard_root = root / "sharded"
        ids = sorted(counts)
        random.Random(0).shuffle(ids)
        rows = [(i, counts[i], counts[i]) for i in ids]
        results["sharded"]["shard"] = timed(
            lambda: pack_splits(
                {"train": rows},
                raw / "images",
                raw / "metadata",
                shard_root / "data" / "shards",
                args.size,
                args.shard_size,
            )
        )
        print(f"scale: shard {results['sharded']['shard']:.1f} s", flush=True)
        rates = loader_rates(raw, shard_root / "data" / "shards", sorted(set(counts.values())), args.size)
        print(f"scale: loaders {rates}", flush=True)
        results["sharded"].update(dvc_cycle(shard_root, "data/shards", s3.url, "remote-sharded"))
        print(f"scale: sharded {results['sharded']}", flush=True)
        results["per-file"].update(dvc_cycle(per_file, "data/raw", s3.url, "remote-perfile"))
        print(f"scale: per-file {results['per-file']}", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    text = report(results, rates, len(counts), args, commit)
    write_block(Path(args.out), text, BEGIN, END)
    print(text)


def loaders_on_disk(bins, root, size, shard_size):
    """Write the bins as fetch would, pack them, and measure the loaders (no S3, no DVC)."""
    raw = root / "raw"
    for sub in ("images", "metadata"):
        (raw / sub).mkdir(parents=True)
    for bin_id, (_, jpeg, meta) in bins.items():
        (raw / "images" / f"{bin_id}.jpg").write_bytes(jpeg)
        (raw / "metadata" / f"{bin_id}.json").write_bytes(meta)
    rows = [(i, c, c) for i, (c, _, _) in bins.items()]
    pack_splits({"train": rows}, raw / "images", raw / "metadata", root / "shards", size, shard_size)
    return loader_rates(raw, root / "shards", sorted({c for _, c, _ in rows}), size)


def loaders_table(rates):
    lines = ["| data path | img/s per core |", "|---|---|"]
    return "\n".join(lines + [f"| {name} | {rate:.0f} |" for name, rate in rates.items()]) + "\n"


BEGIN, END = "<!-- begin bench/scale.py -->", "<!-- end bench/scale.py -->"


def report(results, rates, n, args, commit):
    cols = ["fetch", "shard", "dvc add", "dvc status", "dvc push", "dvc pull"]
    files = {"per-file": 2 * n, "sharded": -(-n // args.shard_size) + 1}
    scale = 535_000 / n
    source = f"--source {Path(args.source).name}" if args.source else "generated bins"
    lines = [
        "## Per-file layout against tar shards",
        "",
        f"Measured {datetime.date.today()} at commit {commit}, {os.cpu_count()} CPU cores, DVC and a local S3 "
        f"server (moto) on loopback, with `python -m bench.scale {source.replace('generated bins', '')} "
        f"--bins {n}`. Same bins, same JPEG bytes ({args.size} px shards of {args.shard_size} bins).",
        "",
        "| layout | bins | files | " + " | ".join(cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    for layout, t in results.items():
        cells = [f"{t[c]:.1f} s" if c in t else "-" for c in cols]
        lines.append(f"| {layout} | {n} | {files[layout]} | " + " | ".join(cells) + " |")
    for layout, t in results.items():
        cells = [f"~{t[c] * scale / 60:.0f} min" if c in t else "-" for c in cols]
        lines.append(
            f"| {layout}, x{scale:.1f} to 535,000 bins (linear) | 535000 | "
            f"{round(files[layout] * scale)} | " + " | ".join(cells) + " |"
        )
    ratio = {
        c: results["per-file"][c] / results["sharded"][c] for c in ("dvc add", "dvc status", "dvc push", "dvc pull")
    }
    lines += [
        "",
        "Sharded is faster by: " + ", ".join(f"{c} {r:.1f}x" for c, r in ratio.items()) + ".",
        "",
        "### Loader: images a second on one CPU core",
        "",
        loaders_table(rates),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
