"""Instruction reversal for code: code -> instruction -> regenerated code, kept only when the
regenerated code passes, in the sandbox, tests the original passes (the seed's own tests, or
tests the model writes that pass on the original first).

    python -m phi4_jax.synth.run workflows/code_reversal.py --output=workdirs/reversal
    python -m phi4_jax.synth.run workflows/code_reversal.py:local --output=/tmp/reversal

Input: JSONL {"id", "code", "tests"?, "entry_point"?} (HumanEval-style `check(candidate)` tests
need entry_point; plain asserts do not). ARG: "local" and the key=value options of `DEFAULTS`.
"""

from __future__ import annotations

from phi4_jax.synth.recipes.common import MODEL_DEFAULTS, options, teacher

R = "phi4_jax.synth.recipes.code:"
DEFAULTS = {**MODEL_DEFAULTS, "inputs": "data/code.jsonl", "timeout_s": 10, "memory_mb": 512,
            "max_tokens": 1024, "shard_size": 32}


def get_config(arg: str | None = None) -> dict:
    o = options(arg, DEFAULTS)
    limits = {"timeout_s": o["timeout_s"], "memory_mb": o["memory_mb"]}
    gen = {"temperature": 0.2, "max_tokens": o["max_tokens"], "seed": 0}
    return {
        "name": "code_reversal",
        "inputs": [o["inputs"]],
        "shard_size": o["shard_size"],
        "models": {"teacher": teacher(o)},
        "stages": [
            {"name": "tested", "kind": "python", "fn": R + "seed_tests", "model": "teacher",
             "templates": {"tests": "templates/reverse_tests.txt"},
             "params": {**limits, "test_attempts": 2, "sampling": gen}},
            {"name": "instruction", "kind": "python", "fn": R + "code_to_instruction",
             "model": "teacher", "templates": {"instruction": "templates/reverse_instruction.txt"},
             "params": {"sampling": gen}},
            {"name": "regenerated", "kind": "python", "fn": R + "instruction_to_code",
             "model": "teacher", "templates": {"code": "templates/reverse_code.txt"},
             "params": {"parse_retries": 1, "sampling": gen}},
            {"name": "faithful", "kind": "python", "fn": R + "check_regenerated",
             "params": limits},
        ],
        "exports": {"faithful": "pairs.jsonl"},
    }
