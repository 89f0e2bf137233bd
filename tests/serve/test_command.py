"""`python -m phi4_jax.serve` as a process: user errors exit 2 in one line; SIGTERM under load
stops accepting, answers every accepted request in full, and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.serve.conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env() -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, HF_HUB_OFFLINE="1")
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's server has
    return env


@pytest.mark.parametrize("args, fragment", [
    (["--model=/nonexistent/model.gguf"], "no such file or directory"),
    (["--model=" + __file__], "not a GGUF file"),
    (["--model=" + ROOT], "needs config.json"),
    (["--model=x", "--max_batch=0"], "--max_batch must be >= 1"),
    (["--model=x", "--dtype=int8"], "invalid choice"),
])
def test_user_errors_exit_2_in_one_line(args, fragment):
    done = subprocess.run([sys.executable, "-m", "phi4_jax.serve", *args], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m phi4_jax.serve: error:"), lines
    assert fragment in lines[0]


@pytest.mark.slow
def test_sigterm_during_load_answers_every_accepted_request(smollm2):
    from phi4_jax.convert.gguf import smollm2_path

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "phi4_jax.serve", f"--model={smollm2_path()}", f"--port={port}",
         "--served_model_name=smollm2", "--max_batch=4", "--segment=4",
         "--log_level=warning"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.5)
        body = {"model": "smollm2", "max_tokens": 24, "temperature": 0}
        prompts = [f"Count from {k}:" for k in range(6)]
        answers: dict[int, httpx.Response | Exception] = {}

        def ask(k: int) -> None:
            try:
                answers[k] = httpx.post(f"{url}/v1/completions",
                                        json={**body, "prompt": prompts[k]}, timeout=900)
            except httpx.HTTPError as e:
                answers[k] = e

        threads = [threading.Thread(target=ask, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 600
        while True:  # all six accepted: a wave of up to four rows decoding, the rest waiting
            stats = httpx.get(f"{url}/health", timeout=5).json()
            if stats["running_rows"] + stats["queued_requests"] == 6:
                break
            assert time.monotonic() < deadline, stats
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        time.sleep(2.0)
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            httpx.get(f"{url}/health", timeout=5)
        for t in threads:
            t.join(900)
        assert proc.wait(timeout=900) == 0, proc.stdout.read()
        for k in range(6):
            answer = answers[k]
            assert isinstance(answer, httpx.Response) and answer.status_code == 200, answer
            choice = answer.json()["choices"][0]
            assert choice["finish_reason"] in ("length", "stop") and choice["text"]
            if choice["finish_reason"] == "length":
                assert answer.json()["usage"]["completion_tokens"] == 24
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
