"""Extra training targets read from each bin's metadata (`train.aux_weight`).

Beside the count, a second head on the backbone's features learns three things the metadata says
about the bin: how many products it lists (1-5, more counted as 5), the log of their total volume
and the log of their total weight. They give a model trained from scratch more to learn from the
same photos (docs/results.md: a small gain on a GPU, none seen with the CPU recipe, so it is off by
default). They are training
targets only, never an input: the metadata holds the count too. The second head is not saved in
the model file, so evaluate, predict and serve never see it. Reading them needs no torch, so the
train stage checks every training bin's metadata before it imports torch; the loss term is
binsight.model.count_losses.AuxTargetLoss.
"""

import math
from pathlib import Path

from binsight.data.abid_format import parse_metadata
from binsight.data.raw_bins import RawBins
from binsight.errors import DataError

PRODUCT_CLASSES = 5
AUX_OUTPUTS = PRODUCT_CLASSES + 2  # logits for the number of products, then log volume and log weight


def aux_targets(meta):
    """BinMetadata -> (number of products listed as a class index 0-4, log total volume in cubic
    inches, log total weight in pounds); a total is NaN when any product lacks that measurement."""
    volumes = [
        i.quantity * i.length_in * i.width_in * i.height_in
        for i in meta.items
        if None not in (i.length_in, i.width_in, i.height_in)
    ]
    weights = [i.quantity * i.weight_lb for i in meta.items if i.weight_lb is not None]

    def log_total(parts):
        return math.log(sum(parts)) if meta.items and len(parts) == len(meta.items) and sum(parts) > 0 else math.nan

    return float(min(max(len(meta.items), 1), PRODUCT_CLASSES) - 1), log_total(volumes), log_total(weights)


def read_aux_targets(rows, metadata_dir, images_dir=None):
    """Split rows [(bin_id, label)] -> [aux_targets of each row], read from metadata_dir/<id>.json, or
    from the raw shards in images_dir when fetch packed the bins there (`fetch.layout: shards`)."""
    bins = RawBins(images_dir if images_dir is not None else metadata_dir, metadata_dir)
    out = []
    for bin_id, _ in rows:
        path = Path(metadata_dir) / f"{bin_id}.json"
        try:
            data = bins.metadata_bytes(bin_id)
            if data is None:
                raise FileNotFoundError(path)
            meta = parse_metadata(data)
        except FileNotFoundError:
            raise DataError(
                f"{path} is missing: train.aux_weight reads each training bin's metadata "
                "(run `dvc repro fetch`, or set train.aux_weight: 0)"
            ) from None
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
        out.append(aux_targets(meta))
    return out
