"""Math answer equivalence with `math-verify`, in a worker subprocess with a timeout: shared by
the evaluation harness (CHAMP), the data workflows
(majority vote, validation: `phi4_jax.synth.recipes`) and, for `parse_gold`, the PTS math oracle.

    with MathVerifier(timeout_s=10) as v:
        v.check("239", "... so the answer is \\\\boxed{239}.")   # "equal"
        v.check("1/2", "the answer is 3")                       # "not_equal"

Three outcomes: "equal", "not_equal", and "error" (math-verify raised, the gold answer does not
parse, or the pair took longer than `timeout_s`: the worker is then killed and a fresh one
started for the next pair). The worker runs math-verify in its main thread, so math-verify's
own signal.alarm timeouts work too. A bare gold answer ("2^{997}") is read as math first (wrapped
in $...$), as math-verify advises and the PTS math oracle does.

The worker is `phi4_jax.synth._math_verify_worker`: one JSON pair per stdin line, one
{"outcome"} per stdout line.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from typing import Any

OUTCOMES = ("equal", "not_equal", "error")


def parse_gold(gold: str, timeout_s: int | None) -> list[Any]:
    """math-verify's parse of a gold answer ([] when it does not parse): a bare answer
    ("2^{997}", "sqrt(2)") is read as math first (wrapped in $...$), as math-verify advises.
    `timeout_s` None disables math-verify's signal.alarm (needed outside the main thread)."""
    from math_verify import parse

    g = gold.strip()
    delimited = "$" in g or "\\boxed" in g or "\\(" in g
    parsed = [] if delimited or not g else parse(f"${g}$", parsing_timeout=timeout_s)
    return parsed or parse(g, parsing_timeout=timeout_s)


class MathVerifier:
    """A long-lived worker process; `check` waits at most `timeout_s` for each pair."""

    def __init__(self, timeout_s: float = 10.0):
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self._fresh = False

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            env = dict(os.environ, PHI4_MATH_TIMEOUT=str(max(int(self.timeout_s), 1)))
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "phi4_jax.synth._math_verify_worker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
            self._fresh = True
        return self._proc

    def check(self, gold: str, answer: str) -> str:
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps({"gold": gold, "answer": answer}) + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            self.close()
            return "error"
        # A fresh worker's first pair also waits for it to import math-verify (sympy).
        grace, self._fresh = 60.0 if self._fresh else 0.0, False
        ready, _, _ = select.select([proc.stdout], [], [], self.timeout_s + grace)
        line = proc.stdout.readline() if ready else ""
        if not line:
            self.close()  # timed out or died: a fresh worker for the next pair
            return "error"
        outcome = json.loads(line).get("outcome")
        return outcome if outcome in OUTCOMES else "error"

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None
