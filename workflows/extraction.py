"""HTML to text: pages -> their main text with code blocks and math kept (resiliparse, MathML
turned into TeX first; docs/curate.md "HTML to text"), the stage before seed curation.

    python -m phi4_jax.synth.run workflows/extraction.py:inputs=pages.jsonl --output=out/text

Input: JSONL {"id", "html", "source"?}; output records keep every field but `html` and add
`text`. An extraction under `min_chars` is rejected `empty_extraction`. No model is asked. ARG:
the key=value options of `DEFAULTS`.
"""

from __future__ import annotations

from phi4_jax.synth.recipes.common import options

DEFAULTS = {"inputs": "data/pages.jsonl", "backend": "resiliparse", "min_chars": 1,
            "shard_size": 64}


def get_config(arg: str | None = None) -> dict:
    o = options(arg, DEFAULTS)
    return {"name": "extraction", "inputs": [o["inputs"]], "shard_size": o["shard_size"],
            "stages": [{"name": "extracted", "kind": "python",
                        "fn": "phi4_jax.curate.extract:extract_stage",
                        "params": {"backend": o["backend"], "min_chars": o["min_chars"]}}],
            "exports": {"extracted": "extracted.jsonl"}}
