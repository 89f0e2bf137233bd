"""Phi-4 pretraining mixture: paper Table 5 (arXiv 2412.08905), about 10T tokens at 4K context.

The single place that holds the Table 5 numbers; the mid-training and embedded mixtures derive
from them. Epochs are derived (fraction x total / unique): 1.2 / 5.2 / 13.8 / 2.4 / 1.7.

    python -m phi4_jax.data.plan data_mixtures/phi4_pretrain.py
    python -m phi4_jax.data.plan data_mixtures/phi4_pretrain.py --seq_len 4096 --global_batch 5760

Store paths are relative to the `data_root` given to the pipeline (one store per role, written
by `python -m phi4_jax.data.prepare`).
"""

from phi4_jax.data.mixture import Mixture, Source, Stage

TOTAL_TOKENS = 10e12  # the paper: "approximately 10T"

# role -> (fraction of training tokens, unique tokens)
TABLE_5 = {
    "web": (0.15, 1.3e12),  # filtered web
    "web_rewrites": (0.15, 290e9),  # synthetic rewrites of web pages
    "synthetic": (0.40, 290e9),
    "code": (0.20, 820e9),  # raw and synthetic code
    "acquired": (0.10, 580e9),  # books, academic, arXiv, PubMed, licensed
}

MIXTURE = Mixture(
    name="phi4_pretrain",
    description="Phi-4 pretraining, paper Table 5",
    total_tokens=TOTAL_TOKENS,
    sources=tuple(Source(role, path=role, unique_tokens=unique)
                  for role, (_, unique) in TABLE_5.items()),
    stages=(Stage({role: fraction for role, (fraction, _) in TABLE_5.items()}),),
)
