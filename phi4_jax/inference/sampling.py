"""Token sampling for decoding: greedy, temperature, top-k and top-p (nucleus), per-row keys.

Two ways to say how rows sample, drawing identical tokens for identical settings:

    SamplingConfig(temperature=0.7, top_p=0.95)   # one setting for the batch; static (hashable)
    RowSampling.of([cfg_a, cfg_b, ...])          # one setting per row, runtime arrays [B]

A `SamplingConfig` is a static argument of the jitted decode loop (a new configuration compiles
once and skips the filters it does not use); `RowSampling` lets one compiled program serve any mix
of settings (the server batches requests with different temperatures and top_p).

Order of operations (the Hugging Face convention): logits / temperature, then keep the top-k
tokens, then keep the smallest most-likely set of those whose probability mass under the
tempered, top-k-renormalized distribution reaches top_p. The most likely token always survives;
tokens tied with the last one kept are kept too. `temperature == 0` (or top_k == 1) is greedy
decoding (argmax, first index on ties).

The draw is Gumbel-max in two levels over the vocabulary in its own order (`_gumbel_max`: a
block of 256 tokens, then a token in it; exact, and 448 noise values per row instead of one per
token: 128 rows x 49,152 tokens cost about 15 ms a step instead of 300 on a 2-core CPU).
Filtered tokens have score -inf, so a row's draw depends only on its logits, its settings and
its key -- not on the batch's other rows, nor on whether another row made the batch run the
filters.

Keys: row b's draw at step t uses `fold_in(row_keys[b], t)`, with `row_keys[b] =
fold_in(key, row_ids[b])` (`row_keys`), so a row's samples follow from (key, row id) alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_CANDIDATES = 256  # top-p / top-k thresholds come from this many best tokens when they suffice
_BLOCK = 256  # the two-level draw picks a block of this many tokens, then one token in it


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

    @property
    def filters(self) -> bool:
        """Whether top-k or top-p removes any token (else every token stays drawable)."""
        return not self.is_greedy and (self.top_k > 0 or self.top_p < 1.0)


GREEDY = SamplingConfig(temperature=0.0)


class RowSampling(NamedTuple):
    """One `SamplingConfig` per row, as arrays [B]: temperature (0 = greedy), top_k (0 = no
    limit) and top_p (1 = no limit). Runtime values of the decode loop, never static."""

    temperature: jax.Array
    top_k: jax.Array
    top_p: jax.Array

    @classmethod
    def of(cls, configs: Sequence[SamplingConfig], rows: int | None = None) -> RowSampling:
        """Arrays for `configs`, padded to `rows` with greedy rows (padding rows draw nothing
        that is kept)."""
        rows = len(configs) if rows is None else rows
        temp, top_k, top_p = np.zeros(rows, np.float32), np.zeros(rows, np.int32), \
            np.ones(rows, np.float32)
        for b, c in enumerate(configs):
            temp[b], top_k[b], top_p[b] = c.temperature, c.top_k, c.top_p
        return cls(temp, top_k, top_p)


def row_keys(key: jax.Array, row_ids: jax.Array) -> jax.Array:
    """Per-row base keys [B]: fold_in(key, row_ids[b]). `key` is a typed PRNG key."""
    return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.asarray(row_ids, jnp.uint32))


def step_keys(keys: jax.Array, step: jax.Array | int) -> jax.Array:
    """The keys of one decode step [B]: fold_in(keys[b], step)."""
    return jax.vmap(jax.random.fold_in, (0, None))(keys, step)


def row_step_keys(key: jax.Array, row_ids: jax.Array, step: jax.Array | int) -> jax.Array:
    """Per-row keys for one decode step: fold_in(fold_in(key, row_id), step), shape [B]."""
    return step_keys(row_keys(key, row_ids), step)


def sample(logits: jax.Array, keys: jax.Array, config: SamplingConfig | RowSampling
           ) -> jax.Array:
    """Draws one token per row. logits float32 [B, V]; keys [B] (one PRNG key per row).

    Row b's draw depends only on logits[b], keys[b] and its settings. Returns int32 [B].
    """
    return draw(logits, keys, config)[0]


def draw(logits: jax.Array, keys: jax.Array, config: SamplingConfig | RowSampling
         ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(tokens int32 [B], their log-probs [B], logsumexp of the logits [B]).

    Log-probs are under the untempered, unfiltered distribution: logits[token] - logsumexp.
    """
    logits = logits.astype(jnp.float32)
    if isinstance(config, SamplingConfig):
        if config.is_greedy:
            token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            lse = jax.nn.logsumexp(logits, axis=-1)
            return token, _pick(logits, token) - lse, lse
        scores = logits if config.temperature == 1.0 else logits / config.temperature
        if config.filters:
            b = logits.shape[0]
            scores = _filtered(scores, jnp.full(b, config.top_k, jnp.int32),
                               jnp.full(b, config.top_p, jnp.float32))
        token, total, peak = _gumbel_max(scores, keys)
        # Untempered, unfiltered scores are the logits: their exp sums give the normalizer.
        lse = (peak + jnp.log(total) if scores is logits
               else jax.nn.logsumexp(logits, axis=-1))
        return token, _pick(logits, token) - lse, lse
    temp, top_k, top_p = (jnp.asarray(x) for x in config)
    greedy = (temp == 0) | (top_k == 1)
    scores = logits / jnp.where(greedy, 1.0, temp)[:, None]
    needs = jnp.any(~greedy & ((top_k > 0) | (top_p < 1)))
    scores = jax.lax.cond(needs, lambda s: _filtered(s, top_k, top_p), lambda s: s, scores)
    drawn, _, _ = _gumbel_max(scores, keys)
    token = jnp.where(greedy, jnp.argmax(logits, axis=-1).astype(jnp.int32), drawn)
    lse = jax.nn.logsumexp(logits, axis=-1)
    return token, _pick(logits, token) - lse, lse


