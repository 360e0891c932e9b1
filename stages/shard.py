"""Stage `shard`: pack each split into tar shards (webdataset layout), images pre-resized to
train.image_size once, labels and metadata inside (binsight/data/training_shards.py).

    python -m stages.shard            # what `dvc repro shard` runs

Outputs data/shards/{train,val,test}-NNNNN.tar and data/shards/index.json. A rerun keeps every shard
that is whole and still holds what the split asks for, so a killed run resumes where it stopped.
Training and evaluate read the shards when train.data is `shards`; `dvc push`/`pull` move a few
hundred files instead of two per bin. With `shard.pack: auto` and `train.data: files` nothing reads them,
so nothing is packed: data/shards/ then holds only a note saying so (`shard.pack: always` packs anyway).
"""

import argparse
from pathlib import Path

from tqdm import tqdm

from binsight.data.split_files import read_split_counts
from binsight.data.stratified_split import SPLITS
from binsight.data.training_shards import pack_splits
from binsight.errors import one_line_errors
from binsight.files import atomic_write_text
from binsight.params import ShardParams, load_params, section, train_section

UNPACKED_NOTE = "NOT_PACKED.txt"


def write_unpacked_note(out):
    """The output DVC expects, without shards: one file that says why (DVC removed the old shards)."""
    atomic_write_text(
        Path(out) / UNPACKED_NOTE,
        "No shards: train.data is files, which reads data/raw/images. Set train.data: shards to train on "
        "shards, or shard.pack: always to pack them anyway (e.g. to `dvc push` them for another machine).\n",
    )


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", default="data/split")
    parser.add_argument("--images", default="data/raw/images")
    parser.add_argument("--metadata", default="data/raw/metadata")
    parser.add_argument("--out", default="data/shards")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    p, train = section(params, ShardParams), train_section(params)
    size = train.image_size
    if p.pack == "auto" and train.data == "files":
        write_unpacked_note(args.out)
        print(f"shard: nothing to pack (train.data: files reads no shards; shard.pack: always packs) -> {args.out}/")
        return
    splits = {name: read_split_counts(args.split, name, args.images) for name in SPLITS}
    total = sum(len(rows) for rows in splits.values())
    with tqdm(total=total, desc="shard", unit="bin", disable=True if args.no_progress else None) as bar:
        index = pack_splits(
            splits, args.images, args.metadata, args.out, size, p.size, p.quality, p.seed, progress=bar.update
        )
    files = sum(len(entries) for entries in index["splits"].values())
    print(
        f"shard: {total} bins in {files} shards of up to {p.size} at {size} px "
        f"({index['reused']} already whole and kept) -> {args.out}/"
    )


if __name__ == "__main__":
    main()
