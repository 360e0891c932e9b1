"""The named choices of params.yaml, in a module without torch, so the data stages (fetch, split,
explore) and params validation start in a fraction of a second."""

AUGMENTS = ("none", "flips", "dihedral", "full")  # train.augment (binsight/data/image_datasets.py)
LOSSES = ("ce", "neighbour", "ordinal", "regression")  # train.loss (binsight/model/count_losses.py)
TTA_MODES = ("none", "flips", "dihedral")  # model.tta (binsight/data/square_views.py)


def augment_mode(value):
    """train.augment -> one of AUGMENTS (true/false, from older params files: full/none)."""
    if value is True:
        return "full"
    if value is False or value is None:
        return "none"
    return value
