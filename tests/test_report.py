"""The HTML report: built by `python -m stages.report` from real explore outputs (bins fetched from
the local S3 server) plus train/evaluate outputs written here in dvclive's layout, then opened in
a real headless Chromium."""

import base64
import io
import json
from html.parser import HTMLParser

import pytest
from PIL import Image

from binsight.errors import DataError
from binsight.evaluate.html_report import confusion_counts, table_rows
from tests.support import browser
from tests.support.bucket import REAL_SAMPLE
from tests.support.project import call, clone, make_project, repo_pythonpath, set_params

pytestmark = pytest.mark.xdist_group("report")

SECTION_IDS = ["summary", "exploration", "training", "confusion", "decisions", "misclassified"]
MISSING = "not available yet: run dvc repro"
# (actual, predicted) -> how many: 16 test bins, 11 right
CONFUSION = {
    ("1", "1"): 3,
    ("2", "2"): 2,
    ("2", "3"): 1,
    ("3", "3"): 2,
    ("3", "2"): 2,
    ("4", "4"): 2,
    ("4", "5"): 1,
    ("5", "5"): 2,
    ("5", "4"): 1,
}
CURVES = {
    "train/loss": [1.5, 1.1, 0.8],
    "val/loss": [1.6, 1.3, 1.2],
    "train/acc": [0.3, 0.5, 0.7],
    "val/acc": [0.25, 0.4, 0.55],
    "lr": [1e-3, 5e-4, 1e-4],
    "val/mae_items": [1.2, 0.9, 0.7],
}
WRONG = [("00104", 3, 2), ("00290", 4, 5), ("00569", 5, 4)]


class Sections(HTMLParser):
    """Text, <img> sources and every src/href of each <section id=...>, in document order."""

    def __init__(self, text):
        super().__init__()
        self.order, self.text, self.images, self.links, self.tags = [], {}, {}, [], set()
        self._current, self._depth = None, 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "section" and attrs.get("id"):
            self._current, self._depth = attrs["id"], 0
            self.order.append(self._current)
            self.text[self._current], self.images[self._current] = "", []
        elif self._current and tag == "section":
            self._depth += 1
        if self._current and tag == "img":
            self.images[self._current].append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "section" and self._current:
            if self._depth == 0:
                self._current = None
            else:
                self._depth -= 1

    def handle_data(self, data):
        if self._current:
            self.text[self._current] += data


def decode(uri):
    head, data = uri.split(",", 1)
    assert head in ("data:image/png;base64", "data:image/jpeg;base64"), head
    return Image.open(io.BytesIO(base64.b64decode(data)))


def write_tsv(path, name, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "timestamp\tstep\t" + name + "\n" + "".join(f"{1700000000000 + i}\t{i}\t{v}\n" for i, v in enumerate(values))
    )


