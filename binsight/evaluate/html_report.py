"""The HTML report: one self-contained page about the current workspace, readable offline.

Sections: summary (metrics tables), exploration (data/explore), training (the curves under
dvclive/train/plots/metrics), confusion (the test confusion matrix) and misclassified (test photos
the model counted wrong). A section whose inputs do not exist yet says so instead of failing, so
the page already works after `dvc repro explore`. Figures are matplotlib PNGs and photos JPEG
thumbnails, embedded as data: URIs: no script, no external CSS, fonts or images.
"""

import base64
import csv
import html
import io
import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no display needed; must come before pyplot
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

from binsight.errors import DataError  # noqa: E402

SECTIONS = (
    ("summary", "Summary"),
    ("exploration", "Data exploration"),
    ("training", "Training"),
    ("confusion", "Confusion matrix"),
    ("decisions", "Calibration and verification"),
    ("misclassified", "Misclassified test images"),
)
MISCLASSIFIED_NAME = re.compile(r"^(?P<id>.+)_true(?P<true>[^_]+)_pred(?P<pred>[^_]+)$")
STYLE = {
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "axes.prop_cycle": matplotlib.cycler(color=plt.get_cmap("tab10").colors),  # type: ignore[attr-defined]
}
FIGSIZE = (5.4, 3.5)


# ---- inputs -----------------------------------------------------------------------------------


def read_json(path):
    """Parsed JSON, or None when the file does not exist (a stage that has not run yet)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None


def read_table(path, delimiter=","):
    """Rows of a CSV/TSV as dicts, or None when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def number(value, where):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {value!r} is not a number") from None


def table_rows(obj, prefix="", width=6):
    """{"test": {"acc": 1, "per_class": {"1": {...}}}} -> [("test.acc", 1), ("test.per_class.1", {...})]:
    nested names joined by dots, but a small dict of plain values stays one row (min/median/mean/max
    of a summary, precision/recall of a class), so a metrics table fits a screen."""
    if not isinstance(obj, dict):
        return [(prefix or "value", obj)]
    out = []
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if (
            isinstance(value, dict)
            and value
            and len(value) <= width
            and not any(isinstance(v, (dict, list)) for v in value.values())
        ):
            out.append((name, value))
        elif isinstance(value, dict):
            out.extend(table_rows(value, name, width))
        else:
            out.append((name, value))
    return out


def read_curves(folder):
    """Every dvclive TSV under `folder` -> {metric: {series: (steps, values)}}.

    train/loss.tsv and val/loss.tsv become metric "loss" with series "train" and "val"; a TSV at the
    top (lr.tsv) is its own series. The value column is the one named like the file, else the last."""
    folder = Path(folder)
    curves = {}
    for path in sorted(folder.rglob("*.tsv")) if folder.is_dir() else ():
        rows = read_table(path, delimiter="\t")
        if not rows:
            continue
        name = path.stem
        others = [c for c in rows[0] if c not in ("timestamp", "step")]
        if name not in rows[0] and not others:
            raise DataError(f"{path} has no value column, only {list(rows[0])}")
        column = name if name in rows[0] else others[-1]
        steps = [number(r["step"], path) if "step" in r else i for i, r in enumerate(rows)]
        values = [number(r[column], path) for r in rows]
        series = path.parent.relative_to(folder).as_posix()
        curves.setdefault(name, {})[name if series == "." else series] = (steps, values)
    return curves


def _label_key(label):
    try:
        return (0, float(label), "")
    except ValueError:
        return (1, 0.0, label)


def confusion_counts(obj, where="confusion matrix"):
    """dvclive's confusion data, a list of {"actual", "predicted"} rows or {"<name>": [rows]}, ->
    (labels, matrix) with matrix[i][j] = how many of label i were predicted as label j."""
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{where}: expected a list of {{actual, predicted}} rows or one key holding it")
        obj = lists[0]
    if not isinstance(obj, list):
        raise DataError(f"{where}: expected a list of {{actual, predicted}} rows")
    pairs = []
    for row in obj:
        if not isinstance(row, dict) or "actual" not in row or "predicted" not in row:
            raise DataError(f"{where}: row {row!r} lacks 'actual' or 'predicted'")
        pairs.append((str(row["actual"]), str(row["predicted"])))
    labels = sorted({a for a, _ in pairs} | {p for _, p in pairs}, key=_label_key)
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for actual, predicted in pairs:
        matrix[index[actual]][index[predicted]] += 1
    return labels, matrix


