"""Phi-4 mid-training (context extension): about 250B tokens at 16K context, RoPE base 250K.

The paper: 30% newly curated long-context data (documents > 8K tokens from academic, books and
code, with > 16K up-sampled, plus synthetic long data) and 70% "recall" tokens re-used from the
pretraining mixture. Recall weights are Table 5's fractions scaled to 70% (read from
phi4_pretrain.py, the one place that holds them) and read the same stores.

Not stated in the paper, chosen here (documented assumptions):
  - the split of the 30%: 10% documents of 8K-16K tokens, 15% documents > 16K (up-sampled: 60% of
    the organic long share against 43% of its unique tokens), 5% synthetic long data;
  - their unique tokens (40B / 30B / 10B);
  - long documents are packed best-fit (kept whole up to 16K, longer ones split at 16K).

    python -m phi4_jax.data.plan data_mixtures/phi4_midtrain.py --seq_len 16384 --global_batch 1440
"""

from data_mixtures.phi4_pretrain import TABLE_5
from phi4_jax.data.mixture import Mixture, Source, Stage

TOTAL_TOKENS = 250e9
RECALL_SHARE = 0.70

# role -> (fraction of mid-training tokens, unique tokens); fractions sum to 1 - RECALL_SHARE.
LONG_CONTEXT = {
    "long_8k_16k": (0.10, 40e9),
    "long_16k_plus": (0.15, 30e9),
    "long_synthetic": (0.05, 10e9),
}

MIXTURE = Mixture(
    name="phi4_midtrain",
    description="Phi-4 mid-training: 30% long-context, 70% recall from pretraining",
    total_tokens=TOTAL_TOKENS,
    sources=(
        *(Source(role, path=role, unique_tokens=unique, packing="best_fit")
          for role, (_, unique) in LONG_CONTEXT.items()),
        *(Source(role, path=role, unique_tokens=unique) for role, (_, unique) in TABLE_5.items()),
    ),
    stages=(Stage({**{role: f for role, (f, _) in LONG_CONTEXT.items()},
                   **{role: RECALL_SHARE * f for role, (f, _) in TABLE_5.items()}}),),
)
