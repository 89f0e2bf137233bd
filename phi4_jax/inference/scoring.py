"""Log-prob scoring in one forward pass: `token_logprobs`, `score`, `prompt_logprobs`.

    token_logprobs(model, ids, lengths)            # log p(ids[t] | ids[:t]), float32 [B, T]
    score(model, prompts, continuations)           # log-probs of given continuations
    prompt_logprobs(model, ids, top_n=5)           # the above plus each position's top n and
                                                   # the distribution after the last token

All under the model's untempered distribution, as `decode.generate` reports its log-probs. The
vocabulary projection runs in chunks of positions, so the [B, T, V] logits never exist. Shapes
are bucketed like `generate`'s (batch to a power of two, length by `decode.bucket`, then to a
multiple of the chunk).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from phi4_jax.model import Transformer

_SCORE_CHUNK = 128  # positions projected onto the vocabulary at a time


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
