"""Pivotal Token Search (Phi-4 report, section 4.3): single-token DPO pairs at pivotal tokens.

  search   the algorithm: `PTSConfig`, `Problem`, `search_batch`, `false_pivot_probability`
  oracles  success checks it asks: `Question`, `MathOracle`, `CodeOracle`, `ChoiceOracle`
  workflow the search as a `phi4_jax.synth` workflow: shards, markers, rejects, resume
  cli      the runner, `python -m phi4_jax.posttrain.pts` (alias: `...posttrain.pts_cli`)

The policy is reached through `phi4_jax.posttrain.sampler.Sampler`; records are
`phi4_jax.posttrain.records` pairs and pivots.
"""

from phi4_jax.posttrain.pts.oracles import (
    ChoiceOracle,
    CodeOracle,
    MathOracle,
    Oracle,
    Question,
    oracle_for,
)
from phi4_jax.posttrain.pts.search import (
    Problem,
    PTSConfig,
    false_pivot_probability,
    search_batch,
)

__all__ = ["ChoiceOracle", "CodeOracle", "MathOracle", "Oracle", "PTSConfig", "Problem",
           "Question", "false_pivot_probability", "oracle_for", "search_batch"]
