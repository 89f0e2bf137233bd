"""KV-cache decoding: batched prefill + one jitted `lax.while_loop`, and log-prob scoring.

    out = generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=32,
                   sampling=SamplingConfig(temperature=0.7, top_p=0.95),
                   key=jax.random.key(0), stop_tokens=(eos,))
    out.tokens, out.logprobs, out.lengths          # [B, 32], [B, 32], [B]
    token_logprobs(model, ids, lengths)            # log p(ids[t] | ids[:t]), one forward pass
    score(model, prompts, continuations)           # log-probs of given continuations

Log-probs. Every log-prob returned by this module is under the model's own, *untempered and
unfiltered* next-token distribution, log_softmax(logits)[token], whatever `SamplingConfig` drew
the token. That is what Pivotal Token Search and evaluation need; the sampling distribution
(tempered / truncated) is only used to draw.

Compilation. Inputs are padded to shape buckets (batch to a power of two, prompt length and
max_new_tokens by `bucket`: 16, 24, 32, 48, 64, 96, ...), so any batch with the same padded shape
reuses the compiled program; stop tokens (up to 4 per program), pad id, the real max_new_tokens,
row ids and the key are runtime values. A new `SamplingConfig` or model structure compiles once.
The KV cache is allocated inside the jitted function and carried by the while loop, so XLA
updates it in place (nothing to donate, no host round trips, no cache copies per step). The loop
exits as soon as every row has stopped.

Small models at small batch (`packed.supports`) decode with per-layer packed weights and an
unrolled layer loop instead of the scanned stack: inside a scan XLA:CPU copies each layer's
weight slice before using it, which nearly doubles the memory traffic of a bandwidth-bound step
(see `phi4_jax.inference.packed`). The packed copy is made once per model (and parameter
update), outside the compiled program; prefill still runs the scan.

Determinism. Row b's draw at step t uses the key fold_in(fold_in(key, row_ids[b]), t) and only
row b's logits. The same key, row ids, prompts and config give the same tokens. A row's samples
do not depend on the other rows of the batch or on its position in it (pass explicit `row_ids`)
as long as its logits are bitwise the same; logits computed under different padded shapes can
differ in the last bits, which can flip a draw sitting on a near tie.

N samples per prefix (Pivotal Token Search, several answers per question): repeat each prompt
N times in one batch; distinct row ids give independent draws, and `score` / `token_logprobs`
give log-probs of given solutions under the same distribution as `GenerateOutput.logprobs`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from phi4_jax.inference import packed as packed_path
from phi4_jax.inference.sampling import GREEDY, SamplingConfig, row_step_keys, sample
from phi4_jax.model import KVCache, ModelConfig, Transformer

Prompts = Sequence[Sequence[int]] | np.ndarray | jax.Array


def bucket(n: int, minimum: int = 1) -> int:
    """Rounds n up to the next of minimum, then 2^k and 1.5 * 2^k (at most 33% padding)."""
    n = max(int(n), int(minimum))
    p = 1 << (n - 1).bit_length()  # smallest power of two >= n
    return p * 3 // 4 if p >= 4 and p * 3 // 4 >= n else p


def batch_bucket(n: int) -> int:
    """Batch sizes round up to a power of two (batch padding costs little when decoding)."""
    return 1 << (max(int(n), 1) - 1).bit_length()


class GenerateOutput(NamedTuple):
    """What `generate` returns (jax arrays, batch and steps trimmed to the request).

    tokens: int32 [B, max_new_tokens]; after a row stops, `pad_id`.
    logprobs: float32 [B, max_new_tokens]; log p_model(token | prefix) under the untempered,
        unfiltered model distribution; 0 after a row stops.
    lengths: int32 [B]; generated tokens per row, the stop token included.
    stopped: bool [B]; True where a stop token (rather than max_new_tokens) ended the row.
    logits: float32 [B, max_new_tokens, V] raw logits each token was drawn from, only with
        `return_logits=True` (else None); rows are 0 after a row stops.
    """

    tokens: jax.Array
    logprobs: jax.Array
    lengths: jax.Array
    stopped: jax.Array
    logits: jax.Array | None = None

    def to_lists(self) -> list[list[int]]:
        """Each row's generated token ids (stop token included), as Python lists."""
        tokens, lengths = np.asarray(self.tokens), np.asarray(self.lengths)
        return [row[:n].tolist() for row, n in zip(tokens, lengths)]


