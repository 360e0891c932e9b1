"""Check that bins hold the quantity expected of them: accept, or a person reviews.

    binsight verify checks.csv                 # a CSV with the columns image and expected
    binsight verify checks.jsonl --json        # JSON lines {"image": ..., "expected": 3}; JSON lines out
    binsight verify checks.csv --max-false-accept 0.01

`image` is a photo's path (relative to the file's folder or absolute; JPEG or PNG) or an s3:// URL; `expected`
the number of items the bin should hold. For each row: P(count = expected) under the model's calibrated
probabilities, the count set (the counts that hold the true one at the model's coverage, e.g. {3, 4}) and the
verdict: accept when P(count = expected) reaches the threshold fitted on the val split, so that at most
verify.max_false_accept of the bins whose quantity is off (by one item, as the model file says) are accepted;
review otherwise, and always for a quantity the model does not count (7 for a model of 1-5). --coverage and
--max-false-accept move the thresholds, recomputed from the val probabilities the model file keeps.

A row with no image, a missing or unreadable image, or an expected quantity that is not a whole number of
items is named on stderr and skipped; the other rows are still checked, and the exit status is then 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from binsight.errors import DataError, check_device_name, one_line_errors, require_model_file
from binsight.verify.quantity_check import BadExpectation, parse_expected

IMAGE_KEYS = ("image", "path", "url")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The file's rows as dicts (CSV with a header, or JSON lines), each with its line number under "line"."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read it ({exc})") from None
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = {"error": "not a JSON object"}
            rows.append({**(row if isinstance(row, dict) else {"error": "not a JSON object"}), "line": number})
        return rows
    if path.suffix.lower() != ".csv":
        raise DataError(f"{path}: give a .csv (columns image, expected) or a .jsonl file")
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "expected" not in reader.fieldnames or not set(IMAGE_KEYS) & set(reader.fieldnames):
        raise DataError(f"{path}: the header must name the columns image and expected (found {reader.fieldnames})")
    return [{**row, "line": number} for number, row in enumerate(reader, 2)]


def checked_rows(rows: list[dict[str, Any]], folder: Path) -> list[tuple[int, str, int | None, str | None]]:
    """-> (line, image, expected or None, what is wrong or None) per row; local paths made absolute."""
    out = []
    for row in rows:
        image = next((str(row[k]).strip() for k in IMAGE_KEYS if row.get(k) not in (None, "")), "")
        problem = row.get("error")
        expected = None
        if problem is None and not image:
            problem = "no image"
        if problem is None:
            try:
                expected = parse_expected(row.get("expected"))
            except BadExpectation as exc:
                problem = str(exc)
        if image and not image.startswith("s3://") and not Path(image).is_absolute():
            image = str(folder / image)
        out.append((row["line"], image, expected, problem))
    return out


def image_reader(image: str, client_factory: Callable[[], Any]) -> Callable[[], bytes]:
    if image.startswith("s3://"):
        bucket, _, key = image[len("s3://") :].partition("/")
        return lambda: client_factory().get_object(Bucket=bucket, Key=key)["Body"].read()
    return partial(Path(image).read_bytes)


def format_line(image: str, verdict: dict[str, Any]) -> str:
    sets = "{" + ", ".join(map(str, verdict["count_set"])) + "}"
    return f"{image}: {verdict['verdict']} (expected {verdict['expected']}; count set {sets}; {verdict['reason']})"


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="binsight verify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("file", type=Path, help="a .csv (columns image, expected) or .jsonl file of checks")
    parser.add_argument("--model", default="models/model.pt", help="a calibrated model file (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per row")
    parser.add_argument("--coverage", type=float, default=None, help="count sets' coverage (default: the model's)")
    parser.add_argument(
        "--max-false-accept", type=float, default=None, help="share of wrong quantities accepted (default: the model's)"
    )
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"), help="an S3-compatible server")
    parser.add_argument("--signed", action="store_true", help="sign S3 requests with your AWS credentials")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the GPU when there is one)")
    args = parser.parse_args(argv)
    if args.coverage is not None and not 0.5 <= args.coverage < 1:
        parser.error("--coverage must be from 0.5 to below 1")
    if args.max_false_accept is not None and not 0 < args.max_false_accept < 1:
        parser.error("--max-false-accept must be between 0 and 1")
    check_device_name(args.device)
    rows = checked_rows(read_rows(args.file), args.file.resolve().parent)
    require_model_file(args.model)
    from binsight.data.s3_client import make_client
    from binsight.serve.predict_command import predict_sources
    from binsight.serve.predictor import Predictor  # torch: seconds to import, so only once the input is read

    predictor = Predictor(args.model, args.device, coverage=args.coverage, max_false_accept=args.max_false_accept)
    if predictor.calibration is None:
        raise DataError(f"{args.model} is not calibrated: use models/model.pt, which `dvc repro evaluate` writes")
    clients: list[Any] = []

    def client() -> Any:
        if not clients:
            clients.append(make_client(endpoint_url=args.endpoint_url, anonymous=not args.signed))
        return clients[0]

    failed = 0
    for line, _, _, problem in rows:
        if problem:
            failed += 1
            print(f"error: {args.file}:{line}: {problem}", file=sys.stderr)
    good = [(line, image, expected) for line, image, expected, problem in rows if not problem]
    items = [((line, image, expected), image_reader(image, client)) for line, image, expected in good]
    workers = min(32, 4 * (os.cpu_count() or 1))
    for (line, image, expected), res, err in predict_sources(predictor, items, args.batch_size, workers):
        if err:
            failed += 1
            print(f"error: {args.file}:{line}: {image}: {err}", file=sys.stderr)
            continue
        verdict = predictor.verdict(res, expected)
        if args.json:
            print(json.dumps({"image": image, **verdict, "count": res["count"], "model": predictor.version}))
        else:
            print(format_line(image, verdict))
        sys.stdout.flush()
    if failed:
        raise DataError(f"{failed} of {len(rows)} rows could not be checked (named above); the others were")


if __name__ == "__main__":
    main()
