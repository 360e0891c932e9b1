"""Count the items in bin photos with a trained model.

    binsight predict photo.jpg                            # one image
    binsight predict data/raw/images --json               # every .jpg/.jpeg/.png in a folder, JSON lines
    curl -s https://.../bin.jpg | binsight predict -      # image bytes on stdin
    binsight predict s3://aft-vbi-pds/bin-images/ --out counts.csv      # a whole bucket prefix
    binsight predict data/shards --out counts.jsonl       # a shard set (its index.json's every split)

Prints, per image, the predicted count, its probability and the probability of every count, calibrated on
the val split by the evaluate stage, and the count set: the counts that hold the true one at the model's
coverage (verify.coverage, e.g. 90 %: "set {3, 4}"). With --json, one object per line: {"path", "count",
"probability", "probabilities": {"1": ..}, "count_set", "model"}; "model" is the first 12 hex digits of the
model file's sha256, as the server reports.
Images are read and decoded in parallel and run through the model in batches, on the GPU when there is
one. With --out, results go to a CSV (.csv) or JSON-lines (.jsonl) file as they come, and a rerun skips
every image the file already holds: a killed run over a million images resumes where it stopped.
An unreadable image is reported on stderr and skipped; the exit status is then 2.
"""

import argparse
import csv
import io
import itertools
import json
import os
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

from binsight.errors import BadImage, DataError, check_device_name, one_line_errors, require_model_file

SUFFIXES = {".jpg", ".jpeg", ".png"}


def expand_inputs(paths):
    """Command-line paths -> a list of image paths ("-" = stdin), folders expanded to their images."""
    out = []
    for raw in paths:
        if raw == "-":
            out.append("-")
            continue
        path = Path(raw)
        if path.is_dir():
            out += sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif path.is_file():
            out.append(raw)
        else:
            raise DataError(f"{raw} not found: give image files, a folder of images, or - for stdin")
    if out.count("-") > 1:
        raise DataError("stdin (-) can be read only once")
    return out


def read_bytes(path):
    return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()


def s3_images(url, client):
    """s3://bucket/prefix -> (url of each image under it, a reader of its bytes), listed page by page."""
    parsed = urlparse(url)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")

    def get(key):
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()

    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for obj in page.get("Contents", ()):
            key = obj["Key"]
            if Path(key).suffix.lower() in SUFFIXES:
                yield (
                    f"s3://{bucket}/{key}",
                    partial(get, key),
                )


def shard_images(folder):
    """A shard set (folder with index.json) -> (shard/member name, a reader of its bytes), shard by shard."""
    from binsight.data.training_shards import read_index

    index = read_index(folder)
    for entries in index["splits"].values():
        for entry in entries:
            with tarfile.open(Path(folder) / entry["file"]) as tar:
                for member in tar:
                    if member.name.endswith(".jpg"):
                        data = tar.extractfile(member).read()
                        yield f"{entry['file']}/{member.name}", (lambda d=data: d)


def sources(paths, client_factory):
    """Command-line inputs -> an iterator of (name, reader) pairs: files, folders, stdin, S3 prefixes, shard sets."""
    local = []
    for raw in paths:
        if raw.startswith("s3://"):
            yield from s3_images(raw, client_factory())
        elif raw != "-" and (Path(raw) / "index.json").is_file():
            yield from shard_images(raw)
        else:
            local.append(raw)
    for path in expand_inputs(local) if local else ():
        yield path, partial(read_bytes, path)


class ResultFile:
    """Results appended to a .csv or .jsonl file as they come; the names it already holds are skipped."""

    def __init__(self, path, names, with_sets=False):
        self.path, self.csv, self.with_sets = Path(path), str(path).endswith(".csv"), with_sets
        if not (self.csv or str(path).endswith((".jsonl", ".json"))):
            raise DataError(f"--out {path}: give a .csv or .jsonl file")
        self.done = self._read_done()
        self.names = names
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.file = open(self.path, "a", newline="")
        self.writer = csv.writer(self.file) if self.csv else None
        if new and self.csv:
            sets = ["count_set"] if with_sets else []
            self.writer.writerow(["path", "count", "class", "probability", "model", *(f"p_{n}" for n in names), *sets])

    def _read_done(self):
        if not self.path.exists():
            return set()
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):  # a line torn by a kill: drop it, its image is predicted again
            with open(self.path, "r+b") as f:
                f.truncate(cut)
        text = data[:cut].decode()
        if self.csv:
            return {row["path"] for row in csv.DictReader(io.StringIO(text))}
        return {json.loads(line)["path"] for line in text.splitlines() if line.strip()}

    def write(self, name, res, version):
        if self.csv:
            probs = [res["probabilities"][n] for n in self.names]
            row = [name, res["count"], res["class"], res["probability"], version, *probs]
            if self.with_sets:
                row.append(" ".join(map(str, res.get("count_set", []))))
            self.writer.writerow(row)
        else:
            self.file.write(json.dumps({"path": name, **res, "model": version}) + "\n")

    def close(self):
        self.file.close()


