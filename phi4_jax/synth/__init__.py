"""Synthetic-data tooling: a sandbox for untrusted code and checkers (docs/sandbox.md)."""

from phi4_jax.synth.batch import map_bounded, run_many
from phi4_jax.synth.code_check import CheckCase, CheckResult, check_many, check_program
from phi4_jax.synth.sandbox import (
    SandboxConfig,
    SandboxResult,
    available_backends,
    probe_isolation,
    run_python,
)

__all__ = [
    "CheckCase",
    "CheckResult",
    "SandboxConfig",
    "SandboxResult",
    "available_backends",
    "check_many",
    "check_program",
    "map_bounded",
    "probe_isolation",
    "run_many",
    "run_python",
]
