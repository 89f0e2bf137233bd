"""Math answer equivalence with `math-verify`, in a worker subprocess with a timeout.

    with MathVerifier(timeout_s=10) as v:
        v.check("239", "... so the answer is \\\\boxed{239}.")   # "equal"
        v.check("1/2", "the answer is 3")                       # "not_equal"

The implementation is `phi4_jax.synth.math_verify` (shared with the data workflows' majority
vote and validation, and the PTS math oracle's gold parsing); this module keeps the harness's
import path and, run as `python -m phi4_jax.eval.math_check`, the worker.
"""

from __future__ import annotations

from phi4_jax.synth.math_verify import OUTCOMES, MathVerifier, _outcome, _worker, parse_gold

__all__ = ["OUTCOMES", "MathVerifier", "_outcome", "parse_gold"]

if __name__ == "__main__":
    _worker()
