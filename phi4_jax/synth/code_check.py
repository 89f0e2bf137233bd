"""Run tests against a candidate program in the sandbox (PTS code oracle, HumanEval-style eval).

``check_program(program, tests, entry_point)`` runs, in one sandbox, two interpreters: the
*judge* (``_harness_judge.py``, the sandbox's ``main.py``) and the *candidate worker*
(``_harness_worker.py``), which it starts only after it has read and deleted the per-run token
and the tests.  The worker executes the program; the judge executes the tests -- then
``check(<entry_point>)`` (HumanEval convention) when an entry point is given; plain ``assert``
tests (MBPP style) need none -- in its own interpreter, with its own builtins, calling into the
candidate through proxies whose results arrive as fresh builtin values (``_harness_codec``).
So the verdict is computed by code the candidate cannot patch: replacing ``builtins.exec``,
defining ``check``, patching ``sys.exit``/``os._exit``/``print``/``AssertionError``, early
exits, reading the tests from disk, returning an object that equals everything -- all fail.
A pass requires the judge's line ``<token> {"verdict": "passed", ...}`` on stdout (the
candidate never knows the token) and a clean sandbox status.  See docs/sandbox.md.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import secrets
from collections.abc import Callable, Sequence
from typing import Literal

from phi4_jax.synth.batch import map_bounded
from phi4_jax.synth.sandbox import SandboxConfig, SandboxResult, run_python

Verdict = Literal["passed", "failed", "error", "syntax_error", "exited_early", "timeout",
                  "memory", "output_limit", "killed", "sandbox_error"]
_HERE = os.path.dirname(os.path.abspath(__file__))
_VERDICTS = set(Verdict.__args__)  # type: ignore[attr-defined]


@dataclasses.dataclass
class CheckResult:
    """``passed`` plus a coarse ``verdict`` and a human-readable ``reason``."""

    passed: bool
    verdict: Verdict
    reason: str
    result: SandboxResult


@dataclasses.dataclass(frozen=True)
class CheckCase:
    program: str
    tests: str
    entry_point: str | None = None


@functools.cache
def _harness_files() -> dict[str, str]:
    def read(name: str) -> str:
        with open(os.path.join(_HERE, name), encoding="utf-8") as f:
            return f.read()
    return {"main.py": read("_harness_judge.py"), "_harness_codec.py": read("_harness_codec.py"),
            "_harness_worker.py": read("_harness_worker.py")}


def check_program(program: str, tests: str, entry_point: str | None = None, *,
                  timeout_s: float | None = None, memory_mb: int | None = None,
                  config: SandboxConfig | None = None) -> CheckResult:
    """Run ``tests`` against ``program`` in a fresh sandbox; pass/fail with the reason."""
    if entry_point is not None and not entry_point.isidentifier():
        raise ValueError(f"entry_point must be an identifier: {entry_point!r}")
    token = secrets.token_hex(16)
    harness = dict(_harness_files())
    res = run_python(harness.pop("main.py"), files={**harness, "solution.py": program,
                                                    "tests.py": tests, ".sbx_token": token},
                     args=[entry_point] if entry_point else [], timeout_s=timeout_s,
                     memory_mb=memory_mb, config=config)
    return _verdict(res, token)


def check_many(cases: Sequence[CheckCase], *, config: SandboxConfig | None = None,
               max_workers: int | None = None,
               progress: bool | Callable[[int, int], None] = False) -> list[CheckResult]:
    """``check_program`` over many cases with a bounded pool; results in input order."""
    return map_bounded(
        lambda c: check_program(c.program, c.tests, c.entry_point, config=config), cases,
        max_workers=max_workers, progress=progress)


def _verdict(res: SandboxResult, token: str) -> CheckResult:
    if res.status not in ("ok", "error"):  # timeout, memory, output_limit, killed, sandbox_error
        return CheckResult(False, res.status, res.reason, res)  # type: ignore[arg-type]
    found = re.findall(rf"^{token} (\{{.*\}})$", res.stdout, re.M)
    if not found:
        return CheckResult(False, "exited_early",
                           f"exited (code {res.returncode}) before the judge's verdict", res)
    try:
        v = json.loads(found[-1])
        verdict, reason = str(v["verdict"]), str(v["reason"])
    except (ValueError, KeyError, TypeError):
        return CheckResult(False, "sandbox_error", "malformed verdict line", res)
    if verdict not in _VERDICTS:
        return CheckResult(False, "sandbox_error", f"unknown verdict {verdict!r}", res)
    passed = verdict == "passed" and res.status == "ok"
    if verdict == "passed" and not passed:
        verdict, reason = "sandbox_error", f"judge passed but the run ended {res.status}"
    return CheckResult(passed, verdict, reason, res)  # type: ignore[arg-type]
