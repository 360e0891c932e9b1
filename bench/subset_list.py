"""The subset list restricted to the bins a local folder holds: for a partial copy of the bucket
(e.g. the development bins), so fetch does not report the rest as missing.

    python bench/subset_list.py file_list.json /path/to/copy > file_list.partial.json
"""

import json
import sys
from pathlib import Path

from binsight.abid import bin_id_from_path


def main(argv):
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return
    if len(argv) != 2:
        sys.exit(__doc__)
    listing, folder = json.loads(Path(argv[0]).read_text()), Path(argv[1])
    present = {p.stem for p in (folder / "metadata").glob("*.json")}
    kept = {label: [path for path in paths if bin_id_from_path(path) in present] for label, paths in listing.items()}
    json.dump(kept, sys.stdout, indent=1)
    print(f"{sum(map(len, kept.values()))} of {sum(map(len, listing.values()))} bins kept", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
