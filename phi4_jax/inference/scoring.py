"""Log-prob scoring: `token_logprobs`, `score`, `prompt_logprobs`, `shared_prefix_logprobs`.

    token_logprobs(model, ids, lengths)            # log p(ids[t] | ids[:t]), float32 [B, T]
    score(model, prompts, continuations)           # log-probs of given continuations
    prompt_logprobs(model, ids, top_n=5)           # the above plus each position's top n and
                                                   # the distribution after the last token
    shared_prefix_logprobs(model, contexts, continuations, context_of)
                                                   # continuations scored against their
                                                   # context's KV cache, each context run once

All under the model's untempered distribution, as `decode.generate` reports its log-probs. The
vocabulary projection runs in chunks of positions, so the [B, T, V] logits never exist. The
first three run whole rows in one forward pass; shapes are bucketed like `generate`'s (batch to
a power of two, length by `decode.bucket`, then to a multiple of the chunk).

Shared prefixes (the choices of a multiple-choice question): `shared_prefix_logprobs` runs the U
distinct contexts [U, P] once through `Transformer.hidden_cached`, then the R continuations
[R, C] against a copy of their context's cache (row r reads context context_of[r]): the context
costs P token-passes instead of P per continuation, and only continuation positions are
projected onto the vocabulary. One program per padded shape `prefix_shape` (all four sizes by
`decode.bucket`); it gives the same log-probs as whole rows up to float32 rounding (a different
order of the same sums).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from phi4_jax.model import KVCache, Transformer

_SCORE_CHUNK = 128  # positions projected onto the vocabulary at a time
_PICK_CHUNK = 512  # positions of shared-prefix continuations projected at a time


class ScoreOutput(NamedTuple):
    """What `score` returns: per-token and total log-probs of each given continuation.

    logprobs: float32 [B, C] (C = longest continuation); 0 past a row's length.
    lengths: int32 [B] continuation lengths. total: float32 [B] sum over each continuation.
    """

    logprobs: jax.Array
    lengths: jax.Array
    total: jax.Array


class PromptLogprobs(NamedTuple):
    """What `prompt_logprobs` returns (numpy, trimmed to the request).

    logprobs: float32 [B, T]: log p(ids[t] | ids[:t]); 0 at t = 0 and past a row's length.
    top_ids, top_logprobs: [B, T, n]: the n most likely tokens at position t (predicting t from
        ids[:t]; position 0 is unused) and their log-probs, descending.
    next_logits: float32 [B, V]: logits after each row's last token (the next token's).
    """

    logprobs: np.ndarray
    top_ids: np.ndarray
    top_logprobs: np.ndarray
    next_logits: np.ndarray


def _padded(model: Transformer, tokens: Any, lengths: Any, pad_id: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from phi4_jax.inference.decode import _bucketed, _pad_rows, bucket

    ids, lens = _pad_rows(tokens, lengths, pad_id)
    t_bucket = bucket(ids.shape[1], 16)
    if t_bucket > _SCORE_CHUNK:
        t_bucket = -(-t_bucket // _SCORE_CHUNK) * _SCORE_CHUNK
    padded, padded_lens = _bucketed(ids, lens, pad_id, t_bucket)
    return ids, lens, padded, padded_lens


def token_logprobs(model: Transformer, tokens: Any, lengths: Any = None,
                   *, pad_id: int = 0) -> jax.Array:
    """out[b, t] = log p(tokens[b, t] | tokens[b, :t]) in one forward pass, float32 [B, T].

    Under the model's untempered distribution. 0 at t = 0 and at t >= lengths[b]. `tokens` is
    a list of token lists or a right-padded array [B, T] with `lengths` [B] (default T).
    """
    ids, _, padded, padded_lens = _padded(model, tokens, lengths, pad_id)
    graphdef, state = nnx.split(model)
    out = _score_jit(graphdef, state, padded, padded_lens, top_n=0)[0]
    return out[:ids.shape[0], :ids.shape[1]]


def prompt_logprobs(model: Transformer, tokens: Sequence[Sequence[int]], *, top_n: int = 5,
                    pad_id: int = 0) -> PromptLogprobs:
    """`token_logprobs` plus the top `top_n` tokens of every position and the logits after
    the last token (what an OpenAI `echo` + `logprobs` request returns; see `PromptLogprobs`).
    `top_n` is static (one compiled program per value): callers pass their maximum."""
    ids, lens, padded, padded_lens = _padded(model, tokens, None, pad_id)
    graphdef, state = nnx.split(model)
    lp, top_ids, top_lps, nxt = _score_jit(graphdef, state, padded, padded_lens,
                                           top_n=max(int(top_n), 1))
    b, t = ids.shape
    return PromptLogprobs(np.asarray(lp[:b, :t]), np.asarray(top_ids[:b, :t]),
                          np.asarray(top_lps[:b, :t]), np.asarray(nxt[:b]))


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("top_n",))
def _score_jit(graphdef, state, tokens, lengths, *, top_n: int):
    """Per-position log-probs [B, T]; with top_n, also top ids / log-probs [B, T, n] (column
    t scores token t) and the logits after each row's last token [B, V]."""
    model = nnx.merge(graphdef, state)
    b, t = tokens.shape
    hidden = model.hidden(tokens)  # position t predicts token t + 1
    targets = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))
    chunk = min(_SCORE_CHUNK, t)
    n = t // chunk  # t is a multiple of the chunk (or smaller than one)
    hs = hidden.reshape(b, n, chunk, -1).swapaxes(0, 1)
    ys = targets.reshape(b, n, chunk).swapaxes(0, 1)

    def one(args):
        h, y = args
        logits = model.logits(h)
        lse = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0] - lse
        if not top_n:
            return picked, None, None
        values, ids = jax.lax.top_k(logits, top_n)
        return picked, ids, values - lse[..., None]

    picked, ids, values = jax.lax.map(one, (hs, ys))
    merge = lambda x: x.swapaxes(0, 1).reshape(b, t, *x.shape[3:])
    # Shift by one: column t holds the score of token t (predicted at position t - 1).
    shift = lambda x: jnp.concatenate([jnp.zeros_like(x[:, :1]), x[:, :-1]], axis=1)
    inside = jnp.arange(t)[None, :] < lengths[:, None]
    lp = jnp.where(inside, shift(merge(picked)), 0.0)
    if not top_n:
        return lp, None, None, None
    last = hidden[jnp.arange(b), lengths - 1][:, None]
    return lp, shift(merge(ids)), shift(merge(values)), model.logits(last)[:, 0]


