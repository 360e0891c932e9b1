"""The ABID parsers on the real subset list (abid/file_list.json) and the 27 real sample bins
shipped in tests/data/abid_sample."""

import hashlib
import json

import pytest

from binsight.data.abid_format import (
    bin_id_from_path,
    image_key,
    limit_per_class,
    metadata_key,
    parse_file_list,
    parse_file_list_bytes,
    parse_metadata,
)
from binsight.errors import DataError
from tests.support.bucket import REAL_SAMPLE, REPO, SUBSET_LIST

SUBSET_SHA256 = "a9830d872e383734bf58cd698c2e76ab7b32f30fc431eb19e06dd3adf92f521e"  # as abid/README.md notes


def test_shipped_subset_list_is_the_one_noted_and_the_default():
    assert hashlib.sha256(SUBSET_LIST.read_bytes()).hexdigest() == SUBSET_SHA256
    assert SUBSET_SHA256 in (REPO / "abid" / "README.md").read_text()
    import yaml

    assert yaml.safe_load((REPO / "params.yaml").read_text())["fetch"]["file_list"] == "abid/file_list.json"


def test_real_file_list_parses_all_ids_with_their_counts():
    labels = parse_file_list_bytes(SUBSET_LIST.read_bytes())
    assert len(labels) == 10441
    per_class = {c: sum(1 for v in labels.values() if v == c) for c in range(1, 6)}
    assert per_class == {1: 1228, 2: 2299, 3: 2666, 4: 2373, 5: 1875}
    assert round(sum(labels.values()) / len(labels), 2) == 3.13
    assert labels["09915"] == 1 and labels["100313"] == 1  # leading zeros kept, prefix dropped


@pytest.mark.parametrize(
    "path,expected",
    [
        ("data/metadata/100313.json", "100313"),
        ("metadata/09915.json", "09915"),
        ("09915", "09915"),
        ("s3://aft-vbi-pds/metadata/523.json", "523"),
        ("C:\\abid\\metadata\\77.json", "77"),
    ],
)
def test_bin_id_is_the_basename_whatever_the_prefix(path, expected):
    assert bin_id_from_path(path) == expected


def test_file_list_rejects_conflicting_and_malformed_entries():
    with pytest.raises(DataError, match="both 1 and 2"):
        parse_file_list({"1": ["a/7.json"], "2": ["b/7.json"]})
    with pytest.raises(DataError, match="not an integer"):
        parse_file_list({"one": ["a/7.json"]})
    with pytest.raises(DataError, match="not valid JSON"):
        parse_file_list_bytes(b"{nope")


def test_limit_per_class_keeps_the_first_ids_of_each_class():
    labels = {"05": 1, "01": 1, "03": 1, "02": 2, "04": 2}
    assert limit_per_class(labels, 2) == {"01": 1, "03": 1, "02": 2, "04": 2}
    assert limit_per_class(labels, None) == labels


def test_key_layout_matches_the_bucket():
    assert image_key("", "00013") == "bin-images/00013.jpg"
    assert metadata_key("mirror/", "00013") == "mirror/metadata/00013.json"


def test_every_real_sample_metadata_parses_including_null_measurements():
    files = sorted((REAL_SAMPLE / "metadata").glob("*.json"))
    assert len(files) == 27
    nulls = 0
    for path in files:
        raw = json.loads(path.read_bytes())
        meta = parse_metadata(path.read_bytes())
        assert meta.expected_quantity == raw["EXPECTED_QUANTITY"]
        assert len(meta.items) == len(raw["BIN_FCSKU_DATA"])
        for item in meta.items:
            sku = raw["BIN_FCSKU_DATA"][item.asin]
            assert item.quantity == sku["quantity"]
            if sku.get("weight") is None:
                nulls += 1
                assert item.weight_lb is None
            else:
                assert item.weight_lb == pytest.approx(sku["weight"]["value"])
    assert nulls >= 1  # the sample has real null measurements
    quantities = sorted(parse_metadata(p.read_bytes()).expected_quantity for p in files)
    assert quantities[0] == 0 and quantities[-1] == 48


def test_metadata_units_are_converted_and_garbage_rejected():
    meta = parse_metadata(
        json.dumps(
            {
                "EXPECTED_QUANTITY": 1,
                "BIN_FCSKU_DATA": {
                    "A": {
                        "quantity": 1,
                        "length": {"unit": "CM", "value": 25.4},
                        "weight": {"unit": "KG", "value": 1},
                        "width": {"unit": "furlong", "value": 3},
                        "height": None,
                    }
                },
            }
        ).encode()
    )
    item = meta.items[0]
    assert item.length_in == pytest.approx(10.0) and item.weight_lb == pytest.approx(2.20462)
    assert item.width_in is None and item.height_in is None
    for bad in (b"", b"[1]", b'{"EXPECTED_QUANTITY": "three"}', b'{"EXPECTED_QUANTITY": -1}'):
        with pytest.raises(DataError):
            parse_metadata(bad)