def fabricate_training(root, wrapped=False):
    """What the train and evaluate stages leave in dvclive/, in dvclive's own layout, small."""
    train, evaluate = root / "dvclive/train", root / "dvclive/evaluate"
    for name, values in CURVES.items():
        write_tsv(train / "plots/metrics" / f"{name}.tsv", name.split("/")[-1], values)
    (train / "metrics.json").write_text(
        json.dumps(
            {
                "train": {"loss": 0.8, "acc": 0.7},
                "val": {"loss": 1.2, "acc": 0.55, "mae_items": 0.7},
                "lr": 1e-4,
                "step": 2,
            }
        )
    )
    (evaluate / "plots/sklearn").mkdir(parents=True)
    (evaluate / "metrics.json").write_text(
        json.dumps(
            {
                "test": {
                    "accuracy": 0.6875,
                    "mae": 0.3125,
                    "per_class": {"3": {"precision": 0.5, "recall": 0.5}},
                    "n": 16,
                    "calibration": {"before": {"ece": 0.21, "nll": 1.4}, "after": {"ece": 0.04, "nll": 1.1}},
                    "count_sets": {"coverage": 0.9375, "mean_set_size": 2.5},
                    "verify": {"threshold": 0.6, "right_accepted": 0.25, "false_accept_off_by_one": 0.05},
                }
            }
        )
    )
    (evaluate / "plots/custom").mkdir(parents=True)
    (evaluate / "plots/custom/reliability.json").write_text(
        json.dumps([{"bin": 0.5, "confidence": 0.52, "accuracy": 0.5, "bins": 10}])
    )
    (evaluate / "plots/custom/verify_tradeoff.json").write_text(
        json.dumps([{"threshold": t / 10, "false_accept": 1 - t / 10, "right_accepted": 1 - t / 20} for t in range(11)])
    )
    rows = [{"actual": a, "predicted": p} for (a, p), n in CONFUSION.items() for _ in range(n)]
    (evaluate / "plots/sklearn/confusion_matrix.json").write_text(
        json.dumps({"confusion_matrix": rows} if wrapped else rows)
    )
    folder = evaluate / "plots/images/misclassified"
    folder.mkdir(parents=True)
    for bin_id, true, pred in WRONG:
        img = Image.open(REAL_SAMPLE / "bin-images" / f"{bin_id}.jpg")
        img.thumbnail((256, 256))
        img.save(folder / f"{bin_id}_true{true}_pred{pred}.jpg")


def build(workdir, *args, check=True):
    """`python -m stages.report` in `workdir`, which may be a bare folder of inputs."""
    return call("stages.report", *args, cwd=workdir, check=check, PYTHONPATH=repo_pythonpath())


@pytest.fixture(scope="module")
def explored(tmp_path_factory, abid_bucket):
    """A project copy after the real fetch and explore stages (no training yet)."""
    b = abid_bucket
    project = make_project(
        tmp_path_factory.mktemp("report") / "proj",
        params={"fetch": {"file_list": "file_list.json", "endpoint_url": b.url}, "explore": {"size_bins": 15}},
    )
    b.write_file_list(project / "file_list.json", b.clean, b.real)
    call("stages.fetch", "--no-progress", cwd=project)
    call("stages.explore", cwd=project)
    return project


@pytest.fixture(scope="module")
def full(explored, tmp_path_factory):
    """The same project with train/evaluate outputs, and its report."""
    project = tmp_path_factory.mktemp("full") / "proj"
    clone(explored, project)
    fabricate_training(project)
    build(project)
    return project, (project / "reports/index.html").read_text()


@pytest.mark.slow
def test_full_report_has_every_section_with_its_content(full):
    project, text = full
    page = Sections(text)
    assert page.order == SECTION_IDS
    assert MISSING not in " ".join(" ".join(t.split()) for t in page.text.values())

    summary = json.loads((project / "data/explore/summary.json").read_text())
    assert f"n_bins{summary['n_bins']}" in page.text["summary"].replace(",", "")
    assert "test.accuracy0.6875" in page.text["summary"]
    assert "test.per_class.3precision 0.5 · recall 0.5" in page.text["summary"]
    assert "valloss 1.2 · acc 0.55 · mae_items 0.7" in page.text["summary"]

    explore = [decode(u) for u in page.images["exploration"]]
    assert len(explore) == 4 and all(im.format == "PNG" and im.width > 300 for im in explore)
    assert f"{summary['n_bins']:,} bins in {summary['n_classes']} classes" in page.text["exploration"]

    # one figure per metric name found by walking the folder, including one no code knows about
    assert len(page.images["training"]) == 4
    for metric in ("loss", "acc", "lr", "mae_items"):
        assert f"{metric} —" in page.text["training"]
    assert "train: 3 steps, last 0.8" in page.text["training"] and "val: 3 steps, last 1.2" in page.text["training"]

    assert "11 of 16 test bins counted right (accuracy 0.688)" in page.text["confusion"]
    assert len(page.images["confusion"]) == 1
    decisions = " ".join(page.text["decisions"].split())
    assert "ECE 0.21 as trained, 0.04 calibrated" in decisions and "for 0.9375 of the test bins" in decisions
    assert "accepts 0.25 of the right bins and 0.05 of the bins off by one item" in decisions
    assert len(page.images["decisions"]) == 1

    thumbs = [decode(u) for u in page.images["misclassified"]]
    assert len(thumbs) == len(WRONG) and all(max(im.size) <= 256 for im in thumbs)
    for bin_id, true, pred in WRONG:
        assert f"bin {bin_id}: true {true}, predicted {pred}" in page.text["misclassified"]


