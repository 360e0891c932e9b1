"""Where the train stage reads and writes: dvc.yaml's paths, overridable from the command line."""

from dataclasses import dataclass


@dataclass
class Paths:
    split: str = "data/split"
    images: str = "data/raw/images"
    metadata: str = "data/raw/metadata"  # read when train.aux_weight > 0
    model: str = "models/trained.pt"  # evaluate calibrates it into models/model.pt
    checkpoint: str = "models/checkpoint.pt"
    live: str = "dvclive/train"
    features: str = "data/features"
    shards: str = "data/shards"  # train.data: shards (train.shards, when set, says where)
