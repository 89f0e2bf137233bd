"""The embedded mixture: paper Table 5's roles and fractions over the offline embedded corpus.

    python -m launch.local --exp=tiny_pretrain --workdir=/tmp/tiny   # data.mixture = "embedded"

The corpus (phi4_jax.data.embedded: stdlib docstrings, their rewrites, arithmetic problems,
stdlib code, the reference manual) is built once under the cache directory (`data.cache_dir`,
default tempdir/phi4_data, about 2 s). Each role's unique tokens are Table 5's (from
phi4_pretrain.py, the one place its numbers live) scaled by budget / 10T, and the weights are
Table 5's fractions, so the default 1.5M-token budget repeats each role about as often as Table 5
does (1.2 / 5.2 / 13.8 / 2.4 / 1.7 epochs).
"""

from __future__ import annotations

from data_mixtures.phi4_pretrain import TABLE_5, TOTAL_TOKENS
from phi4_jax.data.embedded import DEFAULT_BUDGET, embedded_mixture
from phi4_jax.data.mixture import Mixture


def build_mixture(cache_dir: str, budget_tokens: int = DEFAULT_BUDGET) -> Mixture:
    """The embedded mixture with its stores under cache_dir (built on the first call)."""
    return embedded_mixture(
        cache_dir, TABLE_5, reference_tokens=TOTAL_TOKENS, budget_tokens=budget_tokens,
        description="offline default: Python stdlib docstrings / rewrites / arithmetic / code / "
                    "reference manual, Table 5 roles and fractions")
