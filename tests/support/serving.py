"""The real server on 127.0.0.1, as a process or in this one, and a model file to serve, for tests and
benchmarks."""

import io
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from PIL import Image

from tests.support import project

REPO = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def untrained_model(path, arch="resnet18", image_size=64, classes=(1, 2, 3, 4, 5), seed=0):
    """A randomly initialised counter saved as the train stage would save one (for latency, not accuracy)."""
    import torch

    from binsight.model.counting_model import model_from_params, save_model
    from binsight.params import check_model

    torch.manual_seed(seed)
    params = check_model(
        {"arch": arch, "weights": "none", "freeze_backbone": False, "head": {"hidden": [], "dropout": 0.0}}
    )
    save_model(
        path,
        model_from_params(params, len(classes), pretrained=False),
        classes,
        params,
        image_size,
        {"val_acc": 0.2, "epoch": 0},
    )
    return Path(path)


def png_bytes(jpeg):
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buf, format="PNG")
    return buf.getvalue()


class InProcessServer:
    """`binsight serve ARGS` in this process: the app `main` would serve for the same flags and environment
    (binsight.serve.http_server.build), on a real uvicorn on a thread at a free port of 127.0.0.1. The process-level
    command, started as a user starts it, is `Server`'s."""

    def __init__(self, *argv, timeout=60):
        from binsight.serve import http_server as serve

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app, self.batcher, self.predictor = serve.build(
            serve.parse_args([*map(str, argv), "--port", str(self.port)])
        )
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.stop()
                raise AssertionError(f"uvicorn did not start on port {self.port} within {timeout} s")
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.batcher.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Server:
    """`python -m binsight.serve.http_server` in a subprocess, its output in `log`; `url` once /health answers.
    `as_tests_run`: with the tests' environment (`tests.support.project.env`: on the CPU unless `gpu`);
    otherwise with this process's environment (bench/serve.py)."""

    def __init__(self, model, log, *args, cwd=REPO, env=None, timeout=120, as_tests_run=False, gpu=False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log)
        serve_args = ["--model", model, "--port", self.port, *args]
        cmd = project.python_m("binsight.serve.http_server", *serve_args)
        self._log_file = open(self.log, "wb")
        full_env = {
            **(project.env(gpu) if as_tests_run else os.environ),
            "PYTHONPATH": project.repo_pythonpath(),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=self._log_file, stderr=subprocess.STDOUT)
        self._wait(timeout)

    def _wait(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server did not answer /health within {timeout} s:\n{self.output()}")

    def output(self):
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-6000:]

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