class ScoreOutput(NamedTuple):
    """What `score` returns: per-token and total log-probs of each given continuation.

    logprobs: float32 [B, C] (C = longest continuation); 0 past a row's length.
    lengths: int32 [B] continuation lengths. total: float32 [B] sum over each continuation.
    """

    logprobs: jax.Array
    lengths: jax.Array
    total: jax.Array


# -- host-side batching ----------------------------------------------------------------------
def _pad_rows(rows: Prompts, lengths: Any, pad_id: int, min_len: int = 1
              ) -> tuple[np.ndarray, np.ndarray]:
    """List of token lists, or padded [B, T] + lengths, -> (int32 [B, T], int32 [B])."""
    if isinstance(rows, (np.ndarray, jax.Array)):
        ids = np.asarray(rows, np.int32)
        if ids.ndim != 2:
            raise ValueError(f"padded token ids must be [B, T], got shape {ids.shape}")
        lens = (np.full(ids.shape[0], ids.shape[1], np.int32) if lengths is None
                else np.asarray(lengths, np.int32))
    else:
        if lengths is not None:
            raise ValueError("lengths are only accepted with a padded array")
        lens = np.array([len(r) for r in rows], np.int32)
        ids = np.full((len(rows), max(int(lens.max(initial=0)), 1)), pad_id, np.int32)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
    if lens.shape != (ids.shape[0],) or ids.shape[0] == 0:
        raise ValueError(f"need lengths [B] for a non-empty batch; got {lens.shape} for "
                         f"{ids.shape[0]} rows")
    if lens.min() < min_len or lens.max() > ids.shape[1]:
        raise ValueError(f"every row needs {min_len} to {ids.shape[1]} tokens; lengths "
                         f"range over [{lens.min()}, {lens.max()}]")
    return ids, lens


