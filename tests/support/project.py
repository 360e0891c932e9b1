"""A copy of this project in a temp git repo, driven through the real `dvc` and `git` CLIs, and the
stages called in-process on it."""

import contextlib
import csv
import importlib
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def repo_pythonpath():
    """PYTHONPATH for a subprocess that must import this checkout's modules (stages, binsight) from
    another folder: the repo first, then whatever the caller's PYTHONPATH already held (a site
    folder of packages installed with pip --target, say), never instead of it."""
    return os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


COPIED = [
    "dvc.yaml",
    "params.yaml",
    "stages",
    "binsight",
    ".dvc/config",
    ".dvc/plots.html",
    ".dvc/.gitignore",
    ".dvcignore",
    ".gitignore",
    "data/.gitkeep",
    "models/.gitkeep",
]
VENV_BIN = str(Path(sys.executable).parent)
# tests/conftest.py hides the GPUs from the test process and keeps the caller's setting here
CALLER_GPUS = "BINSIGHT_TEST_CUDA_VISIBLE_DEVICES"


def env(gpu=False, **extra):
    """The environment of a test subprocess. Pinned to the CPU as the test process is (tests/conftest.py)
    unless `gpu`: then it sees the GPUs the caller of pytest made visible (tests/test_gpu.py)."""
    e = dict(os.environ)
    e["PATH"] = os.pathsep.join(filter(None, [VENV_BIN, e.get("PATH")]))  # dvc, torchrun, python of this venv
    e.update(
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
        PYTHONUNBUFFERED="1",
    )
    for k in (
        "DVC_ROOT",
        "DVC_EXP_BASELINE_REV",
        "DVC_EXP_NAME",
        "AWS_ENDPOINT_URL",
        "BINSIGHT_S3_BUCKET",
        "BINSIGHT_S3_PREFIX",
        "BINSIGHT_FETCH_CONCURRENCY",
    ):
        e.pop(k, None)
    e["CUDA_VISIBLE_DEVICES"] = ""
    if gpu:
        chosen = os.environ.get(CALLER_GPUS, "all")
        if chosen == "all":
            del e["CUDA_VISIBLE_DEVICES"]
        else:
            e["CUDA_VISIBLE_DEVICES"] = chosen
    e.update({k: str(v) for k, v in extra.items()})
    return e


