"""Self-revision alone: critique each record's `text` against a rubric (reasoning, factual
accuracy; a parsed 1-10 score each), revise, critique again, until the score stops improving
or `max_rounds`; every round is kept in the record's `revision.rounds`.

    python -m phi4_jax.synth.run workflows/self_revision.py --output=workdirs/revised
    python -m phi4_jax.synth.run workflows/self_revision.py:local,inputs=x.jsonl --output=/tmp/r

Input: JSONL {"id", "text"}. ARG: "local" and the key=value options of `DEFAULTS`.
"""

from __future__ import annotations

from phi4_jax.synth.recipes.common import MODEL_DEFAULTS, options, teacher
from phi4_jax.synth.recipes.rewrite import revision_stage

DEFAULTS = {**MODEL_DEFAULTS, "inputs": "data/texts.jsonl", "max_tokens": 1024,
            "max_rounds": 3, "min_gain": 0.0, "shard_size": 32}


def get_config(arg: str | None = None) -> dict:
    o = options(arg, DEFAULTS)
    return {"name": "self_revision", "inputs": [o["inputs"]], "shard_size": o["shard_size"],
            "models": {"teacher": teacher(o)}, "stages": [revision_stage(o)],
            "exports": {"revised": "revised.jsonl"}}
