"""Open a local HTML file in a real headless Chromium (Debian's `chromium`), no driver needed.

`load(page)` returns the DOM after the load event, every console message the page logged (any
message fails a check: a clean page logs nothing) and how many images decoded. The image check
is a small script added to a copy of the page, so the page under test stays script-free.
`screenshot(page, png)` saves what a reader sees.

    python -m tests.support.browser reports/index.html docs/report.png [--size 1280,full]
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
    "--run-all-compositor-stages-before-draw",
]
# Chromium logs each console message as: [..:INFO:CONSOLE:12] "text", source: file:///x.html (12)
CONSOLE = re.compile(r':CONSOLE(?::\d+|\(\d+\))\] "(?P<text>.*)", source: (?P<source>\S*) \((?P<line>\d+)\)')
IMAGE_CHECK = """<script>window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.documentElement.setAttribute("data-images-decoded", (imgs.length - bad.length) + "/" + imgs.length);
  document.documentElement.setAttribute("data-page-height", document.documentElement.scrollHeight);
});</script>"""


def find_chromium():
    """The browser's path: $BINSIGHT_CHROMIUM, else the first of CANDIDATES on PATH; None if none."""
    if os.environ.get("BINSIGHT_CHROMIUM"):
        return os.environ["BINSIGHT_CHROMIUM"]
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


@dataclass
class Loaded:
    dom: str
    console: list  # [(text, source, line)]
    images_decoded: int
    images_total: int
    height: int  # of the whole page in px, at the default window width


def _run(args, timeout=60):
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("no chromium on PATH")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=timeout
        )


def load(page, timeout=60, width=1280):
    page = Path(page).resolve()
    probe = page.with_name(f".probe-{page.name}")  # beside the page: same origin, same relative paths
    text = page.read_text()
    end = text.rfind("</body>")  # the last: inlined scripts may hold the text "</body>" in a string
    probe.write_text(text[:end] + IMAGE_CHECK + text[end:] if end >= 0 else text + IMAGE_CHECK)
    try:
        proc = _run(
            [
                f"--window-size={width},1000",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=5000",
                "--dump-dom",
                probe.as_uri(),
            ],
            timeout,
        )
    finally:
        probe.unlink(missing_ok=True)
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr[-3000:]}")
    console = [(m["text"], m["source"], int(m["line"])) for m in CONSOLE.finditer(proc.stderr)]
    m = re.search(r'data-images-decoded="(\d+)/(\d+)"', proc.stdout)
    decoded, total = (int(m[1]), int(m[2])) if m else (0, -1)
    h = re.search(r'data-page-height="(\d+)"', proc.stdout)
    return Loaded(
        dom=proc.stdout, console=console, images_decoded=decoded, images_total=total, height=int(h[1]) if h else 0
    )


def screenshot(page, png, size=(1280, 1800), timeout=60):
    """Save what a reader sees in a window of `size`; a height of None takes the whole page."""
    if size[1] is None:
        size = (size[0], load(page, timeout, size[0]).height or 1800)
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    proc = _run(
        [
            f"--window-size={size[0]},{size[1]}",
            "--virtual-time-budget=5000",
            f"--screenshot={png}",
            Path(page).resolve().as_uri(),
        ],
        timeout,
    )
    if proc.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium exited {proc.returncode} without a screenshot: {proc.stderr[-3000:]}")
    return png


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page")
    parser.add_argument("png")
    parser.add_argument("--palette", action="store_true", help="save with 256 colours (a smaller file, for docs)")
    parser.add_argument(
        "--size",
        default="1280,full",
        help="window width,height in px; height 'full' takes the whole page (default: %(default)s)",
    )
    args = parser.parse_args()
    if find_chromium() is None:
        sys.exit("no chromium on PATH: apt-get install chromium")
    w, h = args.size.split(",")
    png = screenshot(args.page, args.png, (int(w), None if h == "full" else int(h)))
    if args.palette:
        from PIL import Image

        Image.open(png).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(png, optimize=True)
    print(png)
