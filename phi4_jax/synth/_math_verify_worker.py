"""The math-verify worker process of `phi4_jax.synth.math_verify.MathVerifier`: one JSON pair
{"gold", "answer"} per stdin line, one {"outcome"} per stdout line, math-verify run in this
process's main thread (its signal.alarm timeouts work; PHI4_MATH_TIMEOUT seconds)."""

from __future__ import annotations

import json
import os
import sys

from phi4_jax.synth.math_verify import parse_gold


def _outcome(gold: str, answer: str, timeout_s: int) -> str:
    from math_verify import parse, verify

    try:
        parsed = parse_gold(gold, timeout_s)
        if not parsed:
            return "error"
        pred = parse(answer, parsing_timeout=timeout_s)
        if not pred:
            return "not_equal"
        return "equal" if verify(parsed, pred, timeout_seconds=timeout_s) else "not_equal"
    except Exception:  # math-verify raises on pathological input
        return "error"


def main() -> None:
    timeout = int(os.environ.get("PHI4_MATH_TIMEOUT", "5"))
    for line in sys.stdin:
        pair = json.loads(line)
        print(json.dumps({"outcome": _outcome(pair["gold"], pair["answer"], timeout)}),
              flush=True)


if __name__ == "__main__":
    main()
