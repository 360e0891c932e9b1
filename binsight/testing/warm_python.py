"""A warm interpreter for the stage, predict, tune and serve processes that the tests start.

Every `dvc repro` or `dvc exp run` in the suite starts `python -m stages.NAME` as a new process, and the
tests start `python -m binsight.predict`, `binsight.tune` and `binsight.serve` the same way. One that
imports torch spent 2.5-3 CPU-seconds importing torch, torchvision, numpy and dvclive before its first
line of work, and 0.9 s tearing them down at exit: about a third of the suite's CPU time. Here one server per pytest
worker imports them once; a test project's `python` (a shim that runs binsight/testing/warm_client.py,
first on PATH through `binsight.testing.project.env`) asks it to fork a child that runs the module, with
the caller's working directory, environment, arguments and standard streams. The child is a real process
running the real module from the project's own folder (binsight too: the child forgets the modules of
this repo that the server loaded); the client stands in for it towards dvc (exit status, signals,
kill -9). Linux only (elsewhere every stage starts cold).

A fork shares what the server imported, so anything these libraries read from the environment at import
time is the server's. The server therefore declines (and the client runs the real interpreter) unless
`IMPORT_TIME_ENV` is the same for the request as for the server (`changed_at_import`: PYTHONPATH may put
folders in front that hold none of the server's modules), and the suite keeps cold starts covered: the
shared trained project is built with the plain interpreter (tests/conftest.py), featurize's frozen
path starts cold in tests/test_featurize.py, and so does every command a test runs with
`sys.executable` (the kill -9 tests, the answers before torch is imported).

    python -m binsight.testing.warm_python SOCKET
"""
import atexit
import importlib
import io
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from binsight.testing.warm_client import SOCKET_ENV, read_exactly

PRELOADED = ("numpy", "PIL.Image", "yaml", "boto3", "matplotlib.pyplot", "optuna", "torch", "torchvision", "dvclive",
             "fastapi", "uvicorn")
# What the interpreter or those libraries read when they start or are imported.
IMPORT_TIME_ENV = ("CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONWARNINGS",
                   "PYTHONIOENCODING", "PYTHONUTF8", "LANG", "LC_ALL", "LC_CTYPE", "HOME", "MPLBACKEND", "MPLCONFIGDIR",
                   "LD_PRELOAD", "LD_LIBRARY_PATH", "VIRTUAL_ENV")


def torch_threads(env):
    """The intra-op threads torch starts with under `env` where it says (OMP_NUM_THREADS, and
    MKL_NUM_THREADS unset or the same): a warm child sets them, as a cold start would take them from
    the variables. None where it does not say; "?" where it says something else."""
    omp, mkl = env.get("OMP_NUM_THREADS"), env.get("MKL_NUM_THREADS")
    if omp is None and mkl is None:
        return None
    return int(omp) if omp and omp.isdigit() and int(omp) > 0 and mkl in (None, omp) else "?"


def added_to_path(request_env, own_env):
    """The folders that the request's PYTHONPATH puts in front of the server's ([] where the two are
    the same), or None where it is not the server's with folders in front."""
    mine, theirs = ([p for p in e.get("PYTHONPATH", "").split(os.pathsep) if p] for e in (own_env, request_env))
    extra = len(theirs) - len(mine)
    return theirs[:extra] if extra >= 0 and theirs[extra:] == mine else None


def holds_a_loaded_module(folders):
    """Whether one of `folders` holds a top-level module or package that this process has imported
    (binsight aside: a child imports it again). A cold start would import that folder's copy. (A
    folder without __init__.py, such as a dvclive/ of metrics, would not: a namespace package
    loses to a regular one found later on the path.)"""
    loaded = {name.partition(".")[0] for name in sys.modules} - {"binsight", "__main__"}
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir():
                name = entry.name if os.path.exists(os.path.join(entry.path, "__init__.py")) else ""
            else:
                name = entry.name.split(".")[0] if entry.name.endswith((".py", ".so")) else ""
            if name in loaded:
                return True
    return False


def changed_at_import(request_env, own_env):
    """{variable: requested value} of the `IMPORT_TIME_ENV` that differ from the server's. A PYTHONPATH
    that puts folders in front of the server's passes where they hold none of its modules (this
    checkout, say): the child puts them on sys.path as the interpreter would."""
    changed = {k: v for k in IMPORT_TIME_ENV if (v := request_env.get(k)) != own_env.get(k)}
    added = added_to_path(request_env, own_env)
    if "PYTHONPATH" in changed and added is not None and not holds_a_loaded_module(added):
        del changed["PYTHONPATH"]
    return changed


def forkable(request_env, own_env):
    """Whether a child forked here starts as a cold interpreter would under `request_env`."""
    threads = torch_threads(request_env)
    return (not changed_at_import(request_env, own_env) and threads != "?"
            and (threads is not None or torch_threads(own_env) is None))


def read_request(conn):
    """-> (request dict, the client's standard-stream fds as {number: our fd}), or None."""
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    if len(data) < 8:
        return None
    size = struct.unpack("!Q", data[:8])[0]
    rest = read_exactly(conn, size - len(data[8:]))
    if rest is None:
        return None
    request = json.loads(data[8:] + rest)
    return request, dict(zip(request["fds"], fds))


def stream(fd, unbuffered):
    """The text stream the interpreter would have opened on standard stream `fd`: stderr line-buffered,
    stdout line-buffered on a terminal, both written through under PYTHONUNBUFFERED."""
    if fd == 0:
        return io.TextIOWrapper(io.open(fd, "rb", closefd=False), encoding=sys.stdin.encoding, errors="surrogateescape")
    raw = io.FileIO(fd, "w", closefd=False)
    binary = raw if unbuffered else io.BufferedWriter(raw)
    return io.TextIOWrapper(binary, encoding=sys.stdout.encoding, errors="backslashreplace" if fd == 2 else "strict",
                            line_buffering=not unbuffered and (fd == 2 or raw.isatty()), write_through=unbuffered)


