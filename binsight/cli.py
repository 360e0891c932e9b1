"""`binsight`: the commands that are not DVC stages.

    binsight list s3://aft-vbi-pds/ --out abid/all_bins.json   # a file list of every bin (see --help)
    binsight cut-list abid/file_list.json ~/abid-copy --out abid/file_list.local.json  # only the bins a copy holds
    binsight predict photo.jpg            # count the items in photos (see `binsight predict --help`)
    binsight verify checks.csv            # image + expected quantity -> accept or review
    binsight serve --model models/model.pt  # HTTP server (see `binsight serve --help`)
    binsight tune --trials 20             # Bayesian search, every trial a DVC experiment
    binsight recipe cpu-scratch           # `dvc exp run` with a named recipe

Each command is also `python -m` of its module (listed by `binsight COMMAND --help`). The pipeline itself
runs with `dvc repro`.
"""

from __future__ import annotations

import importlib
import sys

from binsight.tune.recipes import RECIPES

# command -> (module with a main(argv), one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("binsight.data.bucket_listing", "build a file list from a bucket, a prefix or a local copy"),
    "cut-list": ("binsight.data.list_cut", "keep only the bins of a file list that a local copy of the bucket holds"),
    "predict": ("binsight.serve.predict_command", "count the items in photos with a trained model"),
    "verify": ("binsight.serve.verify_command", "check bins against their expected quantities: accept or review"),
    "serve": ("binsight.serve.http_server", "serve a trained model over HTTP"),
    "tune": ("binsight.tune.bayes_search", "Bayesian hyper-parameter search over DVC experiments"),
    "recipe": ("binsight.tune.recipes", f"run a named recipe ({', '.join(RECIPES)}) as a DVC experiment"),
}


def usage() -> str:
    rows = "\n".join(f"  {name:<9} {what}" for name, (_, what) in COMMANDS.items())
    return f"{__doc__}\ncommands:\n{rows}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        asked_for_help = bool(argv) and argv[0] in ("-h", "--help")
        print(usage(), file=sys.stdout if asked_for_help else sys.stderr)
        if argv and not asked_for_help:
            print(f"binsight: unknown command {argv[0]!r}: expected one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 0 if asked_for_help else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
