"""Class policies: which item counts a run learns, and as which classes.

    subset   1-5, as the subset list (abid/file_list.json) and the notebook: 0 or more than 5 left out
    anchors  0-5, as the ABID challenge baseline and the papers that beat it: more than 5 left out
    clip     every bin; counts of clip_at or more are one class ("6+" for clip_at 6)

A label is the class's smallest count, so labels sort in count order and a label names its class:
under `clip` with clip_at 6, label 6 stands for "6 or more". The figure comparable with the notebook's
is always taken on the bins with 1-5 items (`COUNTS_1TO5`), whatever the policy.
"""

from binsight.params import POLICIES  # noqa: F401 (the policies, named where they are checked)

COUNTS_1TO5 = (1, 2, 3, 4, 5)  # the counts of the subset list, the notebook's 32 % and the headline's test_acc_1to5


def label_for(count, policy="subset", clip_at=6):
    """An item count -> its class label under the policy, or None when the policy leaves it out."""
    if policy == "subset":
        return count if 1 <= count <= 5 else None
    if policy == "anchors":
        return count if 0 <= count <= 5 else None
    return min(count, clip_at)


def class_name(label, policy="subset", clip_at=6):
    """Label -> what a person reads: "3", or "6+" for the open-ended class of `clip`."""
    return f"{label}+" if policy == "clip" and label == clip_at else str(label)


def admitted(counts, policy="subset", clip_at=6):
    """{bin_id: count} -> {bin_id: label} of the bins the policy keeps."""
    out = {}
    for bin_id, count in counts.items():
        label = label_for(count, policy, clip_at)
        if label is not None:
            out[bin_id] = label
    return out
