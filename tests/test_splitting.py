import pytest

from binsight.data.stratified_split import split_sizes, stratified_split
from binsight.errors import ConfigError
from binsight.params import check_split

RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}


def items(per_class):
    return [(f"{label}{i:05d}", label) for label, n in per_class.items() for i in range(n)]


def test_each_class_is_split_6_2_2_within_one():
    data = items({1: 1228, 2: 37, 3: 11, 4: 5, 5: 2})
    splits = stratified_split(data, RATIOS, seed=42)
    for label, n in {1: 1228, 2: 37, 3: 11, 4: 5, 5: 2}.items():
        for name, ratio in RATIOS.items():
            got = sum(1 for _, y in splits[name] if y == label)
            assert abs(got - n * ratio) <= 1, (label, name, got)


def test_no_id_in_two_splits_and_none_lost():
    data = items({1: 100, 2: 55})
    splits = stratified_split(data, RATIOS, seed=1)
    ids = [i for rows in splits.values() for i, _ in rows]
    assert len(ids) == len(set(ids)) == len(data)


def test_same_seed_same_split_other_seed_other_split():
    data = items({1: 50, 2: 50})
    a = stratified_split(data, RATIOS, seed=7)
    assert a == stratified_split(list(reversed(data)), RATIOS, seed=7)  # input order does not matter
    assert a["test"] != stratified_split(data, RATIOS, seed=8)["test"]


def test_split_sizes_always_add_up():
    for n in range(0, 40):
        sizes = split_sizes(n, RATIOS)
        assert sum(sizes.values()) == n and min(sizes.values()) >= 0


@pytest.mark.parametrize(
    "ratios",
    [{"train": 0.6, "val": 0.3, "test": 0.2}, {"train": 0.7, "val": 0.3}, {"train": 1.2, "val": -0.1, "test": -0.1}],
)
def test_bad_ratios_are_rejected(ratios):
    with pytest.raises(ConfigError):
        check_split({"seed": 1, "ratios": ratios})