def run_child(conn, request, fds, own_env):
    """In the forked child: become the requested `python -m MODULE ARGV`, and exit as it does."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    for number in (0, 1, 2):
        if number in fds:
            os.dup2(fds[number], number)
            os.close(fds[number])
        else:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, number)
            os.close(null)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    threads = torch_threads(os.environ)
    if threads is not None:  # forkable() let only a number or None through
        importlib.import_module("torch").set_num_threads(threads)
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.stdin, sys.stdout, sys.stderr = (stream(fd, unbuffered) for fd in (0, 1, 2))
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr

    def die_with_the_client():  # the client never writes: end of stream means it is gone (kill -9 too)
        try:
            conn.recv(1)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=die_with_the_client, daemon=True).start()

    for name in [m for m in sys.modules if m == "binsight" or m.startswith("binsight.")]:
        del sys.modules[name]  # the stage imports the project's own copy, as a cold `python -m` would
    sys.argv = [request["module"], *request["argv"]]
    sys.path[0] = request["cwd"]  # what `python -m` puts first, then PYTHONPATH's folders
    sys.path[1:1] = added_to_path(request["env"], own_env)
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        code = stop.code
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        exit_as_python_does(1, interrupted=True)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    exit_as_python_does(code)


def exit_as_python_does(code, interrupted=False):
    """Python's own shutdown, in its order: wait for non-daemon threads, run the atexit functions,
    flush the standard streams, exit with `code` (None 0, an int itself, anything else printed and 1;
    an uncaught Ctrl-C dies of SIGINT). It then skips tearing down every module: 0.9 s with torch
    loaded, and Python does not promise `__del__` for what is still alive at exit anyway."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    for out in (sys.stdout, sys.stderr):
        try:
            out.flush()
        except (OSError, ValueError):
            pass
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status & 0xFF)


def send_status(conn, kind, value):
    try:
        conn.sendall(kind + struct.pack("!q", value))
    except OSError:  # the client is gone
        pass
    conn.close()


@contextmanager
def listening(path):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(64)
    owner = os.getpid()
    try:
        yield server
    finally:
        server.close()
        if os.getpid() == owner:
            Path(path).unlink(missing_ok=True)


def serve(path):
    """Preload, listen at `path`, fork a child per accepted request (until killed)."""
    for name in PRELOADED:
        importlib.import_module(name)
    own_env = dict(os.environ)
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children = {}
    with listening(path) as server, selectors.DefaultSelector() as selector:
        selector.register(server, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        Path(f"{path}.ready").touch()
        while True:
            for key, _ in selector.select():
                if key.fileobj is wake_r:
                    while True:
                        try:
                            if not wake_r.recv(512):
                                break
                        except BlockingIOError:
                            break
                    reap(children)
                    continue
                conn, _ = server.accept()
                got = read_request(conn)
                if got is None:
                    conn.close()
                    continue
                request, fds = got
                if not forkable(request["env"], own_env):
                    for fd in fds.values():
                        os.close(fd)
                    send_status(conn, b"N", 0)
                    print(f"declined python -m {request['module']} in {request['cwd']}: "
                          f"{changed_at_import(request['env'], own_env)}, "
                          f"threads {torch_threads(request['env'])}", flush=True)
                    continue
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    selector.close()
                    for other in (server, wake_r, wake_w, *children.values()):
                        other.close()
                    run_child(conn, request, fds, own_env)  # never returns
                for fd in fds.values():
                    os.close(fd)
                children[pid] = conn
                print(f"{pid} python -m {request['module']} {' '.join(request['argv'])} in {request['cwd']}",
                      flush=True)
                try:
                    conn.sendall(b"P" + struct.pack("!q", pid))
                except OSError:
                    pass
            reap(children)


def reap(children):
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        if os.WIFSIGNALED(status):
            send_status(conn, b"S", os.WTERMSIG(status))
        else:
            send_status(conn, b"X", os.waitstatus_to_exitcode(status))


@contextmanager
def started(folder, env):
    """A server for this process's tests in `folder`, with the environment `env` (the tests' own, so that
    their stage processes match it) -> {variable: value} that send a test project's `python` to it."""
    import subprocess
    import tempfile
    import time
    import warnings
    if not sys.platform.startswith("linux"):  # fork after importing torch is safe on Linux, not on macOS
        yield {}
        return
    folder = Path(folder)
    (folder / "bin").mkdir(parents=True, exist_ok=True)
    shim = folder / "bin" / "python"  # sh, not a #! line that could outgrow the kernel's limit on the venv's path
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{Path(__file__).with_name("warm_client.py")}" "$@"\n')
    shim.chmod(0o755)
    path = folder / "s.sock"
    if len(str(path)) > 100:  # a Unix socket's path has at most 107 bytes
        path = Path(tempfile.mkdtemp(prefix="binsight-warm-", dir="/tmp")) / "s.sock"
    for stale in (path, Path(f"{path}.ready")):
        stale.unlink(missing_ok=True)
    with open(folder / "server.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "binsight.testing.warm_python", str(path)], env=env,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not Path(f"{path}.ready").exists():
            if server.poll() is not None or time.time() > deadline:
                warnings.warn(f"the warm python did not start, every stage starts cold: "
                              f"{(folder / 'server.log').read_text()[-2000:]}")
                yield {}
                return
            time.sleep(0.05)
        yield {SOCKET_ENV: str(path), "BINSIGHT_WARM_BIN": str(folder / "bin")}
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    serve(sys.argv[1])
