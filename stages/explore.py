"""Stage `explore`: what the fetched dataset looks like, as DVC plots and a metrics file.

    python -m stages.explore          # what `dvc repro explore` runs

Reads data/raw/manifest.csv and data/raw/metadata/<id>.json; writes to data/explore/:
class_counts.csv (bins per label), file_sizes.csv (file-size histogram), resolutions.csv
(id,label,width,height), items.csv (one row per product: dimensions, weight; empty when the
metadata has null) and summary.json (`dvc metrics show`).
"""

import argparse
from pathlib import Path

from binsight.data.abid_format import parse_metadata
from binsight.data.dataset_stats import (
    CLASS_COLUMNS,
    ITEM_COLUMNS,
    RESOLUTION_COLUMNS,
    SIZE_COLUMNS,
    bins_from_manifest,
    class_counts,
    item_rows,
    resolution_rows,
    size_histogram,
    summary,
)
from binsight.data.raw_bins import RawBins
from binsight.errors import DataError, one_line_errors
from binsight.params import ExploreParams, load_params, section
from binsight.tables import read_csv, write_csv, write_json


def load_metadata(folder, bin_ids, images_dir=None):
    """{bin_id: BinMetadata} from folder/<id>.json, or from the raw shards in images_dir (`fetch.layout: shards`)."""
    bins = RawBins(images_dir if images_dir is not None else folder, folder)
    out = {}
    for bin_id in bin_ids:
        path = Path(folder) / f"{bin_id}.json"
        try:
            data = bins.metadata_bytes(bin_id)
            if data is None:
                raise FileNotFoundError(path)
            out[bin_id] = parse_metadata(data)
        except FileNotFoundError:
            raise DataError(f"{path} not found but the manifest lists bin {bin_id}: run `dvc repro fetch`") from None
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
    return out


def blank_none(rows):
    """None -> "" so a missing measurement is an empty CSV cell (plots skip it) and not 'None'."""
    return [{k: "" if v is None else v for k, v in row.items()} for row in rows]


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--manifest", default="data/raw/manifest.csv", help="fetch manifest (default: %(default)s)")
    parser.add_argument("--metadata", default="data/raw/metadata", help="metadata folder (default: %(default)s)")
    parser.add_argument(
        "--images", default="data/raw/images", help="images folder, or the raw shards (default: %(default)s)"
    )
    parser.add_argument("--out", default="data/explore", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)

    p = section(load_params(args.params), ExploreParams)
    bins = bins_from_manifest(read_csv(args.manifest, required=("id", "label", "width", "height", "bytes")))
    if not bins:
        raise DataError(f"{args.manifest} lists no bins: did fetch find any?")
    metadata = load_metadata(args.metadata, [b.id for b in bins], args.images)
    items = item_rows(bins, metadata)

    out = Path(args.out)
    write_csv(out / "class_counts.csv", class_counts(bins, metadata), CLASS_COLUMNS)
    write_csv(out / "file_sizes.csv", size_histogram([b.bytes for b in bins], p.size_bins), SIZE_COLUMNS)
    write_csv(out / "resolutions.csv", resolution_rows(bins), RESOLUTION_COLUMNS)
    write_csv(out / "items.csv", blank_none(items), ITEM_COLUMNS)
    stats = summary(bins, metadata, items)
    write_json(out / "summary.json", stats)
    print(
        f"explore: {stats['n_bins']} bins {stats['bins_per_class']}, {stats['mean_items_per_bin']:g} items "
        f"per bin, {stats['products']['n']} products -> {out}/"
    )


if __name__ == "__main__":
    main()
