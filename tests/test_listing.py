"""`binsight list` against a real S3 server on loopback and a local copy; the class policies."""

import json

import pytest

from binsight.data.abid_format import expected_quantity, file_list_object, parse_file_list
from binsight.data.class_policy import admitted, class_name, label_for
from binsight.data.split_files import class_names
from binsight.errors import ConfigError
from binsight.params import check_classes
from binsight.tables import read_csv
from tests.support.bucket import build_list_bucket
from tests.support.project import call


@pytest.fixture(scope="module")
def whole_bucket(s3_server):
    return build_list_bucket(s3_server.url)


def listed(path):
    return parse_file_list(json.loads(path.read_text()))


def test_list_reads_every_bin_of_the_bucket_and_names_the_skipped(whole_bucket, tmp_path):
    bucket, expected, skipped = whole_bucket
    out = tmp_path / "all_bins.json"
    ran = call(
        "binsight.data.bucket_listing",
        f"s3://{bucket.name}/",
        "--out",
        out,
        "--endpoint-url",
        bucket.url,
        "--no-progress",
        cwd=tmp_path,
    )
    assert listed(out) == expected
    counts = json.loads(out.read_text())
    assert "0" in counts and "48" in counts and "8" in counts  # the empty bin, the real 48-item bin, counts > 5
    report = json.loads((tmp_path / "all_bins.report.json").read_text())
    assert {r["id"]: r["reason"] for r in report["skipped_bins"]} == skipped
    assert report["skipped_reasons"] == {reason: 1 for reason in skipped.values()}
    assert report["listed"] == len(expected) and report["bins_seen"] == len(expected) + len(skipped)
    assert f"{len(skipped)} skipped" in ran.stdout
    assert not (tmp_path / "all_bins.json.partial.jsonl").exists()


def test_a_killed_list_resumes_from_what_it_read(whole_bucket, tmp_path):
    bucket, expected, _ = whole_bucket
    out = tmp_path / "all_bins.json"
    some = sorted(expected)[:3]
    # What a killed run left: three bins read (recorded under a count no bucket object has, so a reread
    # would show), and a line cut off by the kill.
    lines = [json.dumps({"id": i, "count": 999}) for i in some]
    (tmp_path / "all_bins.json.partial.jsonl").write_text("\n".join(lines) + '\n{"id": "3000')
    ran = call(
        "binsight.data.bucket_listing",
        f"s3://{bucket.name}",
        "--out",
        out,
        "--endpoint-url",
        bucket.url,
        "--no-progress",
        cwd=tmp_path,
    )
    assert f"3 read before, {len(expected) + 5 - 3} to read" in ran.stdout
    got = listed(out)
    assert {i: got[i] for i in some} == {i: 999 for i in some}
    assert {i: c for i, c in got.items() if i not in some} == {i: c for i, c in expected.items() if i not in some}


def test_list_reads_a_local_copy_and_refuses_a_folder_without_metadata(tmp_path):
    for bin_id, count in (("000001", 0), ("000002", 7)):
        (tmp_path / "copy" / "metadata").mkdir(parents=True, exist_ok=True)
        (tmp_path / "copy" / "bin-images").mkdir(exist_ok=True)
        (tmp_path / "copy" / "metadata" / f"{bin_id}.json").write_text(json.dumps({"EXPECTED_QUANTITY": count}))
        (tmp_path / "copy" / "bin-images" / f"{bin_id}.jpg").write_bytes(b"jpeg")
    call("binsight.data.bucket_listing", tmp_path / "copy", "--out", tmp_path / "l.json", "--no-progress", cwd=tmp_path)
    assert listed(tmp_path / "l.json") == {"000001": 0, "000002": 7}
    bad = call("binsight.data.bucket_listing", tmp_path, "--out", tmp_path / "x.json", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "no metadata/ folder" in bad.stderr


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"EXPECTED_QUANTITY": 0}', (0, None)),
        (b'{"EXPECTED_QUANTITY": 48}', (48, None)),
        (b"{}", (None, "missing_quantity")),
        (b'{"EXPECTED_QUANTITY": null}', (None, "null_quantity")),
        (b'{"EXPECTED_QUANTITY": -1}', (None, "bad_quantity")),
        (b'{"EXPECTED_QUANTITY": true}', (None, "bad_quantity")),
        (b"[1]", (None, "unreadable_metadata")),
        (b"\xff", (None, "unreadable_metadata")),
    ],
)
def test_expected_quantity_says_why_a_bin_has_no_count(data, expected):
    count, why = expected_quantity(data)
    assert (count, why and why[0]) == expected


