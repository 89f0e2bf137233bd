"""The decode loop's pieces, traced inside `generate`'s program and the server engine's segments.

    cache, logits = prefill(model, layers, prompts, prompt_lens, group, new_slots)
    loop = start(cache, rows)                    # nothing generated yet
    loop, out = emit(loop, out, logits, ...)     # token `loop.step` of every live row
    loop, out = run(model, layers, loop, out, ...)   # up to out's width more tokens

Layout. The U distinct prompts [U, P] are prefilled once; the B = U * group decode rows are
grouped by prompt (row b continues prompt b // group). With packed weights (`layers` not None)
the cache is the pair (prompt part [U, ...], generated part [B, ...]) of `packed`; otherwise the
model's stacked `KVCache` [L, B, P + new_slots, K, H], the prompt part copied to each row of its
group (the scanned path serves large models and batches, where the copy is small against the
step).

Every live row is at the same step: generated token t of each row is drawn with the key
fold_in(rows.keys[b], t) from logits computed at position prompt_lens[b // group] + t - 1, so a
wave of rows needs one scalar step and no per-row positions. A row stops after a stop token, at
its own `max_new`, or when the caller marks it done (`cancel`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from phi4_jax.inference import packed as packed_path
from phi4_jax.inference.sampling import RowSampling, SamplingConfig, draw, step_keys
from phi4_jax.model import KVCache, Transformer


class Rows(NamedTuple):
    """Per-row constants of a decode: base keys [B] (typed PRNG keys), max_new [B] tokens, and
    prompt_lens [U] (tokens of each distinct prompt)."""

    keys: jax.Array
    max_new: jax.Array
    prompt_lens: jax.Array


class Loop(NamedTuple):
    """The while-loop carry: the step (index of the token drawn next), the cache, each row's
    last token, generated count, done and stopped-by-a-stop-token flags [B]."""

    step: jax.Array
    cache: Any
    last: jax.Array
    lengths: jax.Array
    done: jax.Array
    stopped: jax.Array


class Out(NamedTuple):
    """What one call emits, column c = step - offset: tokens [B, W] (pad after a row stops),
    log-probs [B, W] (0 after), and optionally the top-n alternatives [B, W, n] (ids and
    log-probs) and the raw logits [B, W, V]."""

    tokens: jax.Array
    logprobs: jax.Array
    top_ids: jax.Array | None
    top_logprobs: jax.Array | None
    logits: jax.Array | None

    @classmethod
    def zeros(cls, rows: int, width: int, pad_id: jax.Array, *, top_n: int = 0,
              vocab: int = 0, keep_logits: bool = False) -> Out:
        top = (rows, width, top_n)
        return cls(jnp.full((rows, width), pad_id, jnp.int32),
                   jnp.zeros((rows, width), jnp.float32),
                   jnp.zeros(top, jnp.int32) if top_n else None,
                   jnp.zeros(top, jnp.float32) if top_n else None,
                   jnp.zeros((rows, width, vocab), jnp.float32) if keep_logits else None)


def prefill(model: Transformer, layers: packed_path.DecodeWeights | None, prompts: jax.Array,
            prompt_lens: jax.Array, group: int, new_slots: int) -> tuple[Any, jax.Array]:
    """The prompt pass over the distinct prompts [U, P]: (cache, logits [B, V] of each row's
    first token), B = U * group.

    Runs the scanned stack (compute-bound; the scan keeps compile time low) one prompt at a time
    (`lax.map`): a prompt's keys, values and logits are computed by the same [1, P] program
    whatever else is in the batch, so they are bitwise the same alone, in any batch and shared
    by n rows or repeated n times (a [U, P] pass changes its matmul blocking with U). At 200
    tokens a prompt keeps the matmuls as efficient as a batched pass. One position per prompt is
    projected onto the vocabulary.
    """
    u, p = prompts.shape
    slots = jnp.arange(p, dtype=jnp.int32)[None, :]

    def one(args):
        ids, n = args
        hidden, cache = model.hidden_cached(ids[None], KVCache.zeros(model.config, 1, p), slots)
        return hidden[0, n - 1], KVCache(cache.k[:, 0], cache.v[:, 0])

    last, cache = jax.lax.map(one, (prompts, prompt_lens))  # [U, D], [U, L, P, K, H]
    cache = KVCache(cache.k.swapaxes(0, 1), cache.v.swapaxes(0, 1))
    last = last[:, None]
    logits = (model.logits(last) if layers is None
              else packed_path.logits(model.config, layers, last))[:, 0]
    logits = jnp.repeat(logits, group, axis=0) if group > 1 else logits
    if layers is not None:
        return (packed_path.prompt_cache(cache),
                packed_path.generated_cache(model.config, u * group, new_slots)), logits
    spread = lambda a: jnp.pad(jnp.repeat(a, group, axis=1) if group > 1 else a,
                               ((0, 0), (0, 0), (0, new_slots), (0, 0), (0, 0)))
    return KVCache(spread(cache.k), spread(cache.v)), logits


def start(cache: Any, active: jax.Array) -> Loop:
    """The carry before the first token; rows where `active` is False are done from the start."""
    b = active.shape[0]
    return Loop(step=jnp.int32(0), cache=cache, last=jnp.zeros(b, jnp.int32),
                lengths=jnp.zeros(b, jnp.int32), done=~active, stopped=jnp.zeros(b, bool))


def step_logits(model: Transformer, layers: packed_path.DecodeWeights | None, loop: Loop,
                rows: Rows) -> tuple[jax.Array, Any]:
    """Feeds every row's last token (generated slot loop.step - 1): logits [B, V], new cache."""
    slot = loop.step - 1
    if layers is None:
        group = loop.last.shape[0] // rows.prompt_lens.shape[0]
        positions = (jnp.repeat(rows.prompt_lens, group) + slot)[:, None]
        logits, cache = model.forward_cached(loop.last[:, None], loop.cache, positions)
        return logits[:, 0], cache
    prompt, generated = loop.cache
    x = model.embed(loop.last[:, None])[:, 0]
    x, generated = packed_path.run_layers(model.config, layers, x, rows.prompt_lens, prompt,
                                          generated, slot)
    logits = packed_path.logits(model.config, layers, model.final_norm(x)[:, None])[:, 0]
    return logits, (prompt, generated)