def _bucketed(ids: np.ndarray, lens: np.ndarray, pad_id: int, t_bucket: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Pads rows to the batch bucket and columns to t_bucket; padded rows get length 1."""
    b = batch_bucket(ids.shape[0])
    out = np.full((b, t_bucket), pad_id, np.int32)
    out[:ids.shape[0], :ids.shape[1]] = ids
    out_lens = np.ones(b, np.int32)
    out_lens[:ids.shape[0]] = lens
    return out, out_lens


def special_ids(config: ModelConfig, stop_tokens: Sequence[int] | None, pad_id: int | None
                ) -> tuple[tuple[int, ...], int]:
    """Resolves `generate`'s defaults: stop at the config's eos id and pad with its pad id
    (each only when it lies inside the vocabulary; else no stop token, pad 0)."""
    inside = lambda i: i is not None and 0 <= i < config.vocab_size
    if stop_tokens is None:
        stop_tokens = (config.eos_token_id,) if inside(config.eos_token_id) else ()
    if pad_id is None:
        pad_id = config.pad_token_id if inside(config.pad_token_id) else 0
    return tuple(int(t) for t in stop_tokens), int(pad_id)


# -- generation ------------------------------------------------------------------------------
def generate(model: Transformer, prompts: Prompts, *, max_new_tokens: int,
             sampling: SamplingConfig = GREEDY,
             key: jax.Array | None = None, stop_tokens: Sequence[int] | None = None,
             pad_id: int | None = None, prompt_lengths: Any = None,
             row_ids: Any = None, return_logits: bool = False) -> GenerateOutput:
    """Continues each prompt by up to `max_new_tokens` tokens with a KV cache.

    prompts: list of token-id lists (ragged), or a right-padded int array [B, P] with
        `prompt_lengths` [B] (default: all P). Every prompt needs at least one token.
    sampling: static; greedy by default. Non-greedy sampling needs `key` (a PRNG key).
    stop_tokens: a row stops after emitting any of these (kept in its output). None means the
        model's eos_token_id if it has one; () disables stopping.
    pad_id: fills tokens after a row stops (and prompt padding); default the model's pad id
        or 0.
    row_ids: int [B] identities folded into the key per row (default 0..B-1); give a row the
        same id (and key) to get the same samples whatever else is in the batch.
    return_logits: also return every step's full logits [B, max_new_tokens, V] (debugging,
        tests; costs memory).

    Returned log-probs are under the model's untempered, unfiltered distribution (see module
    docstring); see `GenerateOutput` for the fields.
    """
    cfg = model.config
    stop_tokens, pad_id = special_ids(cfg, stop_tokens, pad_id)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not sampling.is_greedy and key is None:
        raise ValueError(f"sampling {sampling} needs an explicit PRNG `key`")
    ids, lens = _pad_rows(prompts, prompt_lengths, pad_id)
    n_rows = ids.shape[0]
    if int(lens.max()) + max_new_tokens > cfg.max_seq_len:
        raise ValueError(f"prompt ({int(lens.max())}) + max_new_tokens ({max_new_tokens}) "
                         f"exceeds the model's max_seq_len {cfg.max_seq_len}")
    tokens, lens = _bucketed(ids, lens, pad_id, bucket(int(lens.max()), 16))
    rows = np.arange(tokens.shape[0], dtype=np.int32)
    if row_ids is not None:
        rows[:n_rows] = np.asarray(row_ids, np.int32)
    stops = np.full(bucket(len(stop_tokens), 4), -1, np.int32)
    stops[:len(stop_tokens)] = stop_tokens
    if key is None:
        key = jax.random.key(0)  # unused by greedy decoding
    elif not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)  # raw uint32 keys (jax.random.PRNGKey)
    graphdef, state = nnx.split(model)
    packed = packed_path.supports(model, tokens.shape[0])
    layers = packed_path.decode_weights(model) if packed else None
    active = np.arange(tokens.shape[0]) < n_rows
    out = _generate_jit(graphdef, state, layers, tokens, lens, active, key, rows, stops,
                        np.int32(pad_id), np.int32(max_new_tokens), sampling=sampling,
                        new_bucket=bucket(max_new_tokens, 16), return_logits=return_logits)
    return GenerateOutput(*(None if x is None else x[:n_rows, :max_new_tokens] if x.ndim >= 2
                            else x[:n_rows] for x in out))


class _Loop(NamedTuple):
    step: jax.Array        # index of the token being produced next
    cache: KVCache | tuple[packed_path.HeadMajorKV, ...]  # scanned or packed path
    last: jax.Array        # [B] previous token
    tokens: jax.Array      # [B, N]
    logprobs: jax.Array    # [B, N]
    lengths: jax.Array     # [B]
    done: jax.Array        # [B]
    stopped: jax.Array     # [B]
    logits: jax.Array | None  # [B, N, V] with return_logits


@functools.partial(jax.jit, static_argnums=(0,),
                   static_argnames=("sampling", "new_bucket", "return_logits"))
def _generate_jit(graphdef, state, layers, tokens, lengths, active, key, row_ids, stop_ids,
                  pad_id, max_new, *, sampling: SamplingConfig, new_bucket: int,
                  return_logits: bool):
    """Prefill and decode loop; shapes [Bb, Pb] (buckets), outputs [Bb, new_bucket]."""
    model = nnx.merge(graphdef, state)
    b, p = tokens.shape
    rows = jnp.arange(b)
    # Prefill always runs the scanned blocks: its matmuls are compute-bound (a weight copy per
    # layer costs little there) and the scan keeps compile time low.
    # Logits are needed at one position per row only: projecting all P positions onto the
    # vocabulary would cost more than the whole prompt pass for small models.
    slots = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), tokens.shape)
    hidden, cache = model.hidden_cached(tokens, KVCache.zeros(model.config, b, p + new_bucket),
                                        slots)
    if layers is not None:
        cache = packed_path.from_stacked(cache)
    last = hidden[rows, lengths - 1][:, None]
    logits = (model.logits(last) if layers is None
              else packed_path.logits(model.config, layers, last))[:, 0]

    def emit(loop: _Loop, logits: jax.Array) -> _Loop:
        t = loop.step
        token = sample(logits, row_step_keys(key, row_ids, t), sampling)
        logprob = (jnp.take_along_axis(logits, token[:, None], axis=-1)[:, 0]
                   - jax.nn.logsumexp(logits, axis=-1))
        live = ~loop.done
        is_stop = live & (token[:, None] == stop_ids[None, :]).any(-1)
        return _Loop(
            step=t + 1, cache=loop.cache, last=token,
            tokens=loop.tokens.at[:, t].set(jnp.where(live, token, pad_id)),
            logprobs=loop.logprobs.at[:, t].set(jnp.where(live, logprob, 0.0)),
            lengths=loop.lengths + live.astype(jnp.int32),
            done=loop.done | is_stop | (t + 1 >= max_new),
            stopped=loop.stopped | is_stop,
            logits=None if loop.logits is None else loop.logits.at[:, t].set(
                jnp.where(live[:, None], logits, 0.0)))

    def body(loop: _Loop) -> _Loop:
        slots = (lengths + loop.step - 1)[:, None]  # where the previous token goes
        if layers is None:
            logits, cache = model.forward_cached(loop.last[:, None], loop.cache, slots)
        else:
            x = model.embed(loop.last[:, None])
            x, cache = packed_path.run_layers(model.config, layers, x, slots, loop.cache)
            logits = packed_path.logits(model.config, layers, model.final_norm(x))
        return emit(loop._replace(cache=cache), logits[:, 0])

    def cond(loop: _Loop) -> jax.Array:
        return (loop.step < max_new) & ~jnp.all(loop.done)

    init = _Loop(step=jnp.int32(0), cache=cache, last=jnp.zeros(b, jnp.int32),
                 tokens=jnp.full((b, new_bucket), pad_id, jnp.int32),
                 logprobs=jnp.zeros((b, new_bucket), jnp.float32),
                 lengths=jnp.zeros(b, jnp.int32), done=~active,
                 stopped=jnp.zeros(b, bool),
                 logits=(jnp.zeros((b, new_bucket, logits.shape[-1]), jnp.float32)
                         if return_logits else None))
    final = jax.lax.while_loop(cond, body, emit(init, logits))
    return final.tokens, final.logprobs, final.lengths, final.stopped, final.logits


# -- scoring ---------------------------------------------------------------------------------
_SCORE_CHUNK = 128  # positions projected onto the vocabulary at a time


def token_logprobs(model: Transformer, tokens: Prompts, lengths: Any = None,
                   *, pad_id: int = 0) -> jax.Array:
    """out[b, t] = log p(tokens[b, t] | tokens[b, :t]) in one forward pass, float32 [B, T].

    Under the model's untempered distribution. 0 at t = 0 and at t >= lengths[b]. `tokens` is
    a list of token lists or a right-padded array [B, T] with `lengths` [B] (default T).
    The vocabulary projection runs in chunks of positions, so the [B, T, V] logits never exist.
    """
    ids, lens = _pad_rows(tokens, lengths, pad_id)
    t = ids.shape[1]
    t_bucket = bucket(t, 16)
    if t_bucket > _SCORE_CHUNK:
        t_bucket = -(-t_bucket // _SCORE_CHUNK) * _SCORE_CHUNK
    padded, padded_lens = _bucketed(ids, lens, pad_id, t_bucket)
    graphdef, state = nnx.split(model)
    out = _token_logprobs_jit(graphdef, state, padded, padded_lens)
    return out[:ids.shape[0], :t]


@functools.partial(jax.jit, static_argnums=(0,))
def _token_logprobs_jit(graphdef, state, tokens, lengths):
    model = nnx.merge(graphdef, state)
    b, t = tokens.shape
    hidden = model.hidden(tokens)[:, :-1]  # position t predicts token t + 1
    targets = tokens[:, 1:]
    chunk = min(_SCORE_CHUNK, t)
    pad = (-(t - 1)) % chunk
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    n = hidden.shape[1] // chunk
    hidden = hidden.reshape(b, n, chunk, -1).swapaxes(0, 1)
    targets = targets.reshape(b, n, chunk).swapaxes(0, 1)

    def one(args):
        h, y = args
        logits = model.logits(h)
        picked = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
        return picked - jax.nn.logsumexp(logits, axis=-1)

    lp = jax.lax.map(one, (hidden, targets)).swapaxes(0, 1).reshape(b, -1)[:, :t - 1]
    lp = jnp.concatenate([jnp.zeros((b, 1), jnp.float32), lp], axis=1)
    return jnp.where(jnp.arange(t)[None, :] < lengths[:, None], lp, 0.0)


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
