"""Shard formats side by side: webdataset tar shards (what binsight uses), litdata and
mosaicml-streaming, on the same pre-resized JPEGs: write time, files, bytes and read img/s on one core.

    python -m studies.formats.shard_formats --images ../abid/dev/bin-images --n 3000

The three readers each decode the same JPEG bytes with the same function, so the read rate compares the
formats' own overhead. litdata and mosaicml-streaming are not binsight requirements: install them into a
separate environment to run this (pip install litdata mosaicml-streaming); a format whose package is
missing is reported as such.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from binsight.data.shard_stream import ShardSet, ShardStream, decode_jpeg
from binsight.data.training_shards import encode_image, pack_splits


def tree_size(folder):
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files) / 2**20


def decode_rate(items):
    """Read every item, decoding its JPEG column with the same function: -> items a second."""
    start, n = time.perf_counter(), 0
    for item in items:
        decode_jpeg(bytes(item["jpg"]))  # litdata hands the bytes back as a memoryview
        n += 1
    return n / (time.perf_counter() - start)


def bench_webdataset(jpegs, labels, root):
    import webdataset as wds

    out = root / "wds"
    out.mkdir()
    start = time.perf_counter()
    with wds.ShardWriter(str(out / "train-%05d.tar"), maxcount=1000, verbose=0) as sink:
        for i, (data, label) in enumerate(zip(jpegs, labels)):
            sink.write({"__key__": f"{i:07d}", "jpg": data, "cls": label})
    write = time.perf_counter() - start
    ds = wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False, empty_check=False)
    return write, decode_rate(ds), *tree_size(out)


def bench_binsight_reader(rows, images, root, size):
    """binsight's own shard stage and reader (webdataset layout; built on webdataset's tar iterators)."""
    out = root / "binsight"
    pack_splits({"train": rows}, images, images.parent / "metadata", out, size, shard_size=1000, workers=1)
    stream = ShardStream(ShardSet(out), "train", sorted({r[1] for r in rows}))
    start = time.perf_counter()
    n = sum(1 for _ in stream)
    return float("nan"), n / (time.perf_counter() - start), *tree_size(out)


def litdata_item(item):
    return {"jpg": item[0], "label": item[1]}


def bench_litdata(jpegs, labels, root):
    import litdata

    out = root / "litdata"
    items = list(zip(jpegs, labels))
    start = time.perf_counter()
    litdata.optimize(
        fn=litdata_item,
        inputs=items,
        output_dir=str(out),
        chunk_bytes="16MB",
        num_workers=1,
        mode="overwrite",
        verbose=False,
    )
    write = time.perf_counter() - start
    ds = litdata.StreamingDataset(str(out))
    return write, decode_rate(ds), *tree_size(out)


def bench_streaming(jpegs, labels, root):
    from streaming import MDSWriter, StreamingDataset

    out = root / "mds"
    start = time.perf_counter()
    with MDSWriter(out=str(out), columns={"jpg": "bytes", "label": "int"}, size_limit="16mb") as writer:
        for data, label in zip(jpegs, labels):
            writer.write({"jpg": data, "label": label})
    write = time.perf_counter() - start
    ds = StreamingDataset(local=str(out), shuffle=False, batch_size=64)
    return write, decode_rate(ds), *tree_size(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="a folder of bin JPEGs (e.g. a local copy's bin-images/)")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = Path(args.images)
    paths = sorted(images.glob("*.jpg"))[: args.n]
    rows = [(p.stem, i % 5 + 1, i % 5 + 1) for i, p in enumerate(paths)]
    jpegs = [encode_image(p, args.size, 95) for p in paths]
    labels = [r[1] for r in rows]
    root = Path(tempfile.mkdtemp(prefix="binsight-formats-"))
    print(f"{len(rows)} bins at {args.size} px, one core\n")
    print("| format | write s | files | MiB | read img/s (decode included) |")
    print("|---|---|---|---|---|")
    for name, fn in (
        ("webdataset (tar)", lambda: bench_webdataset(jpegs, labels, root)),
        (
            "binsight shard reader (webdataset tar, index.json)",
            lambda: bench_binsight_reader(rows, images, root, args.size),
        ),
        ("litdata", lambda: bench_litdata(jpegs, labels, root)),
        ("mosaicml-streaming (MDS)", lambda: bench_streaming(jpegs, labels, root)),
    ):
        try:
            write, rate, files, mib = fn()
            shown = "-" if write != write else f"{write:.1f}"  # nan: the shard stage writes it (with the resize)
            print(f"| {name} | {shown} | {files} | {mib:.0f} | {rate:.0f} |", flush=True)
        except ImportError as exc:
            print(f"| {name} | not installed ({exc.name}) | | | |", flush=True)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
