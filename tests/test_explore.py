"""The explore stage on bins fetched from a real S3 server (generated bins + the real ABID sample),
through the real `dvc repro explore`; every figure is checked against counts made here from the
bucket's own objects."""

import csv
import io
import json
import statistics
import sys
from collections import Counter

import pytest
from PIL import Image

from binsight.data.dataset_stats import bins_from_manifest, size_histogram, summary
from tests.support.bucket import admin_client
from tests.support.project import call, dvc, git_commit, make_project, run, set_params

pytestmark = pytest.mark.xdist_group("explore")

SIZE_BINS = 12


def listed_clean(bucket):
    """The generated bins the explore project lists: every fourth, each count among them."""
    return dict(sorted(bucket.clean.items())[::4])


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def truth(abid_bucket):
    """What the bucket holds for every bin the fetch must keep, read straight from S3."""
    b = abid_bucket
    good = {**listed_clean(b), **b.real}
    client = admin_client(b.url)
    meta = {i: json.loads(client.get_object(Bucket=b.name, Key=f"metadata/{i}.json")["Body"].read()) for i in good}
    sizes = {i: Image.open(io.BytesIO(b.images[i])).size for i in good}
    return {"labels": good, "meta": meta, "bytes": {i: len(b.images[i]) for i in good}, "sizes": sizes}


@pytest.fixture(scope="module")
def explored(tmp_path_factory, abid_bucket):
    b = abid_bucket
    project = make_project(
        tmp_path_factory.mktemp("explore") / "proj",
        commit=False,
        params={
            "fetch": {"file_list": "file_list.json", "endpoint_url": b.url, "max_bad_fraction": 0.1},
            "explore": {"size_bins": SIZE_BINS},
        },
    )
    b.write_file_list(project / "file_list.json", listed_clean(b), b.real, b.faults)  # the faults must not be counted
    git_commit(project, "explore test project")
    dvc(project, "repro", "explore")
    return project


@pytest.mark.e2e
def test_class_counts_match_the_bucket(explored, truth):
    rows = read_rows(explored / "data/explore/class_counts.csv")
    expected = Counter(truth["labels"].values())
    assert {int(r["label"]): int(r["bins"]) for r in rows} == dict(expected)
    for r in rows:
        ids = [i for i, y in truth["labels"].items() if y == int(r["label"])]
        assert float(r["share"]) == pytest.approx(len(ids) / len(truth["labels"]), abs=1e-4)
        products = statistics.fmean(len(truth["meta"][i]["BIN_FCSKU_DATA"]) for i in ids)
        assert float(r["mean_products"]) == pytest.approx(products, abs=1e-4)


@pytest.mark.e2e
def test_file_size_histogram_counts_every_file_once(explored, truth):
    rows = read_rows(explored / "data/explore/file_sizes.csv")
    sizes = list(truth["bytes"].values())
    assert len(rows) == SIZE_BINS
    assert int(rows[0]["from_bytes"]) == min(sizes) and int(rows[-1]["to_bytes"]) > max(sizes)
    for r in rows:
        lo, hi = int(r["from_bytes"]), int(r["to_bytes"])
        assert int(r["bins"]) == sum(lo <= s < hi for s in sizes)
    assert sum(int(r["bins"]) for r in rows) == len(sizes)


@pytest.mark.e2e
def test_resolutions_are_the_true_image_sizes(explored, truth):
    rows = read_rows(explored / "data/explore/resolutions.csv")
    got = {r["id"]: (int(r["width"]), int(r["height"]), int(r["label"])) for r in rows}
    assert got == {i: (*truth["sizes"][i], truth["labels"][i]) for i in truth["labels"]}


@pytest.mark.e2e
def test_items_list_every_product_and_keep_nulls_empty(explored, truth, abid_bucket):
    rows = read_rows(explored / "data/explore/items.csv")
    per_bin = Counter(r["bin_id"] for r in rows)
    assert per_bin == Counter({i: len(m["BIN_FCSKU_DATA"]) for i, m in truth["meta"].items() if m["BIN_FCSKU_DATA"]})
    null_weights = {
        (i, asin)
        for i, m in truth["meta"].items()
        for asin, sku in m["BIN_FCSKU_DATA"].items()
        if sku.get("weight") is None
    }
    assert null_weights, "the data should include products with a null weight"
    assert {(r["bin_id"], r["asin"]) for r in rows if r["weight_lb"] == ""} == null_weights
    real_nulls = {i for i, _ in null_weights if i in abid_bucket.real}
    assert real_nulls, "the real ABID sample has null weights"
    for r in rows:
        sku = truth["meta"][r["bin_id"]]["BIN_FCSKU_DATA"][r["asin"]]
        assert int(r["quantity"]) == sku["quantity"]
        assert float(r["length_in"]) == pytest.approx(sku["length"]["value"], abs=1e-3)  # all in IN here
        if r["weight_lb"]:
            assert float(r["weight_lb"]) == pytest.approx(sku["weight"]["value"], abs=1e-3)  # all in pounds
        dims = [sku[k]["value"] for k in ("length", "width", "height")]
        assert float(r["volume_in3"]) == pytest.approx(dims[0] * dims[1] * dims[2], rel=1e-3)


