"""Synthetic-data tooling: a sandbox for untrusted code and checkers (docs/sandbox.md), and the
data-workflow engine -- LLM stages with a content-addressed request cache, exactly-once shards,
in-process and Apache Beam runners (docs/synth.md)."""

from phi4_jax.synth.batch import map_bounded, run_many
from phi4_jax.synth.cache import ResponseCache, request_key
from phi4_jax.synth.client import LLMClient, ModelConfig, RequestError, Sample
from phi4_jax.synth.code_check import CheckCase, CheckResult, check_many, check_program
from phi4_jax.synth.runner import RunResult, run_workflow
from phi4_jax.synth.sandbox import (
    SandboxConfig,
    SandboxResult,
    available_backends,
    probe_isolation,
    run_python,
)
from phi4_jax.synth.stage import Reject, Stage, StageContext, llm_stage
from phi4_jax.synth.workflow import ConfigError, Workflow, from_config, load_workflow

__all__ = [
    "CheckCase",
    "CheckResult",
    "ConfigError",
    "LLMClient",
    "ModelConfig",
    "Reject",
    "RequestError",
    "ResponseCache",
    "RunResult",
    "Sample",
    "SandboxConfig",
    "SandboxResult",
    "Stage",
    "StageContext",
    "Workflow",
    "available_backends",
    "check_many",
    "check_program",
    "from_config",
    "llm_stage",
    "load_workflow",
    "map_bounded",
    "probe_isolation",
    "request_key",
    "run_many",
    "run_python",
    "run_workflow",
]
