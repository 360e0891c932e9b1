"""Count the items in bin photos with a trained model.

    python -m binsight.predict photo.jpg                  # one image
    python -m binsight.predict data/raw/images --json     # every .jpg/.jpeg/.png in a folder, JSON lines
    curl -s https://.../bin.jpg | python -m binsight.predict -   # image bytes on stdin

Prints, per image, the predicted count, its probability and the probability of every count.
With --json, one object per line: {"path", "count", "probability", "probabilities": {"1": ..},
"model"}; "model" is the first 12 hex digits of the model file's sha256, as the server reports.
Images are decoded in parallel and run through the model in batches, on the GPU when there is one.
An unreadable image is reported on stderr and skipped; the exit status is then 2.
"""

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def format_line(path, res):
    scores = ", ".join(f"{c}: {p:.3f}" for c, p in res["probabilities"].items())
    return f"{path}: {res['count']} (p={res['probability']:.3f})  [{scores}]"


def chunks(items, size):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def predict_paths(predictor, paths, batch_size, workers):
    """Yield (path, result dict or None, error message or None) in input order."""

    def load(path):
        try:
            return predictor.tensor(read_bytes(path)), None
        except BadImage as exc:
            return None, str(exc)
        except OSError as exc:
            return None, exc.strerror or str(exc)

    with ThreadPoolExecutor(workers) as pool:  # PIL decodes with the GIL released
        for batch in chunks(paths, batch_size):
            loaded = list(pool.map(load, batch))
            results = iter(predictor.predict_tensors([t for t, err in loaded if err is None]))
            for path, (_, err) in zip(batch, loaded):
                yield path, (None if err else next(results)), err


@one_line_errors
def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="binsight predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders of images, or - for stdin")
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

    paths = expand_inputs(args.paths)
    if not paths:
        raise DataError(f"no .jpg, .jpeg or .png images in {' '.join(args.paths)}")
    require_model_file(args.model)
    from binsight.inference import Predictor  # torch: seconds to import, so only once the input is known good

    predictor = Predictor(args.model, args.device, tta=args.tta)
    failed = 0
    workers = min(8, os.cpu_count() or 1)
    try:
        for path, res, err in predict_paths(predictor, paths, args.batch_size, workers):
            if err:
                failed += 1
                print(f"error: {path}: {err}", file=sys.stderr)
            elif args.json:
                print(json.dumps({"path": path, **res, "model": predictor.version}))
            else:
                print(format_line(path, res))
            sys.stdout.flush()
    except BrokenPipeError:  # `| head`: stop quietly, like other command-line tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    if failed:
        raise DataError(f"{failed} of {len(paths)} images could not be read")


if __name__ == "__main__":
    main()
