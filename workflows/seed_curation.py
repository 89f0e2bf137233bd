"""Seed curation: pages -> passages (by structure, bounded) -> an LLM rubric score per passage
-> the best passages of each page -> seeds; and Q&A seeds extracted from those passages.

    python -m phi4_jax.synth.run workflows/seed_curation.py --output=workdirs/seeds
    python -m phi4_jax.synth.run workflows/seed_curation.py:local,threshold=2 --output=/tmp/s

Input: JSONL pages {"id", "text"} (or "pages": [texts] to rank a source's pages together;
"source" optional). ARG: "local" (phi4_jax.serve on localhost:8000) and key=value options:
the keys of `DEFAULTS` below (phi4_jax.synth.recipes.common.options). `score_prefill=Score:`
starts the rubric reply with "Score:" (a small model's explanation rarely ends in the score line;
with the prefill and `score_max_tokens=3` it answers the number). `scorer=module:function`
replaces the LLM rubric by a passage scorer (e.g. a quality classifier); `qa=false` leaves out
the Q&A branch (with a scorer, the workflow then asks no model).
"""

from __future__ import annotations

from phi4_jax.synth.recipes.common import MODEL_DEFAULTS, options, teacher

R = "phi4_jax.synth.recipes.seeds:"
DEFAULTS = {**MODEL_DEFAULTS, "inputs": "data/pages.jsonl", "max_chars": 1500, "min_chars": 200,
            "threshold": 3, "top_fraction": 0.5, "scorer": None, "qa": True, "shard_size": 64,
            "score_prefill": None, "score_max_tokens": 256}


def get_config(arg: str | None = None) -> dict:
    o = options(arg, DEFAULTS)
    judge = {"temperature": 0.0, "max_tokens": 256}
    score = {**judge, "max_tokens": o["score_max_tokens"]}
    stages = [
        {"name": "passages", "kind": "python", "fn": R + "segment_pages",
         "params": {"max_chars": o["max_chars"], "min_chars": o["min_chars"]}},
        {"name": "scored", "kind": "python", "fn": R + "score_passages",
         **({} if o["scorer"] else {"model": "teacher"}),
         "templates": {"score": "templates/seed_score.txt"},
         "params": {"scale": [0, 5], "parse_retries": 2, "sampling": score,
                    "prefill": o["score_prefill"], "scorer": o["scorer"]}},
        {"name": "seeds", "kind": "python", "fn": R + "keep_best",
         "params": {"threshold": o["threshold"], "top_fraction": o["top_fraction"]}},
    ]
    if o["qa"]:
        stages.append(
            {"name": "qa", "kind": "python", "fn": R + "extract_qa", "model": "teacher",
             "input": "seeds", "templates": {"qa": "templates/seed_qa.txt"},
             "params": {"max_answer_chars": 100, "parse_retries": 2, "sampling": judge}})
    asks = o["qa"] or not o["scorer"]
    return {
        "name": "seed_curation",
        "inputs": [o["inputs"]],
        "shard_size": o["shard_size"],
        "models": {"teacher": teacher(o)} if asks else {},
        "stages": stages,
        "exports": {"seeds": "seeds.jsonl", **({"qa": "qa_seeds.jsonl"} if o["qa"] else {})},
    }
