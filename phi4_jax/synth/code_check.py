"""Run tests against a candidate program in the sandbox (PTS code oracle, HumanEval-style eval).

``check_program(program, tests, entry_point)`` executes, in one sandboxed interpreter, the
program, then the tests, then ``check(<entry_point>)`` (HumanEval convention) when an entry point
is given; plain ``assert`` tests (MBPP style) need none.  A pass requires a normal exit *and* a
per-run random token printed by the harness after the tests, so a program that calls
``sys.exit(0)`` / ``os._exit(0)`` before the tests run fails.  The token is read from a file that
the harness deletes before the program starts; this stops early exits and file snooping, not a
program that introspects the interpreter (see docs/sandbox.md).
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Callable, Sequence
from typing import Literal

from phi4_jax.synth.batch import map_bounded
from phi4_jax.synth.sandbox import SandboxConfig, SandboxResult, run_python

Verdict = Literal["passed", "failed", "error", "syntax_error", "exited_early", "timeout",
                  "memory", "output_limit", "killed", "sandbox_error"]

_HARNESS = '''\
import os as _os, sys as _sys, traceback as _tb


def _sbx_main():
    with open(".sbx_token", encoding="utf-8") as f:
        token = f.read().strip()
    _os.unlink(".sbx_token")
    entry = _sys.argv[1] if len(_sys.argv) > 1 else ""
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    for phase, fname in (("program", "solution.py"), ("tests", "tests.py")):
        with open(fname, encoding="utf-8") as f:
            src = f.read()
        try:
            code = compile(src, fname, "exec")
        except SyntaxError:
            _tb.print_exc()
            return _verdict(phase, "syntax_error")
        try:
            exec(code, ns)
        except BaseException as e:
            _tb.print_exc()
            return _verdict(phase, type(e).__name__)
    if entry:
        try:
            ns["check"](ns[entry])
        except BaseException as e:
            _tb.print_exc()
            return _verdict("tests", type(e).__name__)
    _sys.stdout.flush()
    _os.write(1, ("\\n" + token + "\\n").encode())


def _verdict(phase, exc):
    _sys.stderr.write("\\n__SBX_VERDICT__ %s %s\\n" % (phase, exc))
    _sys.stderr.flush()
    _os._exit(3)


_sbx_main()
'''
_VERDICT_RE = re.compile(r"^__SBX_VERDICT__ (program|tests) (\w+)$", re.M)


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


def check_program(program: str, tests: str, entry_point: str | None = None, *,
                  timeout_s: float | None = None, memory_mb: int | None = None,
                  config: SandboxConfig | None = None) -> CheckResult:
    """Run ``tests`` against ``program`` in a fresh sandbox; pass/fail with the reason."""
    if entry_point is not None and not entry_point.isidentifier():
        raise ValueError(f"entry_point must be an identifier: {entry_point!r}")
    token = secrets.token_hex(16)
    res = run_python(_HARNESS, files={"solution.py": program, "tests.py": tests,
                                      ".sbx_token": token},
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
    found = _VERDICT_RE.findall(res.stderr)
    if res.status == "ok" and token in res.stdout.splitlines():
        return CheckResult(True, "passed", "all tests passed", res)
    if found:
        phase, exc = found[-1]
        if exc == "syntax_error":
            return CheckResult(False, "syntax_error", f"syntax error in the {phase}", res)
        if exc in ("SystemExit", "KeyboardInterrupt"):
            return CheckResult(False, "exited_early", f"{exc} raised in the {phase}", res)
        if phase == "tests" and exc == "AssertionError":
            return CheckResult(False, "failed", f"test assertion failed: {_last_line(res)}", res)
        return CheckResult(False, "failed" if phase == "tests" else "error",
                           f"{exc} in the {phase}: {_last_line(res)}", res)
    return CheckResult(False, "exited_early",
                       f"exited (code {res.returncode}) before the tests completed", res)


def _last_line(res: SandboxResult) -> str:
    """The exception line; for a bare ``AssertionError`` the failing source line too."""
    lines = [ln.strip() for ln in res.stderr.splitlines()
             if ln.strip() and not ln.startswith("__SBX_VERDICT__")]
    if not lines:
        return ""
    if lines[-1] == "AssertionError":
        src = [ln for ln in lines[:-1] if not ln.startswith(("File ", "^", "~"))]
        return f"{src[-1][:250]}" if src else lines[-1]
    return lines[-1][:300]