def emit(loop: Loop, out: Out, logits: jax.Array, rows: Rows,
         sampling: SamplingConfig | RowSampling, stop_ids: jax.Array, pad_id: jax.Array,
         offset: jax.Array | int = 0) -> tuple[Loop, Out]:
    """Draws token `loop.step` of every live row from `logits` [B, V] into column
    step - offset of `out`; rows that emit a stop token or reach max_new are done after it."""
    t = loop.step
    token, logprob, lse = draw(logits, step_keys(rows.keys, t), sampling)
    live = ~loop.done
    is_stop = live & (token[:, None] == stop_ids[None, :]).any(-1)
    lengths = loop.lengths + live.astype(jnp.int32)
    col = t - offset
    put = lambda buf, value: buf.at[:, col].set(value)
    top_ids, top_lps = out.top_ids, out.top_logprobs
    if top_ids is not None:
        values, ids = jax.lax.top_k(logits, top_ids.shape[-1])
        top_ids = put(top_ids, jnp.where(live[:, None], ids, 0))
        top_lps = put(top_lps, jnp.where(live[:, None], values - lse[:, None], 0.0))
    out = Out(put(out.tokens, jnp.where(live, token, pad_id)),
              put(out.logprobs, jnp.where(live, logprob, 0.0)), top_ids, top_lps,
              None if out.logits is None else put(out.logits, jnp.where(live[:, None],
                                                                         logits, 0.0)))
    loop = Loop(step=t + 1, cache=loop.cache, last=token, lengths=lengths,
                done=loop.done | is_stop | (lengths >= rows.max_new),
                stopped=loop.stopped | is_stop)
    return loop, out


def run(model: Transformer, layers: packed_path.DecodeWeights | None, loop: Loop, out: Out,
        rows: Rows, sampling: SamplingConfig | RowSampling, stop_ids: jax.Array,
        pad_id: jax.Array, offset: jax.Array | int = 0) -> tuple[Loop, Out]:
    """Decodes until every row is done or out's columns (steps offset .. offset + W - 1) are
    full: one `lax.while_loop`, the cache updated in place."""
    end = offset + out.tokens.shape[1]

    def body(carry: tuple[Loop, Out]) -> tuple[Loop, Out]:
        loop, out = carry
        logits, cache = step_logits(model, layers, loop, rows)
        return emit(loop._replace(cache=cache), out, logits, rows, sampling, stop_ids, pad_id,
                    offset)

    def cond(carry: tuple[Loop, Out]) -> jax.Array:
        loop, _ = carry
        return (loop.step < end) & ~jnp.all(loop.done)

    return jax.lax.while_loop(cond, body, (loop, out))
