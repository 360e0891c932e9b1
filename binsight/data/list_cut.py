"""`binsight cut-list`: a file list cut to the bins a local copy of the bucket holds.

    binsight cut-list abid/file_list.json ~/abid-copy --out abid/file_list.local.json

For a partial copy (e.g. `aws s3 sync` of some bins): point `fetch.local_dir` at the copy and
`fetch.file_list` at the cut list, and fetch does not report the bins the copy lacks as missing. A bin is
kept when the copy holds its metadata (`metadata/<id>.json`); fetch still checks its image.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from binsight.data.abid_format import METADATA_DIR, bin_id_from_path
from binsight.errors import DataError, one_line_errors
from binsight.files import atomic_write_text


def cut_list(listing: dict[str, list[str]], present_ids: set[str]) -> dict[str, list[str]]:
    """{label: [metadata paths]} -> the same, each label keeping only the paths of `present_ids`, in order."""
    return {
        label: [path for path in paths if bin_id_from_path(path) in present_ids] for label, paths in listing.items()
    }


def ids_in_copy(folder: Path) -> set[str]:
    metadata = folder / METADATA_DIR
    if not metadata.is_dir():
        raise DataError(
            f"{folder} has no {METADATA_DIR}/ folder: give the copy's root (it holds bin-images/ and metadata/)"
        )
    return {p.stem for p in metadata.glob("*.json")}


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="binsight cut-list", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("file_list", type=Path, help="a file list (file_list.json's format)")
    parser.add_argument("copy", type=Path, help="the local copy: a folder holding bin-images/ and metadata/")
    parser.add_argument("--out", type=Path, required=True, help="the cut list to write")
    args = parser.parse_args(argv)
    try:
        listing = json.loads(args.file_list.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{args.file_list} is not a readable file list: {exc}") from None
    kept = cut_list(listing, ids_in_copy(args.copy))
    atomic_write_text(args.out, json.dumps(kept, indent=1) + "\n")
    total, left = sum(map(len, listing.values())), sum(map(len, kept.values()))
    print(f"{left} of {total} bins kept -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
