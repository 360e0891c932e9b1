"""A stage's deps in dvc.yaml are the code it runs: `dvc repro` reruns only what depends on a change, so a
module a stage imports but does not list would leave a stale model behind. Checked two ways: every stage's
import closure (every import statement, lazy ones included) against dvc.yaml, and `dvc status` after real
edits in a copy of a project that ran the whole pipeline."""

import json
from pathlib import Path

import pytest
import yaml

from tests.support.imports import import_closure, imported_names
from tests.support.project import REPO, dvc

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def code_deps(stage):
    return [d for d in STAGES[stage]["deps"] if d.startswith(("binsight", "stages/"))]


def uncovered(closure, deps):
    """The files of `closure` that no dep names, itself or through a folder above it."""
    return sorted(str(f) for f in closure if not any(f == Path(d) or Path(d) in f.parents for d in deps))


def stage_entry(stage):
    cmd = STAGES[stage]["cmd"]
    assert cmd.startswith("python -m stages."), cmd
    return Path("stages", cmd.split()[2].split(".")[1] + ".py")


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_file_a_stage_imports_is_one_of_its_deps(stage):
    closure = import_closure(REPO, stage_entry(stage))
    missing = uncovered(closure, code_deps(stage))
    assert not missing, f"dvc.yaml: stage {stage!r} imports {', '.join(missing)}, which its deps do not cover"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_code_dep_of_a_stage_exists(stage):
    for dep in code_deps(stage):
        assert (REPO / dep).exists(), f"dvc.yaml: stage {stage!r} depends on {dep}, which is not there"


def test_a_dep_removed_from_dvc_yaml_is_named_with_its_stage():
    closure = import_closure(REPO, stage_entry("train"))
    deps = [d for d in code_deps("train") if d != "binsight/model"]
    missing = uncovered(closure, deps)
    assert "binsight/model/count_losses.py" in missing and "binsight/data/raw_bins.py" not in missing


def test_the_closure_follows_lazy_imports_and_from_package_imports(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "leaf.py").write_text("import json\n")
    (tmp_path / "pkg" / "lazy.py").write_text("def f():\n    from pkg.sub import leaf\n")
    (tmp_path / "main.py").write_text("import os\n\n\ndef g():\n    import pkg.lazy\n")
    closure = {str(p) for p in import_closure(tmp_path, Path("main.py"))}
    assert closure == {"main.py", "pkg/__init__.py", "pkg/lazy.py", "pkg/sub/__init__.py", "pkg/sub/leaf.py"}
    assert "pkg.sub.leaf" in imported_names(tmp_path / "pkg" / "lazy.py")


def changed_stages(project):
    """The stages `dvc status` calls changed (it reads no data, so it answers in a second)."""
    return set(json.loads(dvc(project, "status", "--json").stdout or "{}"))


def edit(project, rel):
    """Append a comment to a module of the project; -> a function that puts the original bytes back."""
    path = project / rel
    original = path.read_bytes()
    path.write_bytes(original + b"\n# an edit\n")
    return lambda: path.write_bytes(original)


@pytest.mark.slow
def test_dvc_status_marks_the_stages_whose_code_changed_and_no_others(trained_project, clone_project):
    project = clone_project(trained_project)
    edit(project, "binsight/serve/predictor.py")  # serving: no stage runs it (and the copy is up to date)
    assert changed_stages(project) == set()
    undo = edit(project, "binsight/model/count_losses.py")  # imported by featurize, train and evaluate
    assert changed_stages(project) == {"featurize", "train", "evaluate"}
    undo()  # the bytes dvc.lock recorded: nothing to rerun again (a hash, not a timestamp)
    assert changed_stages(project) == set()
    edit(project, "binsight/data/image_decode.py")  # the JPEG decode: every stage that reads images or data
    changed = changed_stages(project)
    assert {"fetch", "split", "train", "evaluate", "featurize"} <= changed and "report" not in changed
