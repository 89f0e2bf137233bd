"""Sandbox test fixtures: ``backend`` runs a test once per sandbox backend that works here."""

from __future__ import annotations

import dataclasses

import pytest

from phi4_jax.synth import sandbox

BACKENDS = sandbox.available_backends()


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch) -> str:
    """Force the backend of every ``backend="auto"`` run in the test (configs without a private
    root run natively either way)."""
    choose = sandbox._choose_backend

    def forced(cfg: sandbox.SandboxConfig) -> tuple[str, str]:
        if cfg.backend == "auto" and cfg.namespaces and cfg.readonly_root:
            cfg = dataclasses.replace(cfg, backend=request.param)
        return choose(cfg)

    monkeypatch.setattr(sandbox, "_choose_backend", forced)
    return request.param


_ISO: dict[str, dict] = {}


@pytest.fixture
def iso(backend) -> dict:
    """The isolation report of a default run on this backend (one probe run per backend)."""
    if backend not in _ISO:
        _ISO[backend] = sandbox.run_python("pass", timeout_s=20).isolation
    return _ISO[backend]
