"""Validation: code records run with their tests in the sandbox (a time limit is rejected as
`time_limit`, apart from `wrong_answer` and `runtime_error`), math records' final answers
checked against the reference answer by math-verify.

    python -m phi4_jax.synth.run workflows/validation.py:inputs=synthetic.jsonl --output=out/v

Input: JSONL {"id", "kind": "code", "code", "tests", "entry_point"?}, {"id", "kind": "math",
"solution", "answer"} or {"id", "kind": "text", "text"} (each fenced Python block of the text is
run; a text without code passes as `no_code`); a record without `kind` is read by its fields.
No model is asked. ARG: the key=value options of `DEFAULTS`.
"""

from __future__ import annotations

from phi4_jax.synth.recipes.common import options

DEFAULTS = {"inputs": "data/synthetic.jsonl", "timeout_s": 10, "memory_mb": 512,
            "math_timeout_s": 10, "shard_size": 64}


def get_config(arg: str | None = None) -> dict:
    o = options(arg, DEFAULTS)
    return {"name": "validation", "inputs": [o["inputs"]], "shard_size": o["shard_size"],
            "stages": [{"name": "validated", "kind": "python",
                        "fn": "phi4_jax.synth.recipes.code:validate",
                        "params": {k: o[k] for k in ("timeout_s", "memory_mb",
                                                     "math_timeout_s")}}],
            "exports": {"validated": "validated.jsonl"}}
