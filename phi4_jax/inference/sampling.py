"""Token sampling for decoding: greedy, temperature, top-k and top-p (nucleus), per-row keys.

`SamplingConfig` is a frozen (hashable) dataclass and is a *static* argument of the jitted
decode loop: a new configuration compiles once, a new step or batch never does.

Order of operations (the Hugging Face convention): logits / temperature, then keep the top-k
tokens, then keep the smallest prefix of those (sorted by probability) whose probability mass
under the tempered, top-k-renormalized distribution reaches top_p. The most likely token always
survives. `temperature == 0` is greedy decoding (argmax, first index on ties).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How the next token is drawn from the model's logits.

    temperature: 0 means greedy; otherwise logits are divided by it before sampling.
    top_k: keep only the k most likely tokens (0 = no limit).
    top_p: keep the smallest most-likely set with mass >= top_p (1.0 = no limit).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"SamplingConfig.temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


GREEDY = SamplingConfig(temperature=0.0)


def candidate_logits(logits: jax.Array, config: SamplingConfig
                     ) -> tuple[jax.Array, jax.Array | None]:
    """The tempered logits the sampler draws from, with filtered-out entries at -inf.

    logits: float32 [..., V]. Returns (scores, ids): when top-k or top-p is active, `scores` is
    [..., C] in descending order and `ids` [..., C] the vocabulary ids of its columns (C = top_k,
    or V for top-p alone); otherwise scores is [..., V] in vocabulary order and ids is None.
    Not for greedy configurations.
    """
    scores = logits.astype(jnp.float32) / config.temperature
    vocab = scores.shape[-1]
    k = min(config.top_k, vocab) if config.top_k else 0
    if not k and config.top_p >= 1.0:
        return scores, None
    scores, ids = jax.lax.top_k(scores, k or vocab)  # sorted, descending
    if config.top_p < 1.0:
        probs = jax.nn.softmax(scores, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # exclusive cumulative mass
        keep = mass_before < config.top_p
        keep = keep.at[..., 0].set(True)
        scores = jnp.where(keep, scores, -jnp.inf)
    return scores, ids


def sample(logits: jax.Array, keys: jax.Array, config: SamplingConfig) -> jax.Array:
    """Draws one token per row. logits float32 [B, V]; keys [B] (one PRNG key per row).

    Row b's draw depends only on logits[b] and keys[b]. Returns int32 [B].
    """
    if config.is_greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    scores, ids = candidate_logits(logits, config)
    choice = jax.vmap(jax.random.categorical)(keys, scores)
    if ids is not None:
        choice = jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0]
    return choice.astype(jnp.int32)


def row_step_keys(key: jax.Array, row_ids: jax.Array, step: jax.Array | int) -> jax.Array:
    """Per-row keys for one decode step: fold_in(fold_in(key, row_id), step), shape [B]."""
    per_row = jax.vmap(jax.random.fold_in, (None, 0))(key, row_ids)
    return jax.vmap(jax.random.fold_in, (0, None))(per_row, step)
