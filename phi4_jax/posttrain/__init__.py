"""Post-training data: Pivotal Token Search, judge-guided pairs, refusal data (docs/posttrain.md).

Each workflow is a subpackage of the same shape -- what it builds, how it talks to models, its
command line (`python -m phi4_jax.posttrain.<workflow>`):

  pts       search.py, oracles.py, cli.py       single-token pairs at pivotal tokens
  judge     pairs.py, judgement.py + backends.py, cli.py   whole-reply pairs ranked by a judge
  refusal   data.py, teachers.py, cli.py        answer-or-refuse SFT examples and 5-token pairs

Shared: `records` (the JSONL schemas: pairs and pivots in token ids end to end, SFT
conversations from `phi4_jax.data.sft`; the DPO trainer reads pairs with `read_pairs`),
`sampler` (the in-process model: `Sampler`, `ModelSampler` over
`phi4_jax.inference.decode.generate`), `remote` (OpenAI-compatible servers, Phi-4 token ids of
their text) and `demo` (counting-task smoke data). `pts_cli` and `sft_data` keep their old
command lines working.
"""

from phi4_jax.posttrain.pts import (
    ChoiceOracle,
    CodeOracle,
    MathOracle,
    Problem,
    PTSConfig,
    Question,
    false_pivot_probability,
    oracle_for,
    search_batch,
)
from phi4_jax.posttrain.records import (
    JsonlWriter,
    Pair,
    Pivot,
    ReadReport,
    SFTExample,
    pairs_fingerprint,
    read_pairs,
    read_records,
)
from phi4_jax.posttrain.sampler import ModelSampler, Rollout, Sampler

__all__ = [
    "ChoiceOracle",
    "CodeOracle",
    "JsonlWriter",
    "MathOracle",
    "ModelSampler",
    "PTSConfig",
    "Pair",
    "Pivot",
    "Problem",
    "Question",
    "ReadReport",
    "Rollout",
    "SFTExample",
    "Sampler",
    "false_pivot_probability",
    "oracle_for",
    "pairs_fingerprint",
    "read_pairs",
    "read_records",
    "search_batch",
]