def misclassified_images(folder):
    """[(path, {"id", "true", "pred"} or None)] for the JPEG/PNG files in `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    out = []
    for p in paths:
        m = MISCLASSIFIED_NAME.match(p.stem)
        out.append((p, m.groupdict() if m else None))
    return out


# ---- rendering --------------------------------------------------------------------------------


def png_uri(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def thumbnail_uri(path, size=256):
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=85)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} is not a readable image: {exc}") from None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def figure_html(uri, caption, alt):
    return f'<figure><img src="{uri}" alt="{html.escape(alt)}"><figcaption>{caption}</figcaption></figure>'


def missing_html(needs):
    return (
        f'<p class="missing">not available yet: run <code>dvc repro</code> (needs {html.escape(", ".join(needs))})</p>'
    )


def fmt(value):
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(json.dumps(value) if isinstance(value, (list, dict)) else str(value))


def fmt_cell(value):
    if isinstance(value, dict):
        return " · ".join(f'<span class="k">{html.escape(str(k))}</span> {fmt(v)}' for k, v in value.items())
    return fmt(value)


def metrics_table(title, source, obj):
    head = f'<h3>{html.escape(title)} <span class="src">{html.escape(str(source))}</span></h3>'
    if obj is None:
        return f'<div class="card">{head}{missing_html([str(source)])}</div>'
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{fmt_cell(v)}</td></tr>" for k, v in table_rows(obj))
    return f'<div class="card">{head}<table class="metrics">{rows}</table></div>'


def summary_section(explore, train, evaluate):
    return (
        '<div class="cards">'
        + "".join(
            [
                metrics_table("Test", evaluate / "metrics.json", read_json(evaluate / "metrics.json")),
                metrics_table("Training", train / "metrics.json", read_json(train / "metrics.json")),
                metrics_table("Dataset", explore / "summary.json", read_json(explore / "summary.json")),
            ]
        )
        + "</div>"
    )


def exploration_figures(explore):
    """(uri, caption, alt) per explore CSV that exists."""
    figs = []
    counts = read_table(explore / "class_counts.csv")
    if counts:
        labels = [r["label"] for r in counts]
        bins = [int(number(r["bins"], explore / "class_counts.csv")) for r in counts]
        fig, ax = plt.subplots(figsize=FIGSIZE)
        bars = ax.barh(labels, bins, color="tab:blue")
        ax.bar_label(bars, padding=2)
        ax.set(title="Bins per item count", xlabel="bins", ylabel="items in the bin (label)")
        ax.invert_yaxis()
        figs.append((png_uri(fig), f"{sum(bins):,} bins in {len(bins)} classes", "class counts"))
    sizes = read_table(explore / "file_sizes.csv")
    if sizes:
        lo = [number(r["from_bytes"], explore / "file_sizes.csv") / 1024 for r in sizes]
        hi = [number(r["to_bytes"], explore / "file_sizes.csv") / 1024 for r in sizes]
        n = [int(number(r["bins"], explore / "file_sizes.csv")) for r in sizes]
        fig, ax = plt.subplots(figsize=FIGSIZE)
        ax.bar(lo, n, width=[b - a for a, b in zip(lo, hi)], align="edge", color="tab:orange", edgecolor="white")
        ax.set(title="JPEG file size", xlabel="KiB", ylabel="bins")
        figs.append((png_uri(fig), f"histogram of {sum(n):,} files, {len(n)} equal-width bins", "file sizes"))
    res = read_table(explore / "resolutions.csv")
    if res:
        fig, ax = plt.subplots(figsize=FIGSIZE)
        by_label = {}
        for r in res:
            by_label.setdefault(r["label"], []).append((int(r["width"]), int(r["height"])))
        for label in sorted(by_label, key=_label_key):
            w, h = zip(*by_label[label])
            ax.scatter(w, h, s=12, alpha=0.7, label=label)
        ax.legend(title="label", fontsize=7, title_fontsize=7, ncols=2)
        ax.set(title="Image width × height", xlabel="width (px)", ylabel="height (px)")
        figs.append((png_uri(fig), f"{len(res):,} images", "image resolutions"))
    items = read_table(explore / "items.csv")
    if items:
        known = [
            (float(r["volume_in3"]), float(r["weight_lb"])) for r in items if r.get("volume_in3") and r.get("weight_lb")
        ]
        fig, ax = plt.subplots(figsize=FIGSIZE)
        if known:
            v, w = zip(*known)
            ax.scatter(v, w, s=10, alpha=0.6, color="tab:green")
            ax.set(xscale="log", yscale="log")
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set(title="Products: volume vs weight", xlabel="volume (in³)", ylabel="weight (lb)")
        figs.append(
            (
                png_uri(fig),
                f"{len(known):,} of {len(items):,} products have all measurements "
                "(the rest have null values in the metadata)",
                "product measurements",
            )
        )
    return figs


def exploration_section(explore):
    figs = exploration_figures(explore)
    if not figs:
        return missing_html([f"{explore}/*.csv"])
    return '<div class="grid">' + "".join(figure_html(*f) for f in figs) + "</div>"


def training_section(train):
    folder = train / "plots" / "metrics"
    curves = read_curves(folder)
    if not curves:
        return missing_html([f"{folder}/**/*.tsv"])
    first = ("loss", "acc", "accuracy")  # the usual pair leads, anything else follows by name
    order = sorted(curves, key=lambda m: (first.index(m) if m in first else len(first), m))
    figs = []
    for metric in order:
        fig, ax = plt.subplots(figsize=FIGSIZE)
        for series, (steps, values) in sorted(curves[metric].items()):
            ax.plot(steps, values, marker="o" if len(steps) <= 30 else None, markersize=3, label=series)
        ax.set(title=metric, xlabel="epoch", ylabel=metric)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.legend(fontsize=7)
        caption = ", ".join(f"{s}: {len(v[1])} steps, last {v[1][-1]:.4g}" for s, v in sorted(curves[metric].items()))
        figs.append(figure_html(png_uri(fig), html.escape(f"{metric} — {caption}"), f"training curve {metric}"))
    return '<div class="grid">' + "".join(figs) + "</div>"


def confusion_section(evaluate):
    path = evaluate / "plots" / "sklearn" / "confusion_matrix.json"
    obj = read_json(path)
    if obj is None:
        return missing_html([str(path)])
    labels, matrix = confusion_counts(obj, str(path))
    if not labels:
        return f"<p>{html.escape(str(path))} holds no rows: was the test split empty?</p>"
    total = sum(map(sum, matrix))
    correct = sum(matrix[i][i] for i in range(len(labels)))
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    ax.imshow(matrix, cmap="Blues")
    ax.grid(False)
    peak = max(max(row) for row in matrix) if total else 0
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(
                j, i, str(count), ha="center", va="center", fontsize=8, color="white" if count > peak / 2 else "black"
            )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(title="Test confusion matrix", xlabel="predicted count", ylabel="true count")
    accuracy = correct / total if total else 0.0
    head = (
        "<tr><th>true \\ predicted</th>"
        + "".join(f"<th>{html.escape(p)}</th>" for p in labels)
        + "<th>recall</th></tr>"
    )
    body = "".join(
        f"<tr><th>{html.escape(a)}</th>"
        + "".join(f"<td>{c}</td>" for c in row)
        + f"<td>{(row[i] / sum(row) if sum(row) else 0):.3f}</td></tr>"
        for i, (a, row) in enumerate(zip(labels, matrix))
    )
    table = f'<table class="confusion">{head}{body}</table>'
    text = f"<p>{correct:,} of {total:,} test bins counted right (accuracy {accuracy:.3f}).</p>"
    return (
        '<div class="grid">'
        + figure_html(png_uri(fig), "rows: true count, columns: predicted count", "confusion matrix")
        + f"<div>{text}{table}</div></div>"
    )


def custom_rows(evaluate, name):
    """dvclive's rows of a custom plot (a list, or {name: list}), or None when the file is not there."""
    obj = read_json(evaluate / "plots" / "custom" / f"{name}.json")
    if isinstance(obj, dict):
        obj = next(iter(obj.values()), None)
    return obj if isinstance(obj, list) else None


