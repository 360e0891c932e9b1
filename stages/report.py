"""Stage `report`: build reports/index.html, one self-contained page about the workspace.

    python -m stages.report           # what `dvc repro report` runs

Sections: summary, exploration, training curves, test confusion matrix, misclassified photos.
A section whose stage has not run yet says so (see binsight/evaluate/html_report.py).
"""

import argparse
import re

from binsight.errors import one_line_errors
from binsight.evaluate.html_report import build_report, git_revision
from binsight.files import atomic_write_text


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--explore", default="data/explore", help="explore stage outputs (default: %(default)s)")
    parser.add_argument("--train", default="dvclive/train", help="training dvclive folder (default: %(default)s)")
    parser.add_argument(
        "--evaluate", default="dvclive/evaluate", help="evaluation dvclive folder (default: %(default)s)"
    )
    parser.add_argument("--out", default="reports/index.html", help="the HTML file (default: %(default)s)")
    parser.add_argument("--max-images", type=int, default=48, help="misclassified photos shown (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.max_images < 0:
        parser.error("--max-images must be 0 or more")

    text = build_report(args.explore, args.train, args.evaluate, args.max_images, revision=git_revision())
    atomic_write_text(args.out, text)
    missing = re.findall(r'<section id="(\w+)"><h2>[^<]*</h2><p class="missing">', text)
    print(
        f"report: {args.out} ({len(text) / 1024:.0f} KiB)"
        + (f"; not available yet: {', '.join(missing)}" if missing else "")
    )


if __name__ == "__main__":
    main()
