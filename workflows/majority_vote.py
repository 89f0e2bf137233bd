"""Majority-vote question filter: k sampled answers per question; drop the questions all
samples agree on (too easy) and those without a strict majority (ambiguous); keep the vote
histogram and the majority answer on each kept question.

    python -m phi4_jax.synth.run workflows/majority_vote.py --output=workdirs/voted
    python -m phi4_jax.synth.run workflows/majority_vote.py:local,k=8 --output=/tmp/voted

Input: JSONL questions {"id", "question", "kind": "math" | "text"} (e.g. seed_curation's
qa_seeds.jsonl). Math answers are grouped by math-verify in a worker process with a timeout,
others by normalized exact match. ARG: "local" and the key=value options of `DEFAULTS`.
"""

from __future__ import annotations

from phi4_jax.synth.recipes.common import MODEL_DEFAULTS, options, teacher

R = "phi4_jax.synth.recipes.vote:"
DEFAULTS = {**MODEL_DEFAULTS, "inputs": "data/questions.jsonl", "k": 5, "temperature": 0.8,
            "max_tokens": 1024, "majority": 0.5, "math_timeout_s": 10, "shard_size": 64}


def get_config(arg: str | None = None) -> dict:
    o = options(arg, DEFAULTS)
    return {
        "name": "majority_vote",
        "inputs": [o["inputs"]],
        "shard_size": o["shard_size"],
        "models": {"teacher": teacher(o)},
        "stages": [
            {"name": "answers", "kind": "python", "fn": R + "sample_answers",
             "model": "teacher", "templates": {"answer": "templates/vote_answer.txt"},
             "params": {"k": o["k"], "sampling": {"temperature": o["temperature"],
                                                  "max_tokens": o["max_tokens"], "seed": 0}}},
            {"name": "voted", "kind": "python", "fn": R + "majority_vote",
             "params": {"majority": o["majority"], "math_timeout_s": o["math_timeout_s"]}},
        ],
        "exports": {"voted": "voted.jsonl"},
    }
