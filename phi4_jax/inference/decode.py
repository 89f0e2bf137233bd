"""KV-cache decoding: batched prefill + one jitted `lax.while_loop`.

    out = generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=32,
                   sampling=SamplingConfig(temperature=0.7, top_p=0.95),
                   key=jax.random.key(0), stop_tokens=(eos,))
    out.tokens, out.logprobs, out.lengths          # [B, 32], [B, 32], [B]
    generate(model, prefixes, n=16, ...)           # 16 samples per prefix, one prefill each
    token_logprobs(model, ids, lengths)            # log p(ids[t] | ids[:t]), one forward pass
    score(model, prompts, continuations)           # log-probs of given continuations

Log-probs. Every log-prob returned by this module is under the model's own, *untempered and
unfiltered* next-token distribution, log_softmax(logits)[token], whatever `SamplingConfig` drew
the token. That is what Pivotal Token Search and evaluation need; the sampling distribution
(tempered / truncated) is only used to draw.

Compilation. Inputs are padded to shape buckets (prompts to a power of two, prompt length and
max_new_tokens by `bucket`: 16, 24, 32, 48, 64, 96, ...), so any batch with the same padded shape
reuses the compiled program; stop tokens (up to 4 per program), pad id, the real max_new_tokens,
row ids and the key are runtime values. A new `SamplingConfig`, `n` or model structure compiles
once. The KV cache is allocated inside the jitted function and carried by the while loop, so XLA
updates it in place (nothing to donate, no host round trips, no cache copies per step). The loop
exits as soon as every row has stopped. The pieces of the program live in `loop.py`.

Shared prefixes. `n` samples per prompt run one prefill per prompt and decode its n rows from
the same prompt cache (`loop.prefill`); with packed weights the rows read the prompt's keys and
values in place, once per group (`packed`). The samples are those of repeating each prompt n
times with the same row ids: only the rounding of the shared products can differ.

Small models at small batch (`packed.supports`) decode with per-layer packed weights and an
unrolled layer loop instead of the scanned stack: inside a scan XLA:CPU copies each layer's
weight slice before using it, which nearly doubles the memory traffic of a bandwidth-bound step
(see `phi4_jax.inference.packed`). The packed copy is made once per model (and parameter
update), outside the compiled program; prefill still runs the scan.

Determinism. Row b's draw at step t uses the key fold_in(fold_in(key, row_ids[b]), t) and only
row b's logits (`sampling`). The same key, row ids, prompts and config give the same tokens. A
row's samples do not depend on the other rows of the batch or on its position in it (pass
explicit `row_ids`) as long as its logits are bitwise the same; logits computed under different
padded shapes can differ in the last bits, which can flip a draw sitting on a near tie.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from phi4_jax.inference import loop as loop_lib
from phi4_jax.inference import packed as packed_path
from phi4_jax.inference.sampling import GREEDY, SamplingConfig, row_keys
from phi4_jax.model import ModelConfig, Transformer

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
             row_ids: Any = None, n: int = 1, return_logits: bool = False) -> GenerateOutput:
    """Continues each prompt by up to `max_new_tokens` tokens with a KV cache.

    prompts: list of token-id lists (ragged), or a right-padded int array [B, P] with
        `prompt_lengths` [B] (default: all P). Every prompt needs at least one token.
    n: samples per prompt; output row i * n + j is sample j of prompt i. The prompt is
        prefilled once for its n rows (see the module docstring).
    sampling: static; greedy by default. Non-greedy sampling needs `key` (a PRNG key).
    stop_tokens: a row stops after emitting any of these (kept in its output). None means the
        model's eos_token_id if it has one; () disables stopping.
    pad_id: fills tokens after a row stops (and prompt padding); default the model's pad id
        or 0.
    row_ids: int [len(prompts) * n] identities folded into the key per output row (default
        0, 1, ...); give a row the same id (and key) to get the same samples whatever else is in
        the batch.
    return_logits: also return every step's full logits [B, max_new_tokens, V] (debugging,
        tests; costs memory).

    Returned log-probs are under the model's untempered, unfiltered distribution (see module
    docstring); see `GenerateOutput` for the fields.
    """
    cfg = model.config
    stop_tokens, pad_id = special_ids(cfg, stop_tokens, pad_id)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if n < 1:
        raise ValueError(f"n (samples per prompt) must be >= 1, got {n}")
    if not sampling.is_greedy and key is None:
        raise ValueError(f"sampling {sampling} needs an explicit PRNG `key`")
    ids, lens = _pad_rows(prompts, prompt_lengths, pad_id)
    n_rows = ids.shape[0] * n
    if int(lens.max()) + max_new_tokens > cfg.max_seq_len:
        raise ValueError(f"prompt ({int(lens.max())}) + max_new_tokens ({max_new_tokens}) "
                         f"exceeds the model's max_seq_len {cfg.max_seq_len}")
    tokens, lens = _bucketed(ids, lens, pad_id, bucket(int(lens.max()), 16))
    rows = np.arange(tokens.shape[0] * n, dtype=np.int32)
    if row_ids is not None:
        given = np.asarray(row_ids, np.int32).reshape(-1)
        if given.shape != (n_rows,):
            raise ValueError(f"row_ids needs one id per output row ({n_rows}), got "
                             f"{given.shape[0]}")
        rows[:n_rows] = given
    stops = stop_array(stop_tokens)
    key = as_key(key)
    graphdef, state = nnx.split(model)
    layers = packed_path.decode_weights(model) if packed_path.supports(model, rows.size) else None
    active = np.arange(rows.size) < n_rows
    out = _generate_jit(graphdef, state, layers, tokens, lens, active, key, rows, stops,
                        np.int32(pad_id), np.int32(max_new_tokens), sampling=sampling, group=n,
                        new_bucket=bucket(max_new_tokens, 16), return_logits=return_logits)
    return GenerateOutput(*(None if x is None else x[:n_rows, :max_new_tokens] if x.ndim >= 2
                            else x[:n_rows] for x in out))


def as_key(key: jax.Array | None) -> jax.Array:
    """A typed PRNG key: raw uint32 keys (jax.random.PRNGKey) are wrapped; None is key(0)
    (greedy decoding never reads it)."""
    if key is None:
        return jax.random.key(0)
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(key)
    return key


def stop_array(stop_tokens: Sequence[int]) -> np.ndarray:
    """Stop ids padded with -1 to a bucket of 4 (a runtime value of the compiled loop)."""
    stops = np.full(bucket(len(stop_tokens), 4), -1, np.int32)
    stops[:len(stop_tokens)] = stop_tokens
    return stops


@functools.partial(jax.jit, static_argnums=(0,),
                   static_argnames=("sampling", "group", "new_bucket", "return_logits"))
def _generate_jit(graphdef, state, layers, tokens, lengths, active, key, row_ids, stop_ids,
                  pad_id, max_new, *, sampling: SamplingConfig, group: int, new_bucket: int,
                  return_logits: bool):
    """Prefill and decode loop; prompts [Ub, Pb] (buckets), outputs [Ub * group, new_bucket]."""
    model = nnx.merge(graphdef, state)
    b = tokens.shape[0] * group
    rows = loop_lib.Rows(keys=row_keys(key, row_ids), max_new=jnp.full(b, max_new),
                         prompt_lens=lengths)
    cache, logits = loop_lib.prefill(model, layers, tokens, lengths, group, new_bucket)
    out = loop_lib.Out.zeros(b, new_bucket, pad_id, vocab=logits.shape[-1],
                             keep_logits=return_logits)
    loop, out = loop_lib.emit(loop_lib.start(cache, active), out, logits, rows, sampling,
                              stop_ids, pad_id)
    loop, out = loop_lib.run(model, layers, loop, out, rows, sampling, stop_ids, pad_id)
    return out.tokens, out.logprobs, loop.lengths, loop.stopped, out.logits


# Scoring lives in `scoring`; these names stay importable from here.
from phi4_jax.inference.scoring import ScoreOutput, score, token_logprobs  # noqa: E402

__all__ = ["GenerateOutput", "ScoreOutput", "bucket", "batch_bucket", "generate", "score",
           "special_ids", "token_logprobs"]
