"""Built once per test run, whichever pytest-xdist worker asks first: the expensive projects the
tests share (a whole `dvc repro` each). The other workers wait for the build and use the result,
so tests that share a project need not run on one worker.

The pattern pytest-xdist documents for session fixtures that must run once: a lock file in the
folder all workers of a run share, and a marker written when the build is complete (a build that
failed leaves none, and the next worker that asks builds it again and reports its own error).
"""

import os
import shutil

from filelock import FileLock


def shared_root(tmp_path_factory):
    """The temp folder every worker of this run sees: the parent of the workers' own ones
    (pytest-of-USER/pytest-N/popen-gwK) under xdist, the run's own without it."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory, name, build):
    """`build(path)` for the project `name` if no worker of this run has; -> its path (read-only:
    copy it to change it)."""
    root = shared_root(tmp_path_factory) / name
    path, done = root / "proj", root / "built"
    root.mkdir(exist_ok=True)
    with FileLock(str(root / "lock")):
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)
            build(path)
            done.touch()
    return path
