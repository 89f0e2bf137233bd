"""The in-process adapter between post-training data tools and the model: `Sampler`, `ModelSampler`.

PTS, in-process refusal estimates and the in-process judge only see the `Sampler` protocol, so
the algorithms are testable with scripted samplers (models behind a server: `remote.py`).
`ModelSampler` implements it over `phi4_jax.inference.decode.generate` (KV cache, batched
across prefixes, compiled per shape bucket) and a tokenizer with `encode` / `decode` /
`render_chat` (e.g. `GGUFTokenizer`). The n rollouts of a prefix share one prefill and its KV
cache (`generate(..., n=n)`); they are the samples the unshared path (the prefix repeated n
times, the same row ids) draws, token for token.

Determinism: rollout j of prefix P is drawn with row id hash(P, j) under the sampler's seed,
so the same prefix gets the same rollouts whatever else shares its batch (decode.py's
contract: each prompt is prefilled alone and decode rows do not mix, so its logits are bitwise
the same in any batch of the packed path) -- a resumed run resamples alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@dataclasses.dataclass(frozen=True)
class Rollout:
    """Sampled continuation: token ids (stop token included), their log-probs, and whether a
    stop token ended it (False: it hit max_new_tokens)."""

    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]
    stopped: bool


@runtime_checkable
class Sampler(Protocol):
    """What the data tools need from a policy model and its tokenizer (a sampler may also
    have `settings() -> dict`, the JSON of what shapes its rollouts: `ModelSampler` has)."""

    tokenizer_name: str

    def sample(self, prefixes: Sequence[Sequence[int]], n: int) -> list[list[Rollout]]:
        """n rollouts for each prefix (token ids), deterministic per (prefix, j)."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids, special tokens (the stop token) dropped."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens added)."""
        ...

    def render(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of a chat prompt ending where the assistant's reply begins."""
        ...


def row_id(prefix: Sequence[int], j: int) -> int:
    """A stable 31-bit identity for rollout j of `prefix` (the decode loop's per-row key)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(len(prefix).to_bytes(4, "little"))
    h.update(b"".join(int(t).to_bytes(4, "little") for t in prefix))
    h.update(int(j).to_bytes(4, "little"))
    return int.from_bytes(h.digest(), "little") & 0x7FFFFFFF


class ModelSampler:
    """`Sampler` over a `Transformer` and a tokenizer, through `decode.generate`.

    sampling: a `SamplingConfig` (default temperature 1.0: PTS estimates p under the policy).
    stop_tokens: default the tokenizer's eos. batch_rows: rows per `generate` call (whole
    prefixes: max(1, batch_rows // n) prefixes of n rows, or one prefix in slices of batch_rows).
    weight_dtype: "bfloat16" samples with bfloat16-rounded weights and float32 activations (the
    CPU decode kernel streams half the bytes; `inference.dtypes.with_dtypes`; its effect on
    log-probs is in docs/serve.md); `self.model` is then that copy. None keeps the model's.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_new_tokens: int = 64,
                 sampling: Any = None, stop_tokens: Sequence[int] | None = None,
                 batch_rows: int = 64, seed: int = 0, tokenizer_name: str | None = None,
                 weight_dtype: str | None = None):
        from phi4_jax.inference.dtypes import with_dtypes
        from phi4_jax.inference.sampling import SamplingConfig

        if weight_dtype is not None:
            model = with_dtypes(model, param_dtype=weight_dtype)
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.batch_rows, self.seed = max_new_tokens, batch_rows, seed
        self.sampling = sampling if sampling is not None else SamplingConfig(temperature=1.0)
        eos = getattr(tokenizer, "eos_id", None)
        self.stop_tokens = tuple(stop_tokens) if stop_tokens is not None else (
            (eos,) if eos is not None else ())
        self.tokenizer_name = tokenizer_name or type(tokenizer).__name__
        self.weight_dtype = weight_dtype

    def settings(self) -> dict[str, Any]:
        """What shapes the rollouts besides the model and the prefixes (JSON): PTS's output
        directory records it and refuses to continue under other settings. batch_rows is left
        out: it changes how rows are batched, not what they are."""
        sampling = (dataclasses.asdict(self.sampling) if dataclasses.is_dataclass(self.sampling)
                    else repr(self.sampling))
        return {"max_new_tokens": self.max_new_tokens, "sampling": sampling,
                "stop_tokens": [int(t) for t in self.stop_tokens], "seed": self.seed,
                "weight_dtype": self.weight_dtype}

    def sample(self, prefixes: Sequence[Sequence[int]], n: int) -> list[list[Rollout]]:
        """n rollouts of each prefix: each `generate` call prefills its prefixes once and
        decodes their rollouts from that cache (`n=`), rows keyed by `row_id(prefix, j)`."""
        import jax
        import numpy as np

        from phi4_jax.inference.decode import generate

        out: list[list[Rollout]] = [[] for _ in prefixes]
        per_call = max(1, self.batch_rows // max(n, 1))
        width = min(n, self.batch_rows)  # rollouts of one prefix per call
        calls = [(list(range(i, min(i + per_call, len(prefixes)))), j0)
                 for j0 in range(0, n, width) for i in range(0, len(prefixes), per_call)]
        for idx, j0 in sorted(calls, key=lambda c: (c[0][0], c[1])):
            k = min(width, n - j0)
            chunk = [list(prefixes[i]) for i in idx]
            gen = generate(self.model, chunk, n=k, max_new_tokens=self.max_new_tokens,
                           sampling=self.sampling, key=jax.random.key(self.seed),
                           stop_tokens=self.stop_tokens,
                           row_ids=[row_id(p, j0 + j) for p in chunk for j in range(k)])
            tokens, logprobs = np.asarray(gen.tokens), np.asarray(gen.logprobs)
            lengths, stopped = np.asarray(gen.lengths), np.asarray(gen.stopped)
            for r in range(len(idx) * k):
                m = int(lengths[r])
                out[idx[r // k]].append(Rollout(tuple(int(t) for t in tokens[r, :m]),
                                                tuple(float(x) for x in logprobs[r, :m]),
                                                bool(stopped[r])))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special=True)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def render(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.encode(self.tokenizer.render_chat(list(messages), add_generation_prompt=True))