def decisions_section(evaluate):
    """The reliability diagram and the verify trade-off, with the numbers they stand for."""
    reliability, tradeoff = custom_rows(evaluate, "reliability"), custom_rows(evaluate, "verify_tradeoff")
    if reliability is None or tradeoff is None:
        return missing_html(
            [str(evaluate / "plots" / "custom" / f"{n}.json") for n in ("reliability", "verify_tradeoff")]
        )
    test = (read_json(evaluate / "metrics.json") or {}).get("test", {})
    before, after = test.get("calibration", {}).get("before", {}), test.get("calibration", {}).get("after", {})
    sets, verify = test.get("count_sets", {}), test.get("verify", {})
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 3.6))
    left.plot([0, 1], [0, 1], color="grey", linestyle=":", label="honest")
    left.plot(
        [number(r["confidence"], "reliability") for r in reliability],
        [number(r["accuracy"], "reliability") for r in reliability],
        marker="o",
        label="calibrated model",
    )
    left.set(title="Reliability on test", xlabel="top probability", ylabel="share right", xlim=(0, 1), ylim=(0, 1))
    left.legend()
    right.plot(
        [number(r["false_accept"], "verify_tradeoff") for r in tradeoff],
        [number(r["right_accepted"], "verify_tradeoff") for r in tradeoff],
    )
    if verify:
        right.scatter(
            [verify.get("false_accept_off_by_one", 0)], [verify.get("right_accepted", 0)], color="C3", zorder=3
        )
    right.set(title="Verify on test", xlabel="wrong quantities accepted", ylabel="right bins accepted")
    text = (
        f"<p>ECE {fmt(before.get('ece'))} as trained, {fmt(after.get('ece'))} calibrated (NLL {fmt(before.get('nll'))}"
        f" -> {fmt(after.get('nll'))}). Count sets hold the true count for {fmt(sets.get('coverage'))} of the test "
        f"bins, {fmt(sets.get('mean_set_size'))} counts on average. At the threshold fitted on val "
        f"({fmt(verify.get('threshold'))}), verify accepts {fmt(verify.get('right_accepted'))} of the right bins and "
        f"{fmt(verify.get('false_accept_off_by_one'))} of the bins off by one item (red dot).</p>"
    )
    return (
        '<div class="grid">'
        + figure_html(png_uri(fig), "left: on the diagonal = honest; right: every threshold", "calibration")
        + f"<div>{text}</div></div>"
    )


