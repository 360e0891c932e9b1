"""The benchmarks under bench/ are not run by the suite (they time things), so nothing else would
notice when a refactor breaks one: every script must at least import and answer --help."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (REPO / "bench").glob("*.py") if p.name != "__init__.py")


def test_every_benchmark_imports_and_explains_itself():
    assert len(SCRIPTS) >= 5
    # one process for all of them: each --help is run in-process through runpy, so torch is imported once
    code = ("import runpy, sys\n"
            "for path in sys.argv[1:]:\n"
            "    sys.argv = [path, '--help']\n"
            "    try:\n"
            "        runpy.run_path(path, run_name='__main__')\n"
            "    except SystemExit as e:\n"
            "        assert e.code in (0, None), f'{path} --help exited {e.code}'\n"
            "    print('ok', path, flush=True)\n")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, SCRIPTS)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path in SCRIPTS:
        assert f"ok {path}" in proc.stdout