def score(model: Transformer, prompts: Sequence[Sequence[int]],
          continuations: Sequence[Sequence[int]], *, pad_id: int = 0) -> ScoreOutput:
    """Log-probs of each given continuation after its prompt (one forward pass per batch).

    logprobs[b, j] = log p(continuations[b][j] | prompts[b] + continuations[b][:j]) under the
    model's untempered distribution. Every prompt needs at least one token.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token to condition on")
    full = [list(p) + list(c) for p, c in zip(prompts, continuations)]
    lp = token_logprobs(model, full, pad_id=pad_id)
    starts = np.array([len(p) for p in prompts], np.int32)
    lens = np.array([len(c) for c in continuations], np.int32)
    width = max(int(lens.max(initial=0)), 1)
    cols = np.minimum(starts[:, None] + np.arange(width)[None, :], lp.shape[1] - 1)
    picked = jnp.take_along_axis(lp, jnp.asarray(cols), axis=1)
    picked = jnp.where(np.arange(width)[None, :] < lens[:, None], picked, 0.0)
    return ScoreOutput(picked, jnp.asarray(lens), picked.sum(axis=1))


class PrefixShape(NamedTuple):
    """The padded program shape of `shared_prefix_logprobs`: contexts [U, P], continuations
    [R, C]."""

    contexts: int
    context_len: int
    rows: int
    continuation_len: int


def prefix_shape(contexts: int, context_len: int, rows: int, continuation_len: int
                 ) -> PrefixShape:
    """The padded shape for these counts and longest lengths. Counts and the continuation
    length go by `decode.bucket` (at most a third of padding; continuations at least 4 long);
    the context length, most of the work, to a multiple of 4 and of 1/8 of its power of two
    (16, 20, 24, 28, 32, 40, 48, 56, 64, 80, ...: at most a quarter of padding). Inputs with
    equal shapes run the same compiled program."""
    from phi4_jax.inference.decode import bucket

    step = max(4, 1 << max((int(context_len) - 1).bit_length() - 3, 0))
    return PrefixShape(bucket(contexts), -(-max(int(context_len), 16) // step) * step,
                       bucket(rows), bucket(continuation_len, 4))


def shared_prefix_logprobs(model: Transformer, contexts: Sequence[Sequence[int]],
                           continuations: Sequence[Sequence[int]], context_of: Sequence[int],
                           *, pad_id: int = 0, shape: PrefixShape | None = None) -> np.ndarray:
    """out[r, j] = log p(continuations[r][j] | contexts[context_of[r]] + continuations[r][:j]),
    float32 [R, C] (numpy; C = the longest continuation), 0 past a row's length.

    Every context needs at least one token and is run once however many rows continue it (see
    the module docstring). Under the model's untempered distribution, like `token_logprobs`.
    The program's shape is `prefix_shape` of the inputs, or `shape` where that is larger (a
    caller padding several batches to one program).
    """
    if not contexts or not continuations or len(continuations) != len(context_of):
        raise ValueError(f"need contexts, and one context index per continuation; got "
                         f"{len(contexts)} contexts, {len(continuations)} continuations, "
                         f"{len(context_of)} indices")
    if any(len(c) == 0 for c in contexts) or any(len(k) == 0 for k in continuations):
        raise ValueError("every context and continuation needs at least one token")
    owner = np.asarray(context_of, np.int32)
    if owner.min() < 0 or owner.max() >= len(contexts):
        raise ValueError(f"context_of must index the {len(contexts)} contexts")
    ctx_lens = np.array([len(c) for c in contexts], np.int32)
    cont_lens = np.array([len(k) for k in continuations], np.int32)
    padded = prefix_shape(len(contexts), int(ctx_lens.max()), len(continuations),
                           int(cont_lens.max()))
    if shape is not None:
        padded = PrefixShape(*map(max, zip(padded, shape)))
    ctx = np.full((padded.contexts, padded.context_len), pad_id, np.int32)
    lens = np.ones(padded.contexts, np.int32)  # padded contexts: one pad token
    for i, c in enumerate(contexts):
        ctx[i, :len(c)] = c
    lens[:len(contexts)] = ctx_lens
    cont = np.full((padded.rows, padded.continuation_len), pad_id, np.int32)
    for i, k in enumerate(continuations):
        cont[i, :len(k)] = k
    rows = np.zeros(padded.rows, np.int32)  # padded rows continue context 0
    rows[:len(continuations)] = owner
    graphdef, state = nnx.split(model)
    lp = np.asarray(_prefix_jit(graphdef, state, ctx, lens, cont, rows))
    lp = lp[:len(continuations), :int(cont_lens.max())]
    return np.where(np.arange(lp.shape[1])[None, :] < cont_lens[:, None], lp, 0.0)


@functools.partial(jax.jit, static_argnums=(0,))
def _prefix_jit(graphdef, state, contexts, context_lens, continuations, context_of):
    """Contexts [U, P] into a KV cache of P + C slots, then continuations [R, C] at slots
    context_lens[context_of[r]] + j against their context's copy of it: log-probs [R, C]."""
    model = nnx.merge(graphdef, state)
    u, p = contexts.shape
    c = continuations.shape[1]
    slots = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (u, p))
    hidden, cache = model.hidden_cached(contexts, KVCache.zeros(model.config, u, p + c), slots)
    last = hidden[jnp.arange(u), context_lens - 1]  # [U, D]: predicts a continuation's 1st token
    # Slots from a context's length on hold its padding: each row overwrites them with its own
    # tokens, and a query never sees a slot after its own.
    cache = KVCache(cache.k[:, context_of], cache.v[:, context_of])  # [L, R, P + C, K, H]
    starts = context_lens[context_of]
    hidden, _ = model.hidden_cached(continuations, cache,
                                    starts[:, None] + jnp.arange(c, dtype=jnp.int32)[None, :])
    # Position j predicts continuation token j: the context's last state, then the row's own.
    hidden = jnp.concatenate([last[context_of][:, None], hidden[:, :-1]], axis=1)
    return _picked_logprobs(model, hidden, continuations)


def _picked_logprobs(model: Transformer, hidden: jax.Array, targets: jax.Array) -> jax.Array:
    """log_softmax(logits(hidden))[targets] for hidden [B, T, D] and targets [B, T], projecting
    at most _PICK_CHUNK positions onto the vocabulary at a time: float32 [B, T]."""
    b, t, d = hidden.shape
    n = b * t
    chunk = min(_PICK_CHUNK, n)
    pad = -n % chunk
    hs = jnp.pad(hidden.reshape(n, d), ((0, pad), (0, 0))).reshape(-1, 1, chunk, d)
    ys = jnp.pad(targets.reshape(n), (0, pad)).reshape(-1, 1, chunk)

    def one(args):
        h, y = args
        logits = model.logits(h)  # [1, chunk, V]
        picked = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
        return picked - jax.nn.logsumexp(logits, axis=-1)

    return jax.lax.map(one, (hs, ys)).reshape(-1)[:n].reshape(b, t)
