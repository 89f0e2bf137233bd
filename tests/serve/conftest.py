"""Servers for the end-to-end tests: SmolLM2-135M (real weights) behind uvicorn on 127.0.0.1.

The model loads once per session (`smollm2`); each test module starts its own server thread
(`serve(...)` in a module-scoped fixture) so its settings are its own while compiled programs,
cached per process, are shared.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def smollm2():
    """The served SmolLM2-135M-Instruct GGUF model (float32) with its tokenizer."""
    from phi4_jax.convert.gguf import smollm2_path
    from phi4_jax.serve.loading import load

    try:
        path = smollm2_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return load(path, name="smollm2")


def write_hf_dir(served, path) -> str:
    """A GGUF-loaded model written as a Hugging Face directory (safetensors, config.json,
    tokenizer.json + tokenizer_config.json) that `load_hf`, transformers and lm-eval all read."""
    import json
    import os

    import phi4_jax

    path = str(path)
    phi4_jax.save_hf(served.model, path, architecture="LlamaForCausalLM")
    served.codec._tok._tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"chat_template": served.codec.chat_template, "eos_token": "<|im_end|>",
                   "bos_token": "<|im_start|>"}, f)
    return path


@contextlib.contextmanager
def serve(served, **settings):
    """Runs the app in a uvicorn thread; yields its base URL ("http://127.0.0.1:PORT")."""
    from phi4_jax.serve.app import Settings, create_app

    port = free_port()
    config = uvicorn.Config(create_app(served, Settings(**settings)), host="127.0.0.1",
                            port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(120)
