"""What the `python` that test projects find first on PATH runs when a warm interpreter runs
(binsight/testing/warm_python.py). Standard library only: it runs as `python -S`, in milliseconds.

`python -m stages.NAME ARGS` (the commands in dvc.yaml), `binsight.predict`, `binsight.tune` or
`binsight.serve` is handed to the warm server with this process's working directory, environment and
stdin/stdout/stderr; the server forks a child that runs the stage. This process stays the stage's
process for whoever started it: it passes on SIGINT/SIGTERM/SIGHUP to the child, exits with the
child's exit status (or dies of its signal), and when it is killed (-9 included) the child notices
and dies too. Any other command, or no server, or a server that declines, runs the real interpreter
in this process (exec).
"""
import json
import os
import signal
import socket
import struct
import sys

# each a package (ending with a dot) or a module
WARM_MODULES = ("stages.", "binsight.predict", "binsight.tune", "binsight.serve")
SOCKET_ENV = "BINSIGHT_WARM_PYTHON"


def exec_real(args):
    os.execv(sys.executable, [sys.executable, *args])


def std_fds():
    """Which of the standard streams (0, 1, 2) this process has open."""
    numbers = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            numbers.append(fd)
        except OSError:
            pass
    return numbers


def read_exactly(sock, n):
    """`n` bytes from `sock`, or None if it closes first."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main(args):
    path = os.environ.get(SOCKET_ENV)
    if not path or len(args) < 2 or args[0] != "-m" or not any(
            args[1] == m or (m.endswith(".") and args[1].startswith(m)) for m in WARM_MODULES):
        exec_real(args)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        exec_real(args)
    fds = std_fds()
    request = json.dumps({"module": args[1], "argv": args[2:], "cwd": os.getcwd(), "env": dict(os.environ),
                          "fds": fds}).encode()
    socket.send_fds(sock, [struct.pack("!Q", len(request)) + request], fds)
    answer = read_exactly(sock, 9)
    if answer is None or answer[:1] == b"N":  # declined (its interpreter differs from what we were asked for)
        sock.close()
        exec_real(args)
    child = struct.unpack("!q", answer[1:])[0]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda signum, frame: os.kill(child, signum))
    status = read_exactly(sock, 9)
    if status is None:
        print("warm python: the server went away before the stage ended", file=sys.stderr)
        sys.exit(1)
    kind, value = status[:1], struct.unpack("!q", status[1:])[0]
    if kind == b"S":  # killed by a signal: die of the same one, as the stage did
        signal.signal(value, signal.SIG_DFL)
        os.kill(os.getpid(), value)
    sys.exit(value)


if __name__ == "__main__":
    main(sys.argv[1:])
