"""`python -m phi4_jax.serve` as a child process on 127.0.0.1 and a free port, for the offline
end-to-end jobs (phi4_jax.posttrain.e2e, phi4_jax.curate.e2e): the standard library only, so
that any package may start a server without importing the serving stack.

    with serving(model_path, log_path="serve.log", served_model_name="smollm2") as url:
        ...  # url = "http://127.0.0.1:PORT/v1"; the server is stopped (SIGTERM) on exit
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, server: subprocess.Popen, timeout_s: float = 300) -> None:
    """Until GET url/models answers; RuntimeError when the server exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"phi4_jax.serve exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(url + "/models", timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"phi4_jax.serve did not answer at {url} in {timeout_s}s")


@contextlib.contextmanager
def serving(model: str, *, log_path: str, served_model_name: str,
            flags: Sequence[str] = (), env: Mapping[str, str] | None = None,
            timeout_s: float = 300) -> Iterator[str]:
    """Serves `model` (a path as phi4_jax.serve takes it) until the block ends; yields the
    OpenAI base URL. The server's output goes to log_path (appended)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "phi4_jax.serve", "--model", model, "--served_model_name",
             served_model_name, "--host", "127.0.0.1", "--port", str(port), *flags],
            env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(url, server, timeout_s)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