@pytest.mark.e2e
def test_summary_matches_the_bucket_and_dvc_lists_it(explored, truth):
    s = json.loads((explored / "data/explore/summary.json").read_text())
    labels, meta = truth["labels"], truth["meta"]
    assert s["n_bins"] == len(labels)
    assert s["bins_per_class"] == {str(k): v for k, v in sorted(Counter(labels.values()).items())}
    assert s["mean_items_per_bin"] == pytest.approx(
        statistics.fmean(m["EXPECTED_QUANTITY"] for m in meta.values()), abs=1e-4
    )
    assert s["file_size_kib"]["median"] == pytest.approx(statistics.median(truth["bytes"].values()) / 1024, abs=1e-3)
    assert s["width_px"]["max"] == max(w for w, _ in truth["sizes"].values())
    skus = [sku for m in meta.values() for sku in m["BIN_FCSKU_DATA"].values()]
    assert s["products"]["n"] == len(skus)
    assert s["products"]["with_weight"] == sum(sku.get("weight") is not None for sku in skus)

    # not a declared metric (it would crowd `dvc exp show`), yet one command shows it
    shown = json.loads(dvc(explored, "metrics", "show", "--json", "data/explore/summary.json").stdout)
    metrics = shown[""]["data"]["data/explore/summary.json"]["data"]
    assert metrics["n_bins"] == len(labels)


@pytest.mark.e2e
def test_dvc_renders_the_explore_plots(explored, truth):
    out = explored / "plots_html"
    dvc(
        explored,
        "plots",
        "show",
        "-o",
        str(out),
        "data/explore/class_counts.csv",
        "data/explore/file_sizes.csv",
        "data/explore/resolutions.csv",
        "data/explore/items.csv",
    )
    html = (out / "index.html").read_text()
    for name in ("class_counts.csv", "file_sizes.csv", "resolutions.csv", "items.csv"):
        assert f"data/explore/{name}" in html
    # the data points are inlined in the vega specs: one per bin in the scatter
    assert html.count('"width"') >= len(truth["labels"])


@pytest.mark.e2e
def test_rerun_is_skipped_and_params_change_reruns(explored):
    assert "didn't change, skipping" in dvc(explored, "repro", "explore").stdout
    set_params(explored, {"explore": {"size_bins": 5}})
    dvc(explored, "repro", "explore")
    assert len(read_rows(explored / "data/explore/file_sizes.csv")) == 5
    set_params(explored, {"explore": {"size_bins": SIZE_BINS}})
    dvc(explored, "repro", "explore")


@pytest.mark.e2e
def test_missing_metadata_is_a_one_line_error(explored, tmp_path):
    manifest = read_rows(explored / "data/raw/manifest.csv")
    (tmp_path / "meta").mkdir()
    (tmp_path / "manifest.csv").write_text(
        "id,label,width,height,bytes\n"
        + "".join(f"{r['id']},{r['label']},{r['width']},{r['height']},{r['bytes']}\n" for r in manifest[:3])
    )
    proc = call(
        "stages.explore",
        "--manifest",
        str(tmp_path / "manifest.csv"),
        "--metadata",
        str(tmp_path / "meta"),
        "--out",
        str(tmp_path / "out"),
        cwd=explored,
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{manifest[0]['id']}.json not found" in proc.stderr and "dvc repro fetch" in proc.stderr


@pytest.mark.e2e
def test_bad_size_bins_is_a_one_line_error(explored, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("explore: {size_bins: 0}\n")
    proc = run(
        [sys.executable, "-m", "stages.explore", "--params", str(params), "--out", str(tmp_path / "o")],
        explored,
        check=False,
    )
    assert proc.returncode == 2 and "explore.size_bins=0 is not allowed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "usage:" in call("stages.explore", "--help", cwd=explored).stdout


def test_histogram_edges_are_exact():
    assert size_histogram([], 4) == []
    same = size_histogram([500, 500, 500], 3)
    assert [r["bins"] for r in same] == [3, 0, 0] and same[0]["from_bytes"] == 500
    rows = size_histogram([0, 9, 10, 19, 20], 2)  # width ceil(21 / 2) = 11: [0, 11) and [11, 22)
    assert [(r["from_bytes"], r["to_bytes"], r["bins"]) for r in rows] == [(0, 11, 3), (11, 22, 2)]


def test_bad_manifest_row_and_empty_manifest_are_data_errors():
    from binsight.errors import DataError

    with pytest.raises(DataError, match="manifest line 3"):
        bins_from_manifest(
            [
                {"id": "1", "label": "1", "width": "5", "height": "5", "bytes": "9"},
                {"id": "2", "label": "x", "width": "5", "height": "5", "bytes": "9"},
            ]
        )
    with pytest.raises(DataError, match="manifest is empty"):
        summary([], {}, [])