@pytest.mark.slow
def test_report_is_self_contained(full):
    _, text = full
    page = Sections(text)
    assert page.links and all(link.startswith(("data:", "#")) for link in page.links), [
        link[:60] for link in page.links if not link.startswith(("data:", "#"))
    ]
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert "http://" not in text and "https://" not in text and "url(" not in text


@pytest.mark.slow
def test_confusion_table_matches_the_rows(full):
    _, text = full
    table = text.split('<table class="confusion">')[1].split("</table>")[0]
    for actual in "12345":
        row = table.split(f"<tr><th>{actual}</th>")[1].split("</tr>")[0]
        cells = [int(c) for c in row.replace("</td>", "").split("<td>")[1:6]]
        assert cells == [CONFUSION.get((actual, p), 0) for p in "12345"]


@pytest.mark.slow
def test_after_explore_only_the_rest_says_not_available(explored, tmp_path):
    out = tmp_path / "index.html"
    proc = build(explored, "--out", str(out))
    assert "not available yet: training, confusion, decisions, misclassified" in proc.stdout
    page = Sections(out.read_text())
    assert page.order == SECTION_IDS
    text = {k: " ".join(v.split()) for k, v in page.text.items()}
    for sid in ("training", "confusion", "decisions", "misclassified"):
        assert MISSING in text[sid] and not page.images[sid]
    assert MISSING not in text["exploration"] and len(page.images["exploration"]) == 4
    assert text["summary"].count(MISSING) == 2  # training and test metrics; the dataset table is there


def test_an_empty_workspace_still_gets_a_page(tmp_path):
    proc = build(tmp_path, check=True)
    page = Sections((tmp_path / "reports/index.html").read_text())
    assert page.order == SECTION_IDS
    assert all(MISSING in " ".join(page.text[s].split()) for s in SECTION_IDS), proc.stdout


def test_confusion_matrix_in_both_dvclive_shapes(tmp_path):
    rows = [{"actual": a, "predicted": p} for (a, p), n in CONFUSION.items() for _ in range(n)]
    plain, wrapped = confusion_counts(rows), confusion_counts({"confusion_matrix": rows})
    assert plain == wrapped
    labels, matrix = plain
    assert labels == ["1", "2", "3", "4", "5"] and matrix[2] == [0, 2, 2, 0, 0] and sum(map(sum, matrix)) == 16
    assert confusion_counts([{"actual": 10, "predicted": 2}, {"actual": 2, "predicted": 2}])[0] == ["2", "10"]
    assert confusion_counts([]) == ([], [])
    with pytest.raises(DataError, match="lacks 'actual'"):
        confusion_counts([{"true": 1, "predicted": 1}])
    fabricate_training(tmp_path, wrapped=True)
    build(tmp_path)
    assert "11 of 16 test bins counted right" in (tmp_path / "reports/index.html").read_text()


def test_metrics_rows_keep_nested_names():
    assert table_rows(
        {"test": {"acc": 1, "per_class": {"1": {"recall": 0.5}}}, "size": {"min": 1, "max": 2}, "n": 3}
    ) == [("test.acc", 1), ("test.per_class.1", {"recall": 0.5}), ("size", {"min": 1, "max": 2}), ("n", 3)]


