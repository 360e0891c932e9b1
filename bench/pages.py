"""The block of a docs page a benchmark writes, between its markers; the reading around it stays; and the
commit the page names."""

import subprocess


def short_commit(repo):
    """The short hash of `repo`'s HEAD, which every generated page names beside its date."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()


def write_block(path, text, begin, end, at_end=False):
    """Replace the block a benchmark owns in `path` (between its markers), keeping the rest of the page;
    a page without the markers gets the block first (or last, `at_end`)."""
    block = f"{begin}\n{text}{end}\n"
    page = path.read_text() if path.exists() else ""
    if begin in page and end in page:
        page = page[: page.index(begin)] + block + page[page.index(end) + len(end) + 1 :]
    elif at_end:
        page += "\n" + block
    else:
        page = block + page
    path.write_text(page)
