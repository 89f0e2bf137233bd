"""Token-level losses from hidden states, projecting onto the vocabulary in chunks.

Every loss function returns SUMS over tokens; the train step divides once by the global batch's
weight (its count of loss tokens, or pairs), so gradient accumulation over micro-batches gives
exactly the full-batch mean.

`target_logprobs` never materializes [B, T, V] logits. It scans over `vocab_chunks` slices of the
projection weight with an online log-sum-exp (running max and rescaled sum), inside a
rematerialized body: the backward pass holds one [B, T, V / n] float32 block and one [D, V / n]
weight slice at a time. Under FSDP each slice is gathered, used and its gradient reduce-scattered
on its own, so the full [D, V] weight and its full gradient never sit on a device at once (Phi-4:
5120 x 100352 in bf16 is 1 GB each).

Cross-entropy per token: lse(z) - z[target]. z-loss per token (PaLM): lse(z)^2.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from phi4_jax.model.layers import VOCAB_WEIGHT_AXES, project_to_vocab
from phi4_jax.sharding import axes as ax


class TokenLoss(NamedTuple):
    xent: jax.Array  # sum over tokens of mask * cross-entropy
    z: jax.Array  # sum over tokens of mask * lse^2


def target_logprobs(hidden: jax.Array, weight: jax.Array, targets: jax.Array,
                    vocab_chunks: int = 1) -> tuple[jax.Array, jax.Array]:
    """log p(target) and log-sum-exp of the logits, both float32 [B, T].

    hidden [B, T, D] (compute dtype), weight [D, V] (the model's `output_weight()`), targets
    [B, T] int. `vocab_chunks` must divide V.
    """
    d, v = weight.shape
    if vocab_chunks < 1 or v % vocab_chunks:
        raise ValueError(f"train.loss_vocab_chunks={vocab_chunks} must divide the vocabulary "
                         f"size {v}")
    if vocab_chunks == 1:
        logits = project_to_vocab(hidden, weight)
        lse = jax.nn.logsumexp(logits, axis=-1)
        return _pick(logits, targets) - lse, lse
    width = v // vocab_chunks
    slices = jnp.swapaxes(weight.reshape(d, vocab_chunks, width), 0, 1)  # [n, D, V/n]
    slices = ax.constrain(slices, (None, *VOCAB_WEIGHT_AXES))

    @jax.checkpoint
    def body(carry, xs):
        running_max, running_sum, target_logit = carry
        w, offset = xs
        logits = project_to_vocab(hidden, w)  # [B, T, V/n] float32
        new_max = jnp.maximum(running_max, jnp.max(logits, axis=-1))
        running_sum = (running_sum * jnp.exp(running_max - new_max)
                       + jnp.sum(jnp.exp(logits - new_max[..., None]), axis=-1))
        target_logit = target_logit + _pick(logits, targets - offset)
        return (new_max, running_sum, target_logit), None

    shape = targets.shape
    init = (jnp.full(shape, -jnp.inf, jnp.float32), jnp.zeros(shape, jnp.float32),
            jnp.zeros(shape, jnp.float32))
    offsets = jnp.arange(vocab_chunks, dtype=targets.dtype) * width
    (running_max, running_sum, target_logit), _ = jax.lax.scan(body, init, (slices, offsets))
    lse = running_max + jnp.log(running_sum)
    return target_logit - lse, lse


def _pick(logits: jax.Array, index: jax.Array) -> jax.Array:
    """logits[..., index] where 0 <= index < V', else 0 (a one-hot contraction, not a gather:
    it partitions cleanly when the vocabulary is sharded)."""
    width = logits.shape[-1]
    hit = jnp.arange(width, dtype=index.dtype) == index[..., None]
    return jnp.sum(jnp.where(hit, logits, 0.0), axis=-1)


def next_token_loss(hidden: jax.Array, weight: jax.Array, targets: jax.Array, mask: jax.Array,
                    vocab_chunks: int = 1) -> TokenLoss:
    """Sums of masked cross-entropy and lse^2 over all tokens."""
    logprob, lse = target_logprobs(hidden, weight, targets, vocab_chunks)
    mask = mask.astype(jnp.float32)
    return TokenLoss(-jnp.sum(logprob * mask), jnp.sum(jnp.square(lse) * mask))