def format_line(path, res):
    scores = ", ".join(f"{c}: {p:.3f}" for c, p in res["probabilities"].items())
    sets = "  set {" + ", ".join(map(str, res["count_set"])) + "}" if "count_set" in res else ""
    return f"{path}: {res['count']} (p={res['probability']:.3f}){sets}  [{scores}]"


def chunks(items, size):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def predict_paths(predictor, paths, batch_size, workers):
    """Yield (path, result dict or None, error message or None) in input order."""
    yield from predict_sources(predictor, ((p, partial(read_bytes, p)) for p in paths), batch_size, workers)


def predict_sources(predictor, items, batch_size, workers):
    """(name, reader) pairs -> (name, result dict or None, error message or None), in order, a batch
    at a time: the next batch is read and decoded by the threads while the model runs this one."""

    def load(item):
        try:
            return predictor.tensor(item[1]()), None
        except BadImage as exc:
            return None, str(exc)
        except OSError as exc:
            return None, exc.strerror or str(exc)
        except Exception as exc:  # noqa: BLE001 - an S3 error after botocore's retries: name it, go on
            return None, f"{type(exc).__name__}: {exc}"

    items = iter(items)
    with ThreadPoolExecutor(workers) as pool:  # PIL decodes with the GIL released
        batch = list(itertools.islice(items, batch_size))
        pending = [pool.submit(load, item) for item in batch]
        while batch:
            following = list(itertools.islice(items, batch_size))
            loaded = [f.result() for f in pending]
            pending = [pool.submit(load, item) for item in following]
            results = iter(predictor.predict_tensors([t for t, err in loaded if err is None]))
            for (name, _), (_, err) in zip(batch, loaded):
                yield name, (None if err else next(results)), err
            batch = following


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="binsight predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="image files, folders of images, - for stdin, s3://bucket/prefix/, or a shard folder (index.json)",
    )
    parser.add_argument("--out", default=None, help="write results to this .csv or .jsonl file; a rerun resumes it")
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"), help="an S3-compatible server")
    parser.add_argument("--signed", action="store_true", help="sign S3 requests with your AWS credentials")
    parser.add_argument(
        "--model", default="models/model.pt", help="a model file from the train stage (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the GPU when there is one)")
    parser.add_argument(
        "--tta",
        choices=("none", "flips", "dihedral"),
        default=None,
        help="test-time augmentation: average over flipped/rotated views (default: what the model "
        "file says, i.e. what evaluate used; each view costs one more forward pass)",
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    check_device_name(args.device)

    local = [p for p in args.paths if not p.startswith("s3://") and not (Path(p) / "index.json").is_file()]
    if local and not expand_inputs(local):
        raise DataError(f"no .jpg, .jpeg or .png images in {' '.join(local)}")
    require_model_file(args.model)
    from binsight.data.s3_client import make_client
    from binsight.serve.predictor import Predictor  # torch: seconds to import, so only once the input is known good

    predictor = Predictor(args.model, args.device, tta=args.tta)
    out = ResultFile(args.out, predictor.names, predictor.calibration is not None) if args.out else None
    items = sources(args.paths, lambda: make_client(endpoint_url=args.endpoint_url, anonymous=not args.signed))
    if out is not None:
        items = ((name, reader) for name, reader in items if name not in out.done)
    failed = total = 0
    workers = min(32, 4 * (os.cpu_count() or 1))  # S3 reads wait on the network more than on the cores
    try:
        for path, res, err in predict_sources(predictor, items, args.batch_size, workers):
            total += 1
            if err:
                failed += 1
                print(f"error: {path}: {err}", file=sys.stderr)
            elif out is not None:
                out.write(path, res, predictor.version)
            elif args.json:
                print(json.dumps({"path": path, **res, "model": predictor.version}))
            else:
                print(format_line(path, res))
            sys.stdout.flush()
    except BrokenPipeError:  # `| head`: stop quietly, like other command-line tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    finally:
        if out is not None:
            out.close()
    if out is not None:
        print(f"predict: {total - failed} images scored -> {args.out} ({len(out.done)} there before)")
    if failed:
        raise DataError(f"{failed} of {total} images could not be read")


if __name__ == "__main__":
    main()
