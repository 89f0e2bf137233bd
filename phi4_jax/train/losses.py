"""Token-level losses. Every function returns SUMS over tokens; the train step divides once by
the global batch's weight (its count of loss tokens), so gradient accumulation over micro-batches
gives exactly the full-batch mean.

Cross-entropy per token: lse(z) - z[target], with lse the log-sum-exp of the float32 logits z.
z-loss per token (PaLM): lse(z)^2, added with a small weight to keep the softmax normalizer near
one.

The logits of a long sequence are never materialized at once: hidden states are projected in
sequence chunks inside a `lax.scan` whose body is rematerialized, so the backward pass holds one
[B, chunk, V] float32 block at a time (Phi-4: 4096 x 100352 x 4 bytes = 1.6 GB per row otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


class TokenLoss(NamedTuple):
    xent: jax.Array  # sum over tokens of mask * cross-entropy
    z: jax.Array  # sum over tokens of mask * lse^2


def xent_from_logits(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> TokenLoss:
    """Sums of masked cross-entropy and lse^2 for float32 logits [..., V]."""
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    # A one-hot contraction rather than a gather: it partitions cleanly when vocab is sharded.
    target_logit = jnp.sum(logits * jax.nn.one_hot(targets, logits.shape[-1], dtype=jnp.float32),
                           axis=-1)
    mask = mask.astype(jnp.float32)
    return TokenLoss(jnp.sum((lse - target_logit) * mask), jnp.sum(jnp.square(lse) * mask))


def chunked_xent(project: Callable[[jax.Array], jax.Array], hidden: jax.Array,
                 targets: jax.Array, mask: jax.Array, chunk: int) -> TokenLoss:
    """Cross-entropy sums of `project(hidden)` computed `chunk` positions at a time.

    hidden [B, T, D]; targets, mask [B, T]; `project` maps [B, C, D] to float32 logits [B, C, V].
    `chunk` <= 0 or >= T projects the whole sequence at once (no rematerialization).
    """
    b, t, d = hidden.shape
    if chunk <= 0 or chunk >= t:
        return xent_from_logits(project(hidden), targets, mask)
    if t % chunk:
        raise ValueError(f"train.loss_chunk={chunk} must divide the sequence length {t}")
    n = t // chunk

    def to_chunks(x: jax.Array) -> jax.Array:  # [B, T, ...] -> [n, B, C, ...]
        return jnp.swapaxes(x.reshape(b, n, chunk, *x.shape[2:]), 0, 1)

    @jax.checkpoint
    def block(h, tgt, m):
        return xent_from_logits(project(h), tgt, m)

    def body(carry: TokenLoss, xs) -> tuple[TokenLoss, None]:
        out = block(*xs)
        return TokenLoss(carry.xent + out.xent, carry.z + out.z), None

    zero = jnp.zeros((), jnp.float32)
    total, _ = jax.lax.scan(body, TokenLoss(zero, zero),
                            (to_chunks(hidden), to_chunks(targets), to_chunks(mask)))
    return total
