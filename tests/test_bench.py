"""The benchmarks under bench/ and the studies under studies/ are not run by the suite (they time things or
train for hours), so nothing else would notice when a refactor breaks one: every script must at least import
and answer --help, run as the docs say, `python -m bench.NAME` from the repo root."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
HELPERS = ("__init__", "pages")
SCRIPTS = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts)
    for folder in ("bench", "studies")
    for p in (REPO / folder).rglob("*.py")
    if p.stem not in HELPERS
)


def test_every_benchmark_and_study_imports_and_explains_itself():
    assert len([s for s in SCRIPTS if s.startswith("bench.")]) >= 8 and any(s.startswith("studies.") for s in SCRIPTS)
    # one process for all of them: each --help is run in-process through runpy, so torch is imported once
    code = (
        "import runpy, sys\n"
        "for name in sys.argv[1:]:\n"
        "    sys.argv = [name, '--help']\n"
        "    try:\n"
        "        runpy.run_module(name, run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), f'{name} --help exited {e.code}'\n"
        "    print('ok', name, flush=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *SCRIPTS], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in SCRIPTS:
        assert f"ok {name}" in proc.stdout


def test_no_script_edits_sys_path_and_none_points_outside_the_repo():
    for path in [
        *(REPO / "bench").rglob("*.py"),
        *(REPO / "studies").rglob("*.py"),
        *(REPO / "binsight").rglob("*.py"),
    ]:
        text = path.read_text()
        assert "sys.path.insert" not in text and "sys.path.append" not in text, path
        assert "../" + "shared" not in text, path  # split: this file itself must not hold the path


def test_scratch_map_runs_each_row_with_its_seeds_and_averages_the_seeds():
    from studies.recipes.scratch_map import BASE, GRIDS, grid_jobs, summarize

    jobs = grid_jobs(["compute", "data"])
    assert len(jobs) == sum(seeds for name in ("compute", "data") for _, _, seeds in GRIDS[name])
    base = [j for j in jobs if j["row"] == GRIDS["compute"][0][0]]
    assert jobs[: len(base)] == base and {**BASE, "seed": 0, "row": base[0]["row"]} == base[0]  # the baseline first
    assert {j["seed"] for j in base} == set(range(GRIDS["compute"][0][2]))
    for j in (j for j in jobs if "photos" in j["row"]):  # about the steps of 8 epochs on the 1,982 photos
        assert abs(j["n_train"] // 32 * j["epochs"] / (1982 // 32 * 8) - 1) < 0.03
    results = [
        {"row": "a", "val": 0.3, "test": 0.2, "train_s": 10},
        {"row": "a", "val": 0.5, "test": 0.4, "train_s": 20},
        {"row": "b", "val": 0.1, "test": 0.1, "train_s": 5},
    ]
    (a, n, val, test, both, se, train_s), b = summarize(results)
    assert (a, n, train_s) == ("a", 2, 15) and abs(val - 0.4) < 1e-9 and abs(test - 0.3) < 1e-9
    assert abs(both - 0.35) < 1e-9 and abs(se - 0.1) < 1e-9  # means 0.25 and 0.45: stdev 0.141, over sqrt(2)
    assert b[:2] == ("b", 1)
