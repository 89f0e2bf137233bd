"""Rewrite and augment: each seed passage into an exercise, a discussion and a structured
reasoning task (one template per dataset type), each then self-revised against a rubric.

    python -m phi4_jax.synth.run workflows/rewrite.py --output=workdirs/rewrite
    python -m phi4_jax.synth.run workflows/rewrite.py:local,max_rounds=2 --output=/tmp/rw

Input: JSONL seeds {"id", "text"} (e.g. seed_curation's seeds.jsonl). Add a dataset type by
adding templates/rewrite_NAME.txt and NAME to TYPES. ARG: "local" and the key=value options of
`DEFAULTS`; `revise=false` exports the rewrites without self-revision (a model too small to
write the critique's JSON, as in phi4_jax.synth.e2e).
"""

from __future__ import annotations

from phi4_jax.synth.recipes.common import MODEL_DEFAULTS, options, teacher
from phi4_jax.synth.recipes.rewrite import revision_stage

R = "phi4_jax.synth.recipes.rewrite:"
TYPES = ("exercise", "discussion", "reasoning")
DEFAULTS = {**MODEL_DEFAULTS, "inputs": "data/seeds.jsonl", "max_tokens": 1024,
            "max_rounds": 3, "min_gain": 0.0, "revise": True, "reject_truncated": True,
            "shard_size": 32}


def get_config(arg: str | None = None) -> dict:
    o = options(arg, DEFAULTS)
    return {
        "name": "rewrite",
        "inputs": [o["inputs"]],
        "shard_size": o["shard_size"],
        "models": {"teacher": teacher(o)},
        "stages": [
            {"name": "rewritten", "kind": "python", "fn": R + "rewrite", "model": "teacher",
             "templates": {t: f"templates/rewrite_{t}.txt" for t in TYPES},
             "params": {"types": list(TYPES), "reject_truncated": o["reject_truncated"],
                        "sampling": {"temperature": 0.7, "max_tokens": o["max_tokens"],
                                     "seed": 0}}},
            *([revision_stage(o)] if o["revise"] else []),
        ],
        "exports": {"revised" if o["revise"] else "rewritten": "rewritten.jsonl"},
    }