def visible_gpus():
    """[(major, minor) compute capability] of each GPU a subprocess started with env(gpu=True) sees, from
    nvidia-smi: asking torch would start CUDA in this process, which stays on the CPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
            env=env(gpu=True),
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    caps = [
        tuple(int(x) for x in line.strip().split("."))
        for line in out.splitlines()
        if line.strip().replace(".", "").isdigit()
    ]
    chosen = os.environ.get(CALLER_GPUS, "all")
    if chosen == "all":
        return caps
    return [caps[int(g)] for g in chosen.split(",") if g.strip().isdigit() and int(g) < len(caps)]


def run(args, cwd, check=True, timeout=600, gpu=False, **env_extra):
    """Run a command; on an unexpected exit status fail with its whole output."""
    proc = subprocess.run(args, cwd=cwd, env=env(gpu, **env_extra), capture_output=True, text=True, timeout=timeout)
    return checked(args, proc, check)


def checked(command, result, check):
    """`result` (a finished run's returncode, stdout, stderr); with `check`, fail on a non-zero status with
    the whole output."""
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, command))} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


def dvc(project, *args, check=True, **env_extra):
    return run(["dvc", *args], project, check=check, **env_extra)


def python_m(module, *args):
    """`python -m MODULE ARGS` as dvc.yaml runs a stage and a user runs a command module."""
    return [sys.executable, "-m", module, *map(str, args)]


@dataclass
class Ran:
    """What a stage called in-process left: as subprocess.run's result, for the same asserts."""

    returncode: int
    stdout: str
    stderr: str


def call(module, *args, cwd, check=True, stdin=None, **env_extra):
    """`python -m MODULE ARGS` in `cwd`, run in this process: the module's `main(argv)`, its output
    captured, `stdin` (bytes) as its standard input, a SystemExit turned into the exit status
    (`one_line_errors` exits 2). torch is imported once per test process, not once per stage.
    On an unexpected status fail with the output."""
    main = importlib.import_module(module).main
    out, err = io.StringIO(), io.StringIO()
    stdin_before = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    saved = {k: os.environ.get(k) for k in env_extra}
    cwd_before = os.getcwd()
    os.environ.update({k: str(v) for k, v in env_extra.items()})
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main([str(a) for a in args]) or 0
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdin = stdin_before
        os.chdir(cwd_before)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return checked([module, *args], Ran(status, out.getvalue(), err.getvalue()), check)


def deep_update(base, overrides):
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = v
    return base


def hoist_top_level(overrides):
    """train.lr / train.batch_size / train.epochs in test overrides -> the top-level keys params.yaml uses."""
    overrides = dict(overrides)
    train = dict(overrides.get("train") or {})
    for key in ("lr", "batch_size", "epochs"):
        if key in train:
            overrides[key] = train.pop(key)
    if "train" in overrides:
        overrides["train"] = train
    return overrides


def set_params(project, overrides):
    path = Path(project) / "params.yaml"
    params = deep_update(yaml.safe_load(path.read_text()), hoist_top_level(overrides))
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def make_project(dest, params=None, commit=True):
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for rel in COPIED:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    # A local subset list, so no test reaches for the public URL (CI has no internet).
    (dest / "file_list.json").write_text("{}")
    set_params(dest, deep_update({"fetch": {"file_list": "file_list.json"}}, params or {}))
    run(["git", "init", "-q", "-b", "main"], dest)
    if commit:
        git_commit(dest, "project copy")
    return dest


def experiments(project):
    """{name: row} of `dvc exp show --csv`, one row per experiment (the workspace and branch rows have no name)."""
    rows = csv.DictReader(io.StringIO(dvc(project, "exp", "show", "--csv", "--no-pager").stdout))
    return {r["Experiment"]: r for r in rows if r["Experiment"]}


def experiment_refs(project):
    """Names of the finished experiments: DVC keeps each as a git ref under refs/exps (a git call,
    milliseconds, where `dvc exp show` takes seconds)."""
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], project).stdout.split()
    return {ref.rsplit("/", 1)[1] for ref in refs}


def stages_run(output):
    """Names of the stages a `dvc repro` / `dvc exp run` log says it ran."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def clone(src, dst):
    """A copy of a built project (links kept as links), to change it."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def git_commit(project, message):
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", message, "--allow-empty"], project)


def in_terminal(args, cwd, columns=120, timeout=300):
    """What a user sees running `args` in a terminal `columns` wide: the command gets a real pty
    (so DVC pages its tables), the pager is `cat`, and each line is cut at `columns` as
    `less -S` (DVC's default pager) does. Colours and cursor codes are stripped."""
    import fcntl
    import pty
    import re
    import struct
    import termios

    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env=env(DVC_PAGER="cat", COLUMNS=columns),
        stdin=child_fd,
        stdout=child_fd,
        stderr=child_fd,
        close_fds=True,
    )
    os.close(child_fd)
    chunks = []
    while True:
        try:
            data = os.read(main_fd, 65536)
        except OSError:  # the child closed the pty
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=timeout)
    os.close(main_fd)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r", "", b"".join(chunks).decode("utf-8", "replace"))
    return [line[:columns] for line in text.splitlines()]


def kill_when(args, cwd, ready, timeout=300, poll=0.005):
    """Start `args`, and kill -9 it the moment `ready()` is true (or it exits first). -> the exit status."""
    import signal
    import time

    proc = subprocess.Popen(args, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not ready() and time.time() < deadline and proc.poll() is None:
        time.sleep(poll)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


def kill_when_written(args, cwd, path, timeout=300, poll=0.005):
    """kill -9 `args` the moment `path` appears: a crash right after a checkpoint landed."""
    return kill_when(args, cwd, lambda: Path(path).exists(), timeout, poll)
