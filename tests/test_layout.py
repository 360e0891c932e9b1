"""The library's layout by job (docs/layout.md): a few modules at the top, and imports that only point down,
from serving and tuning to training, the model and the data, never back up."""

from pathlib import Path

import pytest

from tests.support.imports import imported_names
from tests.support.project import REPO

# each subpackage and the subpackages it may import (the top-level modules: any of them may)
MAY_IMPORT = {
    "data": set(),
    "model": {"data"},
    "train": {"data", "model"},
    "verify": {"data", "model"},
    "evaluate": {"data", "model", "train", "verify"},
    "serve": {"data", "model", "train", "verify"},
    "tune": {"data", "model", "train"},
}
ENTRY_POINTS = {"binsight/cli.py"}  # the `binsight` command imports the commands of every subpackage


def subpackages_imported(path):
    return {
        name.split(".")[1]
        for name in imported_names(path)
        if name.startswith("binsight.") and (REPO / "binsight" / name.split(".")[1]).is_dir()
    }


def test_the_top_level_holds_a_few_modules_and_the_subpackages_are_the_documented_ones():
    top = sorted(p.name for p in (REPO / "binsight").glob("*.py"))
    assert len(top) <= 8, top
    assert {p.name for p in (REPO / "binsight").iterdir() if p.is_dir() and p.name != "__pycache__"} == set(MAY_IMPORT)


@pytest.mark.parametrize("package", ["top", *MAY_IMPORT])
def test_imports_only_point_down(package):
    folder = REPO / "binsight" if package == "top" else REPO / "binsight" / package
    allowed = set() if package == "top" else MAY_IMPORT[package] | {package}
    for path in sorted(folder.glob("*.py")):
        rel = str(path.relative_to(REPO))
        if rel in ENTRY_POINTS:
            continue
        up = subpackages_imported(path) - allowed
        assert not up, f"{rel} imports binsight.{', binsight.'.join(sorted(up))}: see docs/layout.md"


def test_the_check_sees_an_import_that_points_up(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from binsight.serve.predictor import Predictor\n")
    assert subpackages_imported(Path(module)) == {"serve"}