def misclassified_section(evaluate, max_images):
    folder = evaluate / "plots" / "images" / "misclassified"
    images = misclassified_images(folder)
    if not images:
        return missing_html([f"{folder}/*.jpg"])
    shown = images[:max_images]
    figs = []
    for path, info in shown:
        caption = (
            f"bin {html.escape(info['id'])}: true <b>{html.escape(info['true'])}</b>, "
            f"predicted <b>{html.escape(info['pred'])}</b>"
            if info
            else html.escape(path.stem)
        )
        figs.append(figure_html(thumbnail_uri(path), caption, f"misclassified {path.stem}"))
    note = f"<p>Showing {len(shown)} of {len(images)} images from <code>{html.escape(str(folder))}</code>.</p>"
    return note + '<div class="photos">' + "".join(figs) + "</div>"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#b8c0cc;font-size:13px}
nav{background:#283042;padding:8px 32px} nav a{color:#dfe6f0;margin-right:18px;text-decoration:none;font-size:14px}
main{max-width:1240px;margin:0 auto;padding:12px 24px 40px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);margin:18px 0;padding:8px 20px 16px}
h2{font-size:18px;border-bottom:1px solid #e3e6eb;padding-bottom:6px}
h3{font-size:14px;margin:6px 0} .src{color:#7a8394;font-weight:normal;font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:12px 28px;align-items:flex-start} .card{flex:0 1 auto;min-width:300px}
table.metrics td{white-space:nowrap}
table{border-collapse:collapse;font-size:13px} th,td{padding:3px 10px;border-bottom:1px solid #eceef2}
th{text-align:left;font-weight:500;white-space:nowrap} td{text-align:right;font-variant-numeric:tabular-nums}
table.metrics{width:100%} table.confusion th,table.confusion td{text-align:center}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:16px;align-items:start}
.photos{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:12px}
figure{margin:0} figure img{max-width:100%;height:auto;display:block}
.photos img{width:100%;height:200px;object-fit:contain;background:#111;border-radius:4px}
figcaption{font-size:12px;color:#4a5263;margin-top:4px}
.missing{color:#9a5b00;background:#fff6e5;border-left:4px solid #f0a020;padding:8px 12px}
.k{color:#7a8394}
code{background:#eef0f4;padding:1px 4px;border-radius:3px}
"""


def git_revision():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def page(bodies, generated, revision=None):
    """The whole HTML document from {section id: inner HTML}."""
    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title in SECTIONS)
    sections = "".join(
        f'<section id="{sid}"><h2>{html.escape(title)}</h2>{bodies[sid]}</section>' for sid, title in SECTIONS
    )
    where = f" · workspace at commit {html.escape(revision)}" if revision else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>binsight report</title><style>{CSS}</style></head><body>"
        f"<header><h1>binsight: counting items in Amazon bin photos</h1>"
        f"<p>Report generated {html.escape(generated)}{where}</p></header>"
        f"<nav>{nav}</nav><main>{sections}</main></body></html>\n"
    )


def build_report(explore, train, evaluate, max_images=48, generated=None, revision=None):
    explore, train, evaluate = Path(explore), Path(train), Path(evaluate)
    generated = generated or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with plt.rc_context(STYLE):
        bodies = {
            "summary": summary_section(explore, train, evaluate),
            "exploration": exploration_section(explore),
            "training": training_section(train),
            "confusion": confusion_section(evaluate),
            "decisions": decisions_section(evaluate),
            "misclassified": misclassified_section(evaluate, max_images),
        }
    return page(bodies, generated, revision)
