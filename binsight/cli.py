"""`binsight`: the commands that are not DVC stages.

    binsight list s3://aft-vbi-pds/ --out abid/all_bins.json   # a file list of every bin (see --help)
    binsight predict photo.jpg            # count the items in photos (see `binsight predict --help`)
    binsight serve --model models/model.pt  # HTTP server (see `binsight serve --help`)
    binsight tune --trials 20             # Bayesian search, every trial a DVC experiment
    binsight recipe notebook              # `dvc exp run` with a named recipe (notebook, gpu, cpu-scratch)

Each is also `python -m binsight.<command>`. The pipeline itself runs with `dvc repro`.
"""

import importlib
import sys

COMMANDS = {
    "list": "build a file list from a bucket, a prefix or a local copy",
    "predict": "count the items in photos with a trained model",
    "serve": "serve a trained model over HTTP",
    "tune": "Bayesian hyper-parameter search over DVC experiments",
    "recipe": "run a named recipe (notebook, gpu, cpu-scratch) as a DVC experiment",
}

MODULES = {"recipe": "recipes", "list": "listing"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        usage = "\n".join(f"  {name:<8} {what}" for name, what in COMMANDS.items())
        asked_for_help = bool(argv) and argv[0] in ("-h", "--help")
        print(f"{__doc__}\ncommands:\n{usage}", file=sys.stdout if asked_for_help else sys.stderr)
        if argv and not asked_for_help:
            print(f"binsight: unknown command {argv[0]!r}: expected one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 0 if asked_for_help else 2
    module = importlib.import_module(f"binsight.{MODULES.get(argv[0], argv[0])}")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