def test_the_list_format_round_trips_any_count():
    counts = {"7": 0, "3": 12, "5": 2, "9": 2}
    obj = file_list_object(counts)
    assert list(obj) == ["0", "2", "12"]  # numeric order, not "12" before "2"
    assert parse_file_list(obj) == counts


COUNTS = {f"{c:03d}": c for c in (0, 1, 2, 3, 4, 5, 6, 7, 48)}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"policy": "subset"}, {"001": 1, "002": 2, "003": 3, "004": 4, "005": 5}),
        ({"policy": "anchors"}, {"000": 0, "001": 1, "002": 2, "003": 3, "004": 4, "005": 5}),
        ({"policy": "clip", "clip_at": 6}, {**{f"{c:03d}": c for c in range(6)}, "006": 6, "007": 6, "048": 6}),
        (
            {"policy": "clip", "clip_at": 3},
            {"000": 0, "001": 1, "002": 2, "003": 3, "004": 3, "005": 3, "006": 3, "007": 3, "048": 3},
        ),
    ],
)
def test_each_class_policy_admits_and_labels_its_counts(policy, expected):
    p = check_classes(policy)
    assert admitted(COUNTS, p.policy, p.clip_at) == expected


def test_class_names_mark_the_open_class_and_bad_policies_are_refused():
    assert [class_name(c, "clip", 6) for c in (0, 5, 6)] == ["0", "5", "6+"]
    assert class_name(5, "subset") == "5" and label_for(6, "subset") is None
    with pytest.raises(ConfigError, match="classes.policy='all'"):
        check_classes({"policy": "all"})
    with pytest.raises(ConfigError, match="classes.clip_at=0"):
        check_classes({"policy": "clip", "clip_at": 0})


def test_split_applies_the_policy_keeps_the_count_and_leaves_the_1_to_5_split_alone(tmp_path):
    counts = {f"{n:05d}": c for n, c in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 9, 30] * 10)}
    (tmp_path / "manifest.csv").write_text("id,label\n" + "".join(f"{i},{c}\n" for i, c in counts.items()))
    splits = {}
    for policy in ("subset", "clip"):
        params = tmp_path / f"{policy}.yaml"
        params.write_text(
            f"classes: {{policy: {policy}, clip_at: 6}}\n"
            "split: {seed: 1, ratios: {train: 0.6, val: 0.2, test: 0.2}}\n"
        )
        out = tmp_path / policy
        ran = call(
            "stages.split", "--params", params, "--manifest", tmp_path / "manifest.csv", "--out", out, cwd=tmp_path
        )
        splits[policy] = {name: read_csv(out / f"{name}.csv") for name in ("train", "val", "test")}
        if policy == "subset":
            assert "50 bins left out" in ran.stdout  # the counts 0, 6, 7, 9 and 30
    clip = [r for rows in splits["clip"].values() for r in rows]
    assert len(clip) == len(counts)
    assert all(int(r["label"]) == min(int(r["count"]), 6) and counts[r["id"]] == int(r["count"]) for r in clip)
    for name in ("train", "val", "test"):  # the 1-5 bins fall in the same splits whatever else is listed
        assert [r for r in splits["clip"][name] if 1 <= int(r["count"]) <= 5] == splits["subset"][name]
    assert class_names(tmp_path / "clip", [0, 1, 2, 3, 4, 5, 6]) == ["0", "1", "2", "3", "4", "5", "6+"]
    assert class_names(tmp_path / "subset", [1, 2, 3, 4, 5]) == ["1", "2", "3", "4", "5"]
