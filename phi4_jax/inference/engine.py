"""A batch of rows decoded in segments, with per-row settings: what the server's scheduler runs.

    wave = Wave.start(model, prompts=[p0, p1], group=2, rows=[RowSpec(...), ...],
                      stop_tokens=(eos,), pad_id=0, width=8, top_n=5)
    while not wave.finished:
        seg = wave.advance(cancel=[3])   # the next <= 8 tokens of every live row
        seg.tokens[b, :seg.count[b]]     # row b's new tokens (and their log-probs)

`generate` decodes a batch in one compiled call; a `Wave` runs the same program pieces
(`loop.py`): `start` prefills and draws the first token (the time to first token), then
`advance` decodes segments of `width` steps, returning to the host in between, so the caller can
stream tokens, check stop strings and drop rows whose client went away. The loop carry (with
the KV cache) is donated from one segment to the next.

Row settings are runtime values: each row has its own key (from its request's seed and its
sample index), `SamplingConfig` (as `RowSampling` arrays) and max_new, so one compiled program
per shape serves any mix of requests. Row b continues prompt b // group; a row of the request's
j-th sample drawn with key fold_in(key(seed), j) gives the tokens `generate(prompts, n=...,
key=jax.random.key(seed))` gives its row j (the same program pieces and sampler).

Compiled programs: one start (prefill + first token; no loop body) per (prompt bucket, prompt
length bucket, group, new-token bucket, top_n) and one advance (the unrolled step) per (rows,
cache shape, top_n).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from phi4_jax.inference import loop as loop_lib
from phi4_jax.inference import packed as packed_path
from phi4_jax.inference.decode import _bucketed, _pad_rows, bucket, stop_array
from phi4_jax.inference.sampling import RowSampling, SamplingConfig
from phi4_jax.model import Transformer


@dataclasses.dataclass(frozen=True)
class RowSpec:
    """One decode row: its request's seed, its sample index (folded into the seed's key), its
    sampling settings and how many tokens it may generate."""

    seed: int
    sample: int
    sampling: SamplingConfig
    max_new: int


class Segment(NamedTuple):
    """One `advance`'s output (numpy). count [B]: new tokens of each row in this segment (its
    first count[b] columns of tokens / logprobs / top_*); lengths [B]: tokens generated so far;
    done / stopped [B]: finished / ended by a stop token. top_* are None without top_n."""

    tokens: np.ndarray
    logprobs: np.ndarray
    top_ids: np.ndarray | None
    top_logprobs: np.ndarray | None
    count: np.ndarray
    lengths: np.ndarray
    done: np.ndarray
    stopped: np.ndarray


def seed_key_data(seed: int) -> np.ndarray:
    """uint32 [2] data of jax.random.key(seed mod 2**32) (an OpenAI seed may be any integer)."""
    return np.asarray(jax.random.key_data(jax.random.key(int(seed) % (1 << 32))), np.uint32)


class Wave:
    """A batch in flight; make one with `Wave.start`, then `advance` until `finished`."""

    def __init__(self, model: Transformer, layers: Any, carry: loop_lib.Loop, out: loop_lib.Out,
                 rows: loop_lib.Rows, sampling: RowSampling, stops: np.ndarray, pad_id: int,
                 width: int, top_n: int, n_rows: int):
        self._graphdef, self._state = nnx.split(model)
        self._layers, self._carry, self._rows, self._sampling = layers, carry, rows, sampling
        self._stops, self._pad, self.width, self.top_n = stops, np.int32(pad_id), width, top_n
        self.n_rows = n_rows
        self._lengths = np.zeros(int(carry.last.shape[0]), np.int32)
        self._pending = out  # the first segment, computed by `start`
        self.finished = False

    @classmethod
    def start(cls, model: Transformer, prompts: Sequence[Sequence[int]], group: int,
              rows: Sequence[RowSpec | None], *, stop_tokens: Sequence[int], pad_id: int,
              width: int = 8, top_n: int = 0) -> Wave:
        """Prefills `prompts` (each at least one token) and decodes the first segment.

        rows: len(prompts) * group entries; row b continues prompts[b // group]; None marks an
        unused row. max_new of every row must fit the model's context after its prompt.
        """
        if len(rows) != len(prompts) * group:
            raise ValueError(f"{len(prompts)} prompts x group {group} need "
                             f"{len(prompts) * group} rows, got {len(rows)}")
        ids, lens = _pad_rows(prompts, None, pad_id)
        longest = max((r.max_new for r in rows if r is not None), default=1)
        if int(lens.max()) + longest > model.config.max_seq_len:
            raise ValueError(f"prompt ({int(lens.max())}) + max_new ({longest}) exceeds the "
                             f"model's max_seq_len {model.config.max_seq_len}")
        tokens, lens = _bucketed(ids, lens, pad_id, bucket(int(lens.max()), 16))
        b = tokens.shape[0] * group
        specs = list(rows) + [None] * (b - len(rows))
        active = np.array([r is not None for r in specs])
        keys = np.stack([seed_key_data(r.seed) if r else np.zeros(2, np.uint32) for r in specs])
        samples = np.array([r.sample if r else 0 for r in specs], np.uint32)
        max_new = np.array([r.max_new if r else 1 for r in specs], np.int32)
        sampling = RowSampling.of([r.sampling if r else SamplingConfig(0.0) for r in specs])
        layers = packed_path.decode_weights(model) if packed_path.supports(model, b) else None
        graphdef, state = nnx.split(model)
        stops = stop_array(tuple(stop_tokens))
        carry, out, rows_c = _start_jit(
            graphdef, state, layers, tokens, lens, active, keys, samples, max_new, sampling,
            stops, np.int32(pad_id), group=group, new_bucket=bucket(longest, 16), top_n=top_n)
        return cls(model, layers, carry, out, rows_c, sampling, stops, pad_id, width, top_n,
                   len(rows))

    def advance(self, cancel: Sequence[int] = ()) -> Segment:
        """The next segment: up to `width` tokens per live row (the first call: the first
        token, drawn by `start`). Rows listed in `cancel` are done before it (they stop
        producing output; the batch ends when every row is done)."""
        if self.finished:
            raise RuntimeError("the wave is finished")
        if self._pending is not None:
            out, self._pending = self._pending, None
            if len(cancel):  # cancelled after the first token: stop them from here
                self._carry = self._carry._replace(
                    done=self._carry.done | _mask(self._lengths.size, cancel))
        else:
            self._carry, out = _advance_jit(
                self._graphdef, self._state, self._layers, self._carry, self._rows,
                self._sampling, _mask(self._lengths.size, cancel), self._stops, self._pad,
                width=self.width, top_n=self.top_n)
        carry = self._carry
        lengths, done, stopped = (np.asarray(x) for x in (carry.lengths, carry.done,
                                                           carry.stopped))
        count = lengths - self._lengths
        self._lengths = lengths
        self.finished = bool(done.all())
        n = self.n_rows
        top = (None, None) if out.top_ids is None else (np.asarray(out.top_ids)[:n],
                                                        np.asarray(out.top_logprobs)[:n])
        return Segment(np.asarray(out.tokens)[:n], np.asarray(out.logprobs)[:n], *top,
                       count[:n], lengths[:n], done[:n], stopped[:n])


def _mask(b: int, rows: Sequence[int]) -> np.ndarray:
    m = np.zeros(b, bool)
    m[list(rows)] = True
    return m


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("group", "new_bucket", "top_n"))
def _start_jit(graphdef, state, layers, tokens, lengths, active, key_data, samples, max_new,
               sampling, stop_ids, pad_id, *, group: int, new_bucket: int, top_n: int):
    """Prefill and the first token: the loop body is only compiled into `_advance_jit`."""
    model = nnx.merge(graphdef, state)
    keys = jax.vmap(lambda k, j: jax.random.fold_in(jax.random.wrap_key_data(k), j))(
        key_data, samples)
    rows = loop_lib.Rows(keys=keys, max_new=max_new, prompt_lens=lengths)
    cache, logits = loop_lib.prefill(model, layers, tokens, lengths, group, new_bucket)
    out = loop_lib.Out.zeros(keys.shape[0], 1, pad_id, top_n=top_n)
    carry, out = loop_lib.emit(loop_lib.start(cache, active), out, logits, rows, sampling,
                               stop_ids, pad_id)
    return carry, out, rows


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("width", "top_n"),
                   donate_argnames=("carry",))
def _advance_jit(graphdef, state, layers, carry, rows, sampling, cancel, stop_ids, pad_id, *,
                 width: int, top_n: int):
    model = nnx.merge(graphdef, state)
    carry = carry._replace(done=carry.done | cancel)
    out = loop_lib.Out.zeros(carry.last.shape[0], width, pad_id, top_n=top_n)
    return loop_lib.run(model, layers, carry, out, rows, sampling, stop_ids, pad_id,
                        offset=carry.step)
