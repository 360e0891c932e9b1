"""Build .dvc/plots.html: DVC's page template for `dvc plots show` with vega, vega-lite and vega-embed
inlined, so the charts render without a network (DVC's own page loads them from a CDN).

    python tools/plots_template.py            # npm pack the pinned versions, write .dvc/plots.html

Needs npm (the registry) once, when the pins change; the page it writes is committed. The three
libraries are BSD-3-Clause (https://github.com/vega).
"""

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGES = {"vega": "5.33.1", "vega-lite": "5.23.0", "vega-embed": "6.29.0"}  # the majors DVC's page asks for
OUT = Path(__file__).resolve().parents[1] / ".dvc" / "plots.html"

# DVC fills {plot_divs} and {refresh_tag}; there is no {scripts}, so no CDN tag is added.
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def script(tgz, name):
    with tarfile.open(tgz) as tar:
        code = tar.extractfile(f"package/build/{name}.min.js").read().decode()
    if "</script" in code or "{plot_divs}" in code or "{refresh_tag}" in code:
        sys.exit(f"{name}.min.js holds text that would break the inlined page")
    return f"    <script>/* {name} {PACKAGES[name]}, BSD-3-Clause */\n{code}\n    </script>"


def main():
    with tempfile.TemporaryDirectory() as tmp:
        specs = [f"{name}@{version}" for name, version in PACKAGES.items()]
        subprocess.run(["npm", "pack", "--silent", *specs], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        scripts = [script(Path(tmp) / f"{name}-{version}.tgz", name) for name, version in PACKAGES.items()]
    OUT.write_text(PAGE.format(scripts="\n".join(scripts)))
    print(f"{OUT}: {OUT.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
