"""Post-training data: Pivotal Token Search, judge-guided pairs, refusal data (docs/posttrain.md).

Every output is JSONL in the schemas of `phi4_jax.posttrain.pairs` (DPO pairs in token ids end to
end, pivotal tokens, SFT conversations); the DPO trainer reads pairs with `read_pairs`.
The model is reached only through `phi4_jax.posttrain.sampler.Sampler` (`ModelSampler` wraps
`phi4_jax.model.decode.generate`).
"""

from phi4_jax.posttrain.oracles import ChoiceOracle, CodeOracle, MathOracle, Question, oracle_for
from phi4_jax.posttrain.pairs import (
    JsonlWriter,
    Pair,
    Pivot,
    ReadReport,
    SFTExample,
    pairs_fingerprint,
    read_pairs,
    read_records,
)
from phi4_jax.posttrain.pts import Problem, PTSConfig, false_pivot_probability, search_batch
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