def test_empty_confusion_matrix_is_said_not_drawn(tmp_path):
    fabricate_training(tmp_path)
    (tmp_path / "dvclive/evaluate/plots/sklearn/confusion_matrix.json").write_text("[]")
    build(tmp_path)
    page = Sections((tmp_path / "reports/index.html").read_text())
    assert "holds no rows" in page.text["confusion"] and not page.images["confusion"]


def test_broken_input_is_a_one_line_error(tmp_path):
    fabricate_training(tmp_path)
    (tmp_path / "dvclive/evaluate/metrics.json").write_text('{"test": ')
    proc = build(tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "dvclive/evaluate/metrics.json is not valid JSON" in proc.stderr
    assert not (tmp_path / "reports/index.html").exists()


@pytest.mark.slow
def test_report_of_a_real_pipeline_run(trained_project, clone_project):
    """The contract with the train and evaluate stages: their real dvclive outputs fill every section."""
    project = clone_project(trained_project)
    set_params(project, {"explore": {"size_bins": 10}})
    call("stages.explore", cwd=project)
    proc = build(project)
    assert "not available" not in proc.stdout, proc.stdout
    page = Sections((project / "reports/index.html").read_text())
    assert MISSING not in " ".join(" ".join(t.split()) for t in page.text.values())
    live = project / "dvclive"
    metrics = {p.stem for p in (live / "train/plots/metrics").rglob("*.tsv")}
    assert len(page.images["training"]) == len(metrics) >= 2
    n_test = json.loads((live / "evaluate/metrics.json").read_text())["test"]["n"]
    assert f"of {n_test} test bins counted right" in page.text["confusion"]
    wrong = list((live / "evaluate/plots/images/misclassified").glob("*.jpg"))
    assert len(page.images["misclassified"]) == len(wrong)
    for path in wrong:
        bin_id, true, pred = path.stem.replace("_true", " ").replace("_pred", " ").split()
        assert f"bin {bin_id}: true {true}, predicted {pred}" in page.text["misclassified"]
    if browser.find_chromium():
        loaded = browser.load(project / "reports/index.html")
        assert loaded.console == [] and loaded.images_decoded == loaded.images_total > 0


# ---- in a real browser -------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    browser.find_chromium() is None,
    reason="chromium is not installed (`apt-get install chromium`; .ci/run installs it)",
)


@pytest.mark.slow
@needs_chromium
def test_report_renders_in_headless_chromium(full, tmp_path):
    project, _ = full
    page = project / "reports/index.html"
    loaded = browser.load(page)
    assert loaded.console == [], loaded.console  # no errors, no warnings, nothing logged
    # the figures of the sections before, the reliability diagram, and one per misclassified photo
    assert loaded.images_total == 4 + 4 + 1 + 1 + len(WRONG) and loaded.images_decoded == loaded.images_total
    rendered = Sections(loaded.dom)
    assert rendered.order == SECTION_IDS
    assert "11 of 16 test bins counted right" in rendered.text["confusion"]

    png = browser.screenshot(page, tmp_path / "report.png", size=(1280, 1800))
    shot = Image.open(png)
    assert shot.size == (1280, 1800)
    colours = shot.convert("RGB").resize((64, 90)).getcolors(64 * 90)
    assert colours and len(colours) > 50, "the screenshot looks blank"
    bottom = shot.convert("RGB").crop((0, 1400, 1280, 1800)).getcolors(1280 * 400)
    assert bottom and len(bottom) > 20, "the lower part of the screenshot was not painted"
    print(f"\nscreenshot for a human look: {png}")


@pytest.mark.slow
@needs_chromium
def test_browser_check_catches_a_broken_page(tmp_path):
    """The checks above would see a script error and a broken image (so their passing means something)."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><body><section id="summary">x</section><img src="nope.png">'
        "<script>undefinedFunction();</script></body></html>"
    )
    loaded = browser.load(bad)
    assert any("Uncaught ReferenceError" in text for text, _, _ in loaded.console)
    assert (loaded.images_decoded, loaded.images_total) == (0, 1)