def _pick(x: jax.Array, index: jax.Array) -> jax.Array:
    return jnp.take_along_axis(x, index[:, None], axis=-1)[:, 0]


def _gumbel_max(scores: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """An exact categorical draw from softmax(scores) per row, by Gumbel-max in two levels.

    The largest of (score + Gumbel noise) over a block of tokens is itself Gumbel-distributed
    around the block's logsumexp, so drawing the block by Gumbel-max over block logsumexps and
    then the token by Gumbel-max inside that block draws exactly softmax(scores): 448 noise
    values per row instead of one per token. Like one-level Gumbel-max (and unlike an
    inverse-CDF draw, where a perturbation of every earlier token's mass moves the boundary) a
    draw only changes under a last-bit change of the logits when two perturbed maxima tie.
    Returns (tokens, sum of exp(scores - peak), peak); -inf scores are never drawn.
    """
    b, v = scores.shape
    nb = -(-v // _BLOCK)
    if nb * _BLOCK != v:
        scores = jnp.pad(scores, ((0, 0), (0, nb * _BLOCK - v)), constant_values=-jnp.inf)
    blocks = scores.reshape(b, nb, _BLOCK)
    peak = jnp.max(scores, axis=-1)
    mass = jnp.exp(blocks - peak[:, None, None]).sum(-1)  # [B, nb]
    noise = jax.vmap(lambda k: jax.random.gumbel(k, (nb + _BLOCK,), jnp.float32))(keys)
    blk = jnp.argmax(jnp.log(mass) + noise[:, :nb], axis=-1)  # empty blocks: log 0 = -inf
    slab = jnp.take_along_axis(blocks, blk[:, None, None], axis=1)[:, 0]  # [B, BLOCK]
    idx = jnp.argmax(slab + noise[:, nb:], axis=-1)
    return (blk * _BLOCK + idx).astype(jnp.int32), mass.sum(-1), peak


def _filtered(scores: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """scores with every token outside each row's top-k / top-p set at -inf (vocab order)."""
    v = scores.shape[-1]
    k = min(_CANDIDATES, v)
    threshold, covered = _thresholds(scores, jax.lax.top_k(scores, k)[0], top_k, top_p)
    if k < v:  # a row whose set reaches past the candidates: thresholds from the full sort
        threshold = jax.lax.cond(
            jnp.all(covered), lambda: threshold,
            lambda: _thresholds(scores, -jnp.sort(-scores, axis=-1), top_k, top_p)[0])
    return jnp.where(scores >= threshold[:, None], scores, -jnp.inf)


def _thresholds(scores: jax.Array, best: jax.Array, top_k: jax.Array, top_p: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
    """Each row's smallest kept score, from its `best` scores in descending order [B, C], and
    whether those C scores sufficed to decide it."""
    c = best.shape[-1]
    ninf = jnp.float32(-jnp.inf)
    kth = jnp.take_along_axis(best, jnp.clip(top_k - 1, 0, c - 1)[:, None], axis=-1)[:, 0]
    tau_k = jnp.where((top_k > 0) & (top_k <= c), kth, ninf)
    peak = best[:, :1]
    # Mass of the top-k-kept tokens: over the whole vocabulary, as top-k may keep more than C.
    norm = jnp.sum(jnp.where(scores >= tau_k[:, None], jnp.exp(scores - peak), 0.0), axis=-1)
    p = jnp.where(best >= tau_k[:, None], jnp.exp(best - peak), 0.0) / norm[:, None]
    before = jnp.cumsum(p, axis=-1) - p
    n_keep = jnp.maximum(jnp.sum(before < top_p[:, None], axis=-1), 1)
    tau_p = jnp.where(top_p < 1, _pick(best, jnp.minimum(n_keep, c) - 1), ninf)
    covered = (top_k <= c) & ((top_p >= 1) | (jnp.sum(p, axis=-1) >= top_p))
    return jnp.maximum(tau_k, tau_p), covered
